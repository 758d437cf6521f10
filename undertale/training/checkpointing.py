"""Checkpoints you can trust: atomic writes, a ``last.ckpt`` on a fixed cadence and at the end, integrity checks."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any, Optional

import lightning
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from undertale.runtime.errors import OutputError
from undertale.runtime.outputs import (NO_ROOM, causes, free_bytes, no_room_message, remove_stale_temporaries,
                                       temporary_path, write_failure)

# torch's zip writer reports a failed write as a RuntimeError of its own ("[enforce fail at inline_container.cc...")
TORCH_WRITER = ("inline_container", "PytorchStreamWriter")
# a failed torch write on a filesystem with less than this left is taken for a full disk
NEARLY_FULL = 1 << 20


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over the target.

    A write killed halfway leaves the previous checkpoint of that name untouched, and its temporary file
    (``.<name>.<pid>@<host>.tmp``) is removed by the next save in that folder once its writer is gone. A write
    that fails for a full disk or a refused write is an :class:`~undertale.runtime.errors.OutputError` naming the
    checkpoint (one line, exit code 2), whether the failure comes as an ``OSError`` or as torch's own error.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale, size in remove_stale_temporaries(path.parent):
            print(f"removed {stale} ({size:,} bytes), left by a checkpoint write that was stopped", file=sys.stderr)
        temporary = temporary_path(path)
        try:
            with open(temporary, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except Exception as error:
            failure = checkpoint_write_failure(error, path)  # before the temporary file frees its space
            if failure is not None:
                raise failure from error
            raise
        finally:
            temporary.unlink(missing_ok=True)


def checkpoint_write_failure(error: BaseException, path: Path) -> Optional[OutputError]:
    """The one-line error of a checkpoint write that failed for want of space or permission, or None.

    A full disk comes as an ``OSError`` (ENOSPC, EDQUOT, EFBIG) or, from torch's zip writer, as a ``RuntimeError``
    raised while handling one; a torch write failure with under :data:`NEARLY_FULL` bytes left is one too.
    """
    chain = list(causes(error))
    number = next((item.errno for item in chain if isinstance(item, OSError) and item.errno in NO_ROOM), None)
    if number is None and any(isinstance(item, RuntimeError) and any(mark in str(item) for mark in TORCH_WRITER)
                              for item in chain):
        free = free_bytes(path.parent)
        number = errno.ENOSPC if free is not None and free < NEARLY_FULL else None
    if number is not None:
        return OutputError(no_room_message(number, path, "checkpoint"))
    return write_failure(error, path)


class RunCheckpoint(ModelCheckpoint):
    """Best checkpoints by the monitored metric, plus ``last.ckpt`` every ``every_n_train_steps`` and at the end.

    ``last.ckpt`` is written whether or not validation improved, always under
    that one name (no ``last-v1``), and never from weights that are not finite
    (a diverged model is not saved; the previous checkpoint stays).

    Arguments:
        dirpath: the folder of the checkpoints (the training entry gives the run's ``checkpoints/``).
        every_n_train_steps: steps between writes of ``last.ckpt`` (0: only at the end and on preemption).
        **kwargs: :class:`~lightning.pytorch.callbacks.ModelCheckpoint` arguments for the best
            checkpoints (``monitor``, ``mode``, ``save_top_k``, ``filename``, ...).
    """

    def __init__(self, dirpath: Optional[str] = None, every_n_train_steps: int = 0, **kwargs: Any):
        kwargs.pop("save_last", None)
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(dirpath=dirpath, save_last=False, **kwargs)
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be >= 0, got {every_n_train_steps}")
        self.last_every_n_train_steps = every_n_train_steps
        self._last_saved_step: Optional[int] = None

    @property
    def last_path(self) -> Path:
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def write_last(self, trainer: lightning.Trainer) -> bool:
        """Write ``last.ckpt`` now (all ranks must call); False when the weights are not finite."""
        if self._last_saved_step == trainer.global_step and self.last_path.is_file():
            return True
        if not weights_are_finite(trainer.lightning_module):
            rank_zero_warn(f"not saving {self.last_path}: the model's weights are not finite")
            return False
        self.last_model_path = str(self.last_path)
        trainer.save_checkpoint(self.last_path, self.save_weights_only)
        self._last_saved_step = trainer.global_step
        return True

    def on_train_batch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        every = self.last_every_n_train_steps
        if every and trainer.global_step % every == 0 and not trainer.sanity_checking:
            self.write_last(trainer)

    def on_validation_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        # last.ckpt of this step was written before this validation (on_train_batch_end runs first), so it lacks
        # the best checkpoint just saved: the end of training must write it again, or a resumed run restores a
        # stale best_k_models (the newest best-step*.ckpt is never tracked nor deleted).
        if self._last_saved_step == trainer.global_step:
            self._last_saved_step = None

    def on_train_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        self.write_last(trainer)

    def _save_checkpoint(self, trainer: lightning.Trainer, filepath: str) -> None:
        if not weights_are_finite(trainer.lightning_module):
            rank_zero_warn(f"not saving {filepath}: the model's weights are not finite")
            return
        super()._save_checkpoint(trainer, filepath)


def weights_are_finite(module: torch.nn.Module) -> bool:
    """True when every parameter is finite (one device sync)."""
    checks = [torch.isfinite(parameter).all() for parameter in module.parameters()]
    return bool(torch.stack(checks).all()) if checks else True
