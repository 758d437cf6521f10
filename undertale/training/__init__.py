"""Training entry: check the config, compose data, model, loggers and the Lightning Trainer, fit.

``train`` (in :mod:`.run`) is imported on first use, so that checking a command
line (:mod:`.checks`, :mod:`.entry`) does not wait for torch and Lightning.
"""

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from undertale.training.run import train

        return train
    raise AttributeError(name)
