"""Evaluate a trained model.

    python evaluate.py run=outputs/train/runs/<time>                       # the run's validation split
    python evaluate.py run=<dir> batches=50 split=train                    # the first 50 batches of its train split
    python evaluate.py run=<dir> data=binaries data.paths=[/usr/bin/true]  # held-out binaries, the run's tokenizer
    python evaluate.py run=<dir> task=similarity                           # the similarity benchmark, when installed

Prints a table (loss, accuracy, perplexity overall and per target class, beside frequency baselines),
writes <run dir>/evaluation.json and logs a W&B run (job type evaluate). See docs/evaluation.md.
Exit codes: 0 done, 2 a mistake in the command or a run that cannot be evaluated (one line on stderr).
"""

from undertale.commands.evaluate import main

if __name__ == "__main__":
    main()
