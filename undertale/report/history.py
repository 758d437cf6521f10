"""A run's logged metrics over steps, from its offline W&B runs or, without them, ``csv/metrics.csv``."""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from typing import Optional

from undertale.runtime.runs import RunDirectory

STEP = "trainer/global_step"


@dataclass
class History:
    """Each metric as ``(step, value)`` pairs in step order; ``source`` names where they came from."""

    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        return [value for _, value in self.series.get(metric, [])]

    def last(self, metric: str) -> Optional[float]:
        values = self.values(metric)
        return values[-1] if values else None

    def best(self, metric: str, mode: str) -> Optional[float]:
        """The largest (``mode="max"``) or smallest (``"min"``) logged value, None when never logged."""
        values = self.values(metric)
        return (max if mode == "max" else min)(values) if values else None

    def steady(self, metric: str) -> Optional[float]:
        """The median logged value, the first interval (warm-up) left out when there are 3 or more."""
        values = self.values(metric)
        if len(values) >= 3:
            values = values[1:]
        return statistics.median(values) if values else None


def _number(value: object) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _add(merged: dict[str, dict[int, float]], step: object, row: dict) -> None:
    if _number(step) is None:
        return
    for key, value in row.items():
        number = _number(value)
        if number is not None and not key.startswith("_") and key not in (STEP, "step", "epoch"):
            merged.setdefault(key, {})[int(step)] = number  # a later session wins at a step logged twice


def _from_wandb(run: RunDirectory, history: History) -> dict[str, dict[int, float]]:
    from undertale.training.wandb_offline import read_offline_run

    merged: dict[str, dict[int, float]] = {}
    for directory in run.offline_runs():
        try:
            rows = read_offline_run(directory).history
        except (OSError, ValueError) as error:
            history.warnings.append(f"{directory}: unreadable W&B run ({error})")
            continue
        for row in rows:
            _add(merged, row.get(STEP), row)
    return merged


def _from_csv(run: RunDirectory, history: History) -> dict[str, dict[int, float]]:
    merged: dict[str, dict[int, float]] = {}
    path = run.csv_metrics
    try:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                values = {key: _parse(value) for key, value in row.items() if key}
                _add(merged, values.get("step"), values)
    except (OSError, csv.Error) as error:
        history.warnings.append(f"{path}: unreadable ({error})")
    return merged


def _parse(text: Optional[str]) -> Optional[float]:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def read_history(run: RunDirectory) -> History:
    """The metrics ``run`` logged: its offline W&B runs (all sessions of a resumed run), else its CSV log.

    Returns:
        A :class:`History`, empty when the run logged nothing readable; unreadable files are named in
        ``warnings``.
    """
    history = History()
    merged = _from_wandb(run, history) if run.offline_runs() else {}
    history.source = "wandb" if merged else ""
    if not merged and run.csv_metrics.is_file():
        merged, history.source = _from_csv(run, history), "csv"
    history.series = {key: sorted(points.items()) for key, points in merged.items()}
    return history
