"""The layout of a run directory: the one place that knows where a run keeps each file.

A run directory (``outputs/<task>/runs/<time>``, or ``.../multiruns/<time>/<job>``
under ``-m``) holds::

    config.yaml         the composed config, resolved
    overrides.yaml      the command-line overrides
    tokenizer.json      the tokenizer the run used
    environment.json    git commit, package versions, hardware
    metrics.json        final metrics and the run's status
    evaluation.json     python evaluate.py: per-class masked-LM evaluation
    similarity.json     python evaluate.py task=similarity: function search
    wandb.json          the W&B run's id, name and group (to continue the same run)
    checkpoints/        last.ckpt (every N steps and at the end), best-step*.ckpt
    wandb/              the offline W&B run(s)

Every command that reads a trained model (``infer.py``, ``evaluate.py``, ``embed.py``,
``FunctionEncoder.from_run``, ``pretrained=`` of a fine-tuning run) finds its checkpoint with
:meth:`RunDirectory.checkpoint`, one rule for all: ``last.ckpt`` when intact, else the newest intact
checkpoint, the skipped ones named in one warning line; a run without an intact checkpoint is a
:class:`~undertale.runtime.errors.UsageError` naming the directory. :meth:`RunDirectory.load` loads it into
the module class the run trained (``model._target_`` of its ``config.yaml``) or one the caller passes.
Kept free of torch at module level: torch loads inside :meth:`RunDirectory.read` and :meth:`RunDirectory.load`.
"""

from __future__ import annotations

import json
import os
import zipfile
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from undertale.runtime.errors import UsageError, first_line


CHECKPOINT_SUFFIX = ".ckpt"
# the module class of a run whose config.yaml names none (a string: this layer imports no model)
DEFAULT_MODULE = "undertale.models.maskedlm.InstructionTraceTransformerEncoderForMaskedLM"
A_RUN_DIRECTORY = "pass the directory train.py printed as 'run directory:'"


def warn(message: str) -> None:
    """A ``warning:`` line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class LoadedModel:
    """A module loaded from a run's checkpoint: the module, the checkpoint file and the step it was saved at."""

    module: Any
    checkpoint: Path
    step: int


@dataclass(frozen=True)
class RunDirectory:
    """Paths inside one run directory.

    Arguments:
        path: the run directory.
    """

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path).expanduser())

    @classmethod
    def of_checkpoint(cls, checkpoint: str | os.PathLike) -> "RunDirectory":
        """The run directory a checkpoint file belongs to (``<run>/checkpoints/<file>``)."""
        return cls(Path(checkpoint).expanduser().resolve().parent.parent)

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def overrides(self) -> Path:
        return self.path / "overrides.yaml"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def environment(self) -> Path:
        return self.path / "environment.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def wandb_file(self) -> Path:
        return self.path / "wandb.json"

    @property
    def evaluation(self) -> Path:
        return self.path / "evaluation.json"

    @property
    def similarity(self) -> Path:
        return self.path / "similarity.json"

    @property
    def wandb_directory(self) -> Path:
        return self.path / "wandb"

    @property
    def csv_metrics(self) -> Path:
        return self.path / "csv" / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / f"last{CHECKPOINT_SUFFIX}"

    def wandb_run(self) -> dict:
        """The W&B run this run logged to: ``id``, ``name``, ``group`` (empty when it had none)."""
        try:
            return json.loads(self.wandb_file.read_text())
        except (OSError, ValueError):
            return {}

    def offline_runs(self) -> list[Path]:
        """The run's offline W&B runs, oldest first (a resumed run has one per session)."""
        return sorted(path for path in self.wandb_directory.glob("offline-run-*") if path.is_dir() and not path.is_symlink())

    def has_checkpoint(self) -> bool:
        return bool(self.checkpoint_files())

    def checkpoint_files(self) -> list[Path]:
        """Every checkpoint of the run, newest (by modification time) first."""
        if not self.checkpoints.is_dir():
            return []
        # a sharded (FSDP) checkpoint is a directory of shards
        files = [path for path in self.checkpoints.glob(f"*{CHECKPOINT_SUFFIX}") if path.is_file() or path.is_dir()]
        return sorted(files, key=lambda path: path.stat().st_mtime_ns, reverse=True)

    def __str__(self) -> str:
        return str(self.path)

    @classmethod
    def locate(cls, path: str | os.PathLike, warn: Callable[[str], None] = warn) -> tuple["RunDirectory", Path]:
        """The run and the checkpoint that ``path`` names: a run directory (:meth:`checkpoint` chooses) or a
        checkpoint file, which is used as it is once verified (its run is the directory above ``checkpoints/``).

        Raises:
            UsageError: for a path that does not exist, a checkpoint that is not whole, a run without an intact one.
        """
        given = Path(path).expanduser()
        if given.suffix == CHECKPOINT_SUFFIX and not (given / "checkpoints").is_dir():
            problem = checkpoint_problem(given)
            if problem is not None:
                raise UsageError(f"checkpoint {given} {problem}")
            return cls.of_checkpoint(given), given
        run = cls(given)
        return run, run.checkpoint(warn)

    def checkpoint(self, warn: Callable[[str], None] = warn) -> Path:
        """The checkpoint every command loads: ``last.ckpt`` when intact, else the newest intact checkpoint.

        Only each file's zip directory is read (:func:`checkpoint_problem`), so this costs the same for any size.
        Checkpoints skipped on the way are named, with why, in one line passed to ``warn``.

        Raises:
            UsageError: naming the directory, when it does not exist or holds no intact checkpoint.
        """
        if not self.path.is_dir():
            raise UsageError(f"run directory {self} does not exist; {A_RUN_DIRECTORY}")
        checkpoint, skipped = self._choose()
        named = "; ".join(f"{path.name} {problem}" for path, problem in skipped)
        if checkpoint is None:
            found = f"skipped {named}" if skipped else f"none in {self.checkpoints}; no checkpoint saved yet?"
            raise UsageError(f"run directory {self} has no intact checkpoint ({found}); train longer or resume "
                             "the run first")
        if skipped:
            warn(f"run directory {self}: skipped {named}; using {checkpoint.name}")
        return checkpoint

    def module_class(self) -> type:
        """The LightningModule class the run trained: ``model._target_`` of its ``config.yaml`` (masked-LM when
        the run has no config or its model names no class).

        Raises:
            UsageError: when the config cannot be read or names a class that does not exist.
        """
        from hydra.utils import get_class
        from omegaconf import OmegaConf

        target = DEFAULT_MODULE
        if self.config.is_file():
            try:
                model = OmegaConf.load(self.config).get("model")
            except Exception as error:  # OmegaConf and yaml raise several kinds for a broken file
                raise UsageError(f"cannot read {self.config}: {first_line(error)}") from None
            target = str(model.get("_target_") or DEFAULT_MODULE) if hasattr(model, "get") else DEFAULT_MODULE
        try:
            return get_class(target)
        except Exception as error:  # hydra raises ImportError or ValueError
            raise UsageError(f"{self.config}: model._target_ {target} is not a class ({first_line(error)})") from None

    def read(self, checkpoint: Optional[Path] = None) -> tuple[dict, Path]:
        """A checkpoint's saved dict, memory-mapped on the CPU (tensors are read when used), and its path.

        Arguments:
            checkpoint: the file to read; None: :meth:`checkpoint` chooses.

        Raises:
            UsageError: when the file is not a checkpoint that ``torch.save`` wrote.
        """
        import torch

        checkpoint = self.checkpoint() if checkpoint is None else Path(checkpoint)
        try:
            saved = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True)
        except Exception as error:  # torch raises many kinds for a file that is not a checkpoint
            raise UsageError(f"cannot read checkpoint {checkpoint}: {first_line(error)}") from None
        if not isinstance(saved, dict):
            raise UsageError(f"{checkpoint} is not a checkpoint of train.py (it holds no dict)")
        return saved, checkpoint

    def load(self, module_class: Optional[type] = None, checkpoint: Optional[Path] = None,
             map_location: Any = "cpu") -> LoadedModel:
        """The module of a checkpoint, in evaluation mode on ``map_location``.

        Arguments:
            module_class: the LightningModule class; None: the run's own (:meth:`module_class`).
            checkpoint: the file; None: :meth:`checkpoint` chooses.

        Raises:
            UsageError: when the checkpoint is not one of ``module_class``.
        """
        saved, checkpoint = self.read(checkpoint)
        module_class = module_class or self.module_class()
        try:
            module = module_class(**saved["hyper_parameters"])
            module.load_state_dict(saved["state_dict"])
        except Exception as error:  # the model raises many kinds for a checkpoint of something else
            raise UsageError(f"cannot load the model from {checkpoint}: {first_line(error)}") from None
        return LoadedModel(module.to(map_location).eval(), checkpoint, int(saved.get("global_step", 0)))

    def intact_checkpoint(self) -> tuple[Optional[Path], list[str]]:
        """The checkpoint to resume from: ``last.ckpt`` if whole, else the newest whole one.

        Returns:
            The checkpoint (None when no whole one exists) and one line per corrupt file skipped.
        """
        checkpoint, skipped = self._choose()
        return checkpoint, [f"checkpoint {path} {problem}" for path, problem in skipped]

    def _choose(self) -> tuple[Optional[Path], list[tuple[Path, str]]]:
        """``last.ckpt`` if whole, else the newest whole checkpoint; and each file skipped with its problem."""
        candidates = self.checkpoint_files()
        if self.last_checkpoint in candidates:  # prefer last.ckpt, then the others newest first
            candidates.remove(self.last_checkpoint)
            candidates.insert(0, self.last_checkpoint)
        skipped = []
        for candidate in candidates:
            problem = checkpoint_problem(candidate)
            if problem is None:
                return candidate, skipped
            skipped.append((candidate, problem))
        return None, skipped


def checkpoint_problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be a usable checkpoint, or None when it is whole.

    A torch checkpoint is a zip archive whose directory sits at its end: a
    truncated or cut-short file has no readable directory, or members that reach
    past the file's end. Only the directory is read (not the tensors), so the
    check costs the same for a 10 MB and a 10 GB checkpoint.
    """
    if path.is_dir():
        return None if (path / ".metadata").is_file() else "is a sharded checkpoint without its .metadata"
    if not path.is_file():
        return "does not exist"
    size = path.stat().st_size
    if size == 0:
        return "is empty"
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"is not a whole checkpoint ({error})"
    if not members:
        return "is an empty archive"
    short = next((member for member in members if member.header_offset + member.compress_size > size), None)
    if short is not None:
        return f"is cut short (member {short.filename} ends past the end of the file)"
    return None
