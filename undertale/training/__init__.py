"""Training entry: compose data, model, logger and Lightning Trainer from a Hydra config."""

from .run import train

__all__ = ["train"]
