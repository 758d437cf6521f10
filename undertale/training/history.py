"""What a resumed run keeps of its earlier sessions: every logger's history and the latest value of each metric.

A run resumed from a checkpoint saved after step ``G`` trains step ``G`` next, and every logger continues
the history it started instead of beginning a new one:

- CSV (``csv/metrics.csv``): the rows before step ``G`` are kept and the new ones appended (Lightning's
  ``CSVLogger`` deletes the file when it starts). Rows that a killed session logged after its checkpoint
  are dropped: those steps are trained again.
- TensorBoard: the events at step ``G`` and after are purged (``SummaryWriter(purge_step=G)``); the new
  event file sits next to the earlier ones, so TensorBoard shows one history.
- W&B: the same run id (``wandb.json``). Online, W&B continues the run's step counter itself; offline it
  cannot, so each session's ``offline-run-*`` starts its ``_step`` after the last one of the sessions before
  it, and ``wandb sync`` of those folders in order appends to one history.
- ``metrics.json``: the latest value of every ``train/*`` and ``val/*`` metric over all sessions, so a
  session that ends between validations still reports the last validation.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from undertale.training.wandb_offline import read_offline_run

METRIC_PREFIXES = ("train/", "val/")
STEP = "step"  # the step column of Lightning's metrics.csv
WANDB_STEP = "_step"  # W&B's own row counter


def checkpoint_step(checkpoint: str | os.PathLike) -> int:
    """The number of optimizer steps a checkpoint was saved after (``global_step``), read without loading its
    tensors (memory-mapped; a sharded checkpoint's ``meta.pt``)."""
    path = Path(checkpoint)
    if path.is_dir():  # FSDP's sharded checkpoint: the non-tensor state sits in meta.pt
        return int(torch.load(path / "meta.pt", map_location="cpu", weights_only=False)["global_step"])
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"])
    except RuntimeError:  # a file in torch's legacy (non-zip) format cannot be memory-mapped
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def csv_rows_before(path: Path, step: int) -> list[dict[str, str]]:
    """The rows of a Lightning ``metrics.csv`` logged before ``step`` (none when there is no file).

    Each row has every column of the file (empty where the row had no value), so writing them back keeps
    the header.
    """
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    return [row for row in rows if _number(row.get(STEP)) < step]


def _number(value: Optional[str]) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")  # a row without a step cannot be placed: dropped


def next_wandb_step(offline_runs: Iterable[Path], run_id: str) -> int:
    """The ``_step`` the next session of W&B run ``run_id`` starts at: one past the last row of its earlier
    offline sessions (``offline-run-<time>-<id>`` folders; 0 when there are none)."""
    last = -1
    for directory in offline_runs:
        if not directory.name.endswith(f"-{run_id}") or not any(directory.glob("run-*.wandb")):
            continue
        try:
            run = read_offline_run(directory)
        except ValueError:  # not a W&B run file (e.g. an empty one left by a kill): nothing to continue
            continue
        steps = [row[WANDB_STEP] for row in run.history if isinstance(row.get(WANDB_STEP), int)]
        last = max([last, *steps])
    return last + 1


def latest_metrics(earlier: Path, current: dict[str, Any], resumed_at: int) -> dict[str, Any]:
    """``current`` metrics over those of ``metrics.json`` written by the session before (``earlier``): each
    ``train/*`` and ``val/*`` metric at its latest value.

    The earlier values count only when that session ended at or before ``resumed_at`` (the step the resumed
    checkpoint was saved after): a session that ran past it (resumed from an older checkpoint) measured a
    history that this one replaces.
    """
    try:
        before = json.loads(earlier.read_text())
    except (OSError, ValueError):
        return dict(current)
    if not isinstance(before, dict) or not isinstance(before.get("global_step"), int) or before["global_step"] > resumed_at:
        return dict(current)
    kept = {key: value for key, value in before.items() if key.startswith(METRIC_PREFIXES) and value is not None}
    return kept | current
