"""One row per job: swept values, final and best validation metrics, evaluation and similarity headlines,
throughput, steps, wall time, world size and status; sorted by the objective."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from undertale.report.jobs import FAILED, FINISHED, Job
from undertale.report.values import swept_values
from undertale.report.versions import code_version

JOB, STATUS, ERROR, TOKENS, MFU, STEPS, WALL, WORLD = (
    "job", "status", "error", "tokens/s", "MFU", "steps", "wall time (s)", "world size")
PATH, COMMAND, CODE = "path", "command", "code"
VALIDATION = ("val/accuracy", "val/loss", "val/perplexity")
WITH_BEST = ("val/accuracy", "val/loss")
HEADLINE_COMPARISON = "O0-O3"
HEADLINE_SYSTEM = "model"


def direction(metric: str) -> str:
    """``min`` for losses and perplexities, ``max`` for everything else (accuracy, MRR, throughput)."""
    return "min" if any(word in metric for word in ("loss", "perplexity")) else "max"


def best_column(metric: str) -> str:
    return f"best {metric}"


@dataclass
class Table:
    """The results table: ``columns`` in order (``csv_columns`` adds path, command and code version)."""

    columns: list[str]
    rows: list[dict[str, Any]]
    swept: list[str]
    objective: str
    mode: str
    jobs: list[Job] = field(default_factory=list)  # in the order of ``rows``

    @property
    def csv_columns(self) -> list[str]:
        return self.columns + [PATH, COMMAND, CODE]

    def objective_value(self, row: dict[str, Any]) -> Optional[float]:
        """The row's best value of the objective (its final one where no history was logged)."""
        value = row.get(best_column(self.objective), row.get(self.objective))
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def best(self) -> Optional[int]:
        """The index of the best finished row, None when no finished job has the objective."""
        return next((index for index, row in enumerate(self.rows)
                     if row[STATUS] == FINISHED and self.objective_value(row) is not None), None)


def _first(*values: Optional[float]) -> Optional[float]:
    return next((value for value in values if value is not None), None)


def _metric(job: Job, metric: str) -> Optional[float]:
    value = job.metrics.get(metric)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return job.history.last(metric)


def _validation(job: Job, objective: str, mode: str) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    extra = [] if objective in VALIDATION or not objective.startswith(("val/", "train/")) else [objective]
    for metric in (*VALIDATION, *extra):
        cells[metric] = _metric(job, metric)
        if metric in WITH_BEST or metric == objective:
            chosen = mode if metric == objective else direction(metric)
            cells[best_column(metric)] = _first(job.history.best(metric, chosen), cells[metric])
    return cells


def _evaluation(job: Job) -> dict[str, Any]:
    if not job.evaluation:
        return {}
    cells = {"eval/accuracy": (job.evaluation.get("overall") or {}).get("accuracy")}
    for name, entry in (job.evaluation.get("classes") or {}).items():
        if isinstance(entry, dict) and entry.get("accuracy") is not None:
            cells[f"eval/accuracy/{name}"] = entry["accuracy"]
    return cells


def _similarity(job: Job) -> dict[str, Any]:
    """MRR and Recall@1 of the model at the smallest pool, on the O0-O3 comparisons (else the first one)."""
    comparisons = (job.similarity or {}).get("comparisons") or {}
    if not comparisons:
        return {}
    pools = sorted(int(size) for size in (job.similarity.get("pool_sizes") or [32]))
    pool = str(pools[0])
    chosen = [name for name in comparisons if name.startswith(HEADLINE_COMPARISON)] or list(comparisons)[:1]
    cells = {}
    for name in chosen:
        scores = ((comparisons[name].get("systems") or {}).get(HEADLINE_SYSTEM) or {}).get(pool) or {}
        cells[f"MRR@{pool} {name}"] = scores.get("mrr")
        cells[f"R@1@{pool} {name}"] = scores.get("recall@1")
    return cells


def _row(job: Job, swept: dict[str, Any], objective: str, mode: str) -> dict[str, Any]:
    steps = job.metrics.get("global_step")
    if steps is None and job.history.series:
        steps = max(step for points in job.history.series.values() for step, _ in points)
    row = {JOB: job.label, **swept, **_validation(job, objective, mode), **_evaluation(job), **_similarity(job)}
    row |= {
        TOKENS: _first(job.history.steady("train/tokens_per_sec"), _metric(job, "train/tokens_per_sec")),
        MFU: _first(job.history.steady("train/mfu"), _metric(job, "train/mfu")),
        STEPS: steps, WALL: job.metrics.get("seconds"), WORLD: job.world_size,
        STATUS: job.status, ERROR: job.error or None,
        PATH: str(job.run.path), COMMAND: job.command(), CODE: code_version(job),
    }
    return row


def shown(value: Any) -> str:
    """A swept value as text: ``0.001``, ``[a,b]`` (a list as an override writes it), ``cpu``."""
    if isinstance(value, list):
        return "[" + ",".join(shown(item) for item in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def build_table(jobs: list[Job], objective: str, mode: str) -> Table:
    """The results table of ``jobs``, best first by ``objective`` (``mode``: max or min); failed jobs last.

    Columns without a value in any row are left out (no MFU on CPUs, no evaluation columns without
    ``evaluation.json``, no error column when nothing failed).
    """
    keys, values = swept_values(jobs)
    values = [{key: shown(value) if isinstance(value, list) else value for key, value in swept.items()}
              for swept in values]
    rows = [_row(job, swept, objective, mode) for job, swept in zip(jobs, values)]
    groups: list[list[str]] = [[JOB], keys, [], [], [], [TOKENS, MFU, STEPS, WALL, WORLD, STATUS, ERROR]]
    for row in rows:  # validation, evaluation and similarity columns, each group in first-seen order
        for key in row:
            group = 2 if key.startswith(("val/", "best ", "train/")) else 3 if key.startswith("eval/") else \
                4 if key.startswith(("MRR@", "R@1@")) else None
            if group is not None and key not in groups[group] and key not in keys:
                groups[group].append(key)
    order = [key for group in groups for key in group]
    columns = [key for key in order if key in keys or key == JOB or any(row.get(key) is not None for row in rows)]
    table = Table(columns, rows, keys, objective, mode)
    sign = -1 if mode == "max" else 1

    def rank(index: int) -> tuple:
        value = table.objective_value(rows[index])
        return (rows[index][STATUS] == FAILED, value is None, sign * value if value is not None else 0.0, index)

    ranked = sorted(range(len(rows)), key=rank)
    table.rows, table.jobs = [rows[i] for i in ranked], [jobs[i] for i in ranked]
    return table


def cell(column: str, value: Any, formats: Optional[dict[str, str]] = None) -> str:
    """A value as the markdown table shows it (``formats``: a format spec by column, e.g. ``".2f"``)."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).replace("|", "\\|").replace("\n", " ")
    if formats and column in formats:
        return format(value, formats[column])
    if column == MFU:
        return f"{value:.1%}"
    if column == TOKENS:
        return f"{value:,.0f}"
    if column == STEPS:
        return f"{value:,}"
    if column == WORLD or isinstance(value, int):
        return str(value)
    if column == WALL:
        return f"{value:,.1f}"
    if "perplexity" in column:
        return f"{value:,.2f}"
    if column.startswith(("val/", "best ", "eval/", "MRR@", "R@1@", "train/")):
        return f"{value:.4f}"
    return f"{value:g}"


def markdown(columns: list[str], rows: list[dict[str, Any]], formats: Optional[dict[str, str]] = None) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (see :func:`cell` for ``formats``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(column, row.get(column), formats) for column in columns) + " |"
              for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """``rows`` as CSV with a header; missing values are empty cells, numbers at full precision."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: "" if row.get(column) is None else row.get(column) for column in columns})
    path.write_text(buffer.getvalue())
