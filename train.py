"""Train a model on instruction traces.

    python train.py                                   # quickstart: tiny model, this machine's binaries
    python train.py model=large trainer=ddp           # BERT-large shape on all GPUs of the node
    python train.py -m optimizer.lr=1e-4,3e-4 masking.probability=0.1,0.2   # a sweep, one W&B run per job
    python train.py experiment=pretrain_medium        # a reproducible experiment from experiments/
    python train.py resume=outputs/train/runs/<time>  # continue a run (resume=latest: the newest one)
    python train.py --help                            # the config groups and their options

Exit codes: 0 finished; 1 failed (a bug), diverged, or a corpus-build worker lost; 2 a config, resume, input
or output mistake, a full disk, an unreadable data shard or a killed loader worker (one line on stderr);
128 + the signal number when stopped by SIGTERM (143), SIGUSR1 (138) or Ctrl-C (130). README, "Unattended runs".
"""

from undertale.commands.train import main

if __name__ == "__main__":
    main()
