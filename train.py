"""Train a masked-language model on instruction traces.

    python train.py                                   # quickstart: tiny model, this machine's binaries
    python train.py model=large trainer=ddp           # BERT-large shape on all GPUs of the node
    python train.py -m optimizer.lr=1e-4,3e-4 masking.probability=0.1,0.2   # a sweep, one W&B run per job
    python train.py experiment=pretrain_medium        # a reproducible experiment from experiments/
    python train.py resume=outputs/train/runs/<time>  # continue a run
    python train.py --help                            # the config groups and their options
"""

import hydra
from omegaconf import DictConfig

from undertale.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    metrics = train(cfg)
    return metrics.get("val/accuracy", float("nan"))  # for Hydra sweepers that optimise


if __name__ == "__main__":
    main()
