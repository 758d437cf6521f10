"""The report's figures as PNG files (matplotlib, Agg): losses over steps, the objective against each swept
value, and throughput and scaling efficiency against the number of processes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402  (after choosing the backend)
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, StrMethodFormatter  # noqa: E402

from undertale.report.jobs import FAILED, FINISHED  # noqa: E402
from undertale.report.scaling import EFFICIENCY, PER_PROCESS, PROCESSES, SETTING  # noqa: E402
from undertale.report.table import JOB, STATUS, TOKENS, Table, best_column, shown  # noqa: E402

DPI = 150
SIZE = (6.4, 4.2)  # inches: a single column of a two-column paper at 0.5x, a full column at 1x
UNITS = (("accuracy", "fraction of masked tokens"), ("loss", "cross-entropy, nats"), ("recall", "fraction of queries"),
         ("mrr", "mean reciprocal rank"), ("tokens", "tokens/s"), ("mfu", "fraction of peak FLOP/s"))
MAX_LABEL_KEYS = 3


def slug(text: str) -> str:
    """``text`` as part of a file name: ``val/accuracy`` -> ``val_accuracy``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def axis_label(metric: str) -> str:
    """A metric name with its unit, e.g. ``best val/accuracy (fraction of masked tokens)``."""
    unit = next((unit for word, unit in UNITS if word in metric.lower()), None)
    return f"{metric} ({unit})" if unit else metric


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def job_label(table: Table, row: dict[str, Any]) -> str:
    """A job's name in legends: its swept values (up to three), else its label; its status unless finished."""
    keys = table.swept
    label = ", ".join(f"{key}={shown(row.get(key))}" for key in keys) if 0 < len(keys) <= MAX_LABEL_KEYS else row[JOB]
    return label if row[STATUS] == FINISHED else f"{label} ({row[STATUS]})"


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def _legend(axes, handles: Optional[list] = None, count: int = 0) -> None:
    """A legend inside the axes for a few entries, outside on the right for many."""
    options: dict[str, Any] = {"fontsize": "small", "frameon": False}
    if count > 8:
        options |= {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0)}
    axes.legend(handles=handles, **options) if handles else axes.legend(**options)


def loss_figure(table: Table, path: Path) -> Optional[Path]:
    """Training (solid) and validation (dashed) loss against steps, every job on one axis.

    Returns:
        The file written, None when no job logged a loss.
    """
    figure = Figure(figsize=SIZE)
    axes = figure.add_subplot()
    colors = matplotlib.colormaps["tab10" if len(table.rows) <= 10 else "viridis"]
    handles = []
    for index, (row, job) in enumerate(zip(table.rows, table.jobs)):
        color = colors(index % 10 if len(table.rows) <= 10 else index / max(1, len(table.rows) - 1))
        drawn = False
        for metric, style, marker in (("train/loss", "-", None), ("val/loss", "--", "o")):
            points = job.history.series.get(metric)
            if points:
                steps, values = zip(*points)
                axes.plot(steps, values, linestyle=style, marker=marker, markersize=4, color=color, linewidth=1.4)
                drawn = True
        if drawn:
            handles.append(Line2D([], [], color=color, linewidth=2, label=job_label(table, row)))
    if not handles:
        return None
    handles += [Line2D([], [], color="black", linestyle="-", label="training"),
                Line2D([], [], color="black", linestyle="--", marker="o", markersize=4, label="validation")]
    axes.set_xlabel("training step")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("loss (cross-entropy, nats per masked token)")
    axes.grid(alpha=0.3)
    _legend(axes, handles, len(handles))
    return _save(figure, path)


def _objective_figure(table: Table, key: str, path: Path) -> Optional[Path]:
    points = [(row.get(key), table.objective_value(row), row) for row in table.rows
              if row[STATUS] != FAILED and table.objective_value(row) is not None and row.get(key) is not None]
    if len({repr(x) for x, _, _ in points}) < 2:
        return None
    numeric = all(_number(x) for x, _, _ in points)
    order = sorted({x for x, _, _ in points}) if numeric else list(dict.fromkeys(str(x) for x, _, _ in points))
    others = [other for other in table.swept if other != key]
    groups: dict[str, list[tuple[float, float]]] = {}
    for x, y, row in points:
        name = ", ".join(f"{other}={shown(row.get(other))}" for other in others) if others else ""
        groups.setdefault(name, []).append((x if numeric else order.index(str(x)), y))
    figure = Figure(figsize=SIZE)
    axes = figure.add_subplot()
    for name, values in groups.items():
        values.sort()
        axes.plot([x for x, _ in values], [y for _, y in values], marker="o", linewidth=1.4, label=name or None)
    if numeric:
        low, high = min(order), max(order)
        if low > 0 and high / low >= 10:
            axes.set_xscale("log")
        axes.xaxis.set_major_locator(FixedLocator(order))
        axes.xaxis.set_minor_locator(NullLocator())
        axes.set_xticklabels([shown(x) for x in order])
    else:
        axes.set_xticks(range(len(order)), order)
    axes.set_xlabel(key)
    axes.set_ylabel(axis_label(best_column(table.objective)))
    axes.grid(alpha=0.3)
    if others:
        _legend(axes, count=len(groups))
    return _save(figure, path)


def objective_figures(table: Table, directory: Path) -> list[Path]:
    """The objective against each swept key that takes two or more values among the jobs that have it."""
    written = []
    for key in table.swept:
        path = directory / f"{slug(table.objective)}_vs_{slug(key)}.png"
        if (figure := _objective_figure(table, key, path)) is not None:
            written.append(figure)
    return written


def _process_axis(axes, counts: list[int], gpus: bool) -> None:
    if max(counts) / min(counts) >= 8:
        axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(FixedLocator(counts))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticklabels([str(count) for count in counts])
    axes.set_xlabel("processes (GPUs)" if gpus else "processes")
    axes.grid(alpha=0.3)


def scaling_figures(rows: list[dict[str, Any]], directory: Path, gpus: bool = False) -> list[Path]:
    """Tokens/s and scaling efficiency against the number of processes, each with its ideal (dashed).

    Arguments:
        rows: :func:`~undertale.report.scaling.scaling_rows` (one line per series).
        directory: where ``scaling_throughput.png`` and ``scaling_efficiency.png`` go.
        gpus: whether the processes ran on GPUs (one each), for the axis label.

    Returns:
        The files written; none when no series has two process counts.
    """
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(row[SETTING] or "", []).append(row)
    if not series:
        return []
    counts = sorted({row[PROCESSES] for row in rows})
    smallest = min(counts)
    written = []
    for name, column, label in (
        ("scaling_throughput.png", TOKENS, "throughput (tokens/s, all processes)"),
        ("scaling_efficiency.png", EFFICIENCY, f"scaling efficiency (vs {smallest} process{'es' if smallest > 1 else ''})"),
    ):
        figure = Figure(figsize=SIZE)
        axes = figure.add_subplot()
        colors = matplotlib.colormaps["tab10"]
        for index, (setting, members) in enumerate(series.items()):
            color = colors(index % 10) if len(series) > 1 else "tab:blue"
            sizes = sorted({row[PROCESSES] for row in members})
            mean = [sum(row[column] for row in members if row[PROCESSES] == size) /
                    sum(row[PROCESSES] == size for row in members) for size in sizes]
            base = members[0][PER_PROCESS] / members[0][EFFICIENCY]  # per-process tokens/s at its smallest size
            ideal = [base * size for size in sizes] if column == TOKENS else [1.0] * len(sizes)
            axes.plot(sizes, ideal, linestyle="--", linewidth=1.2, color="gray" if len(series) == 1 else color)
            axes.plot(sizes, mean, marker="o", linewidth=1.6, color=color, label=setting or "measured")
            axes.scatter([row[PROCESSES] for row in members], [row[column] for row in members], color=color, s=12)
        _process_axis(axes, counts, gpus)
        axes.set_ylabel(label)
        if column == EFFICIENCY:
            axes.set_ylim(0, max(1.1, max(row[column] for row in rows) * 1.1))
        else:
            axes.set_ylim(bottom=0)
            axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        handles, _ = axes.get_legend_handles_labels()
        handles.append(Line2D([], [], linestyle="--", color="gray", label="ideal (linear)"))
        _legend(axes, handles, len(handles))
        written.append(_save(figure, directory / name))
    return written
