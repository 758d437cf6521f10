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
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


CHECKPOINT_SUFFIX = ".ckpt"


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

    def intact_checkpoint(self) -> tuple[Optional[Path], list[str]]:
        """The checkpoint to resume from: ``last.ckpt`` if whole, else the newest whole one.

        Returns:
            The checkpoint (None when no whole one exists) and one line per corrupt file skipped.
        """
        candidates = self.checkpoint_files()
        if self.last_checkpoint in candidates:  # prefer last.ckpt, then the others newest first
            candidates.remove(self.last_checkpoint)
            candidates.insert(0, self.last_checkpoint)
        skipped = []
        for candidate in candidates:
            problem = checkpoint_problem(candidate)
            if problem is None:
                return candidate, skipped
            skipped.append(f"checkpoint {candidate} {problem}")
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
