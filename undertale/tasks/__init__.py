"""Tasks: what ``train.py`` trains. ``task=<name>`` picks one; each is a :class:`Task`.

A task turns the composed config into a LightningModule and a data module
(:meth:`Task.build`), checks its own settings before any work
(:meth:`Task.check`), names the validation metric that checkpoints, early
stopping and sweeps follow (``monitor``, ``mode``), and adds its own lines
to the run's summary (:meth:`Task.summarise`). ``train.py`` does the rest the
same way for every task: trainer, loggers, callbacks, checkpoints, resume,
compile, precision. ``docs/tasks.md`` shows how to add one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

if TYPE_CHECKING:
    import lightning
    from omegaconf import DictConfig


@dataclass
class TaskParts:
    """What a task builds for one run.

    Attributes:
        module: the LightningModule to fit (its encoder, if any, is at ``module.encoder``: compile wraps that).
        datamodule: train and validation loaders.
        tokenizer: the ``tokenizer.json`` the run is trained with (copied into the run directory).
        vocab_size: the tokenizer's vocabulary size (logged with the config).
        flops_per_token: training FLOPs per token of the module (for ``train/mfu``).
        callbacks: the task's own callbacks, added to the ``callbacks`` group's.
        description: one line saying what data the run trains on.
    """

    module: "lightning.LightningModule"
    datamodule: "lightning.LightningDataModule"
    tokenizer: Path
    vocab_size: int
    flops_per_token: Optional[float] = None
    callbacks: Sequence[Any] = field(default_factory=list)
    description: str = ""


class Task:
    """The base of every task; a subclass overrides :meth:`build` (and, when it needs to, the others).

    Arguments:
        monitor: the validation metric checkpoints (``best-step*.ckpt``), early stopping and sweeps follow.
        mode: ``max`` or ``min``: which way ``monitor`` improves.
    """

    def __init__(self, monitor: str, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be max or min, got {mode!r}")
        self.monitor = monitor
        self.mode = mode

    def check(self, cfg: "DictConfig", overrides: Sequence[str] = ()) -> None:
        """Check the task's own settings before any work; raise ValueError with one line naming the key."""

    def resolve(self, cfg: "DictConfig", overrides: Sequence[str] = ()) -> "DictConfig":
        """The config the run really uses (e.g. sizes taken from a pretrained run); written to ``config.yaml``."""
        return cfg

    def build(self, cfg: "DictConfig", progress: bool = True) -> TaskParts:
        """Prepare the data and build module and data module (``progress``: this process shows progress)."""
        raise NotImplementedError

    def summarise(self, trainer: "lightning.Trainer", parts: TaskParts, metrics: dict) -> tuple[dict, Optional[str]]:
        """Extra entries for ``metrics.json`` and a line to print at the end (None: nothing)."""
        return {}, None
