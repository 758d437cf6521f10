"""An evaluation's numbers as a dict (``evaluation.json``), a table for the terminal, and flat metric keys."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

import numpy as np

from undertale.evaluation.baselines import Baselines
from undertale.metrics.token_classes import CLASSES, METRIC_NAMES


def _number(value: Any) -> Optional[float]:
    """A finite float, or None (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _ratio(part: float, whole: float) -> Optional[float]:
    return float(part) / whole if whole else None


def _perplexity(loss: Optional[float]) -> Optional[float]:
    return None if loss is None else _number(math.exp(min(loss, 700.0)))


def summarise(values: Mapping[str, Any], targets: np.ndarray, baselines: Baselines,
              token: Callable[[int], str]) -> dict[str, dict]:
    """``overall`` and ``classes`` of ``evaluation.json``.

    Arguments:
        values: :meth:`~undertale.models.maskedlm.MaskedLMMetrics.compute` of the evaluation.
        targets: the evaluated targets counted by class and token, (classes, vocabulary).
        baselines: the tokens the frequency predictors choose.
        token: id to token string.

    Returns:
        ``{"overall": {...}, "classes": {"next": {...}, ...}}``; each holds ``count``, ``share``, ``accuracy``,
        ``loss``, ``perplexity``, ``baseline_most_frequent`` and ``baseline_class_most_frequent`` (None where
        a class has no targets).
    """
    total = int(values["targets"])
    correct = baselines.accuracies(targets)
    loss = _number(values["loss"])
    overall = {
        "count": total, "share": 1.0 if total else None, "accuracy": _number(values["accuracy"]), "loss": loss,
        "perplexity": _perplexity(loss),
        "baseline_most_frequent": _ratio(correct["most_frequent"].sum(), total),
        "baseline_class_most_frequent": _ratio(correct["class_most_frequent"].sum(), total),
        "most_frequent_token": token(baselines.most_frequent),
    }
    classes = {}
    for index, (name, key) in enumerate(zip(CLASSES, METRIC_NAMES)):
        count = int(values[f"targets/{key}"])
        chosen = baselines.class_most_frequent[index]
        class_loss = _number(values[f"loss/{key}"]) if count else None
        classes[key] = {
            "name": name, "count": count, "share": _ratio(count, total),
            "accuracy": _number(values[f"accuracy/{key}"]) if count else None, "loss": class_loss,
            "perplexity": _perplexity(class_loss),
            "baseline_most_frequent": _ratio(correct["most_frequent"][index], count),
            "baseline_class_most_frequent": _ratio(correct["class_most_frequent"][index], count),
            "class_most_frequent_token": token(chosen) if chosen >= 0 else None,
        }
    return {"overall": overall, "classes": classes}


def flat_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of ``overall`` and ``classes`` as flat keys: ``overall/accuracy``, ``classes/next/share``, ..."""
    flat = {f"overall/{key}": value for key, value in result["overall"].items()}
    for name, entry in result["classes"].items():
        flat |= {f"classes/{name}/{key}": value for key, value in entry.items()}
    for architecture, part in result.get("architectures", {}).items():  # architectures/aarch64/classes/next/accuracy
        flat |= {f"architectures/{architecture}/{key}": value for key, value in flat_metrics(part).items()}
    return {key: value for key, value in flat.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def _cell(value: Optional[float], form: str) -> str:
    return "-" if value is None else format(value, form)


def table(result: Mapping[str, Any]) -> str:
    """The terminal table: one row overall and one per class, baselines beside the model."""
    most = result["overall"]["most_frequent_token"]
    header = ("class", "share", "targets", "accuracy", "loss", "perplexity", f"always {most}", "class most frequent")
    rows = [header]
    entries = [("overall", result["overall"], "")]
    entries += [(entry["name"], entry, entry["class_most_frequent_token"] or "") for entry in result["classes"].values()]
    for name, entry, chosen in entries:
        share = entry["share"]
        rows.append((
            name, "-" if share is None else f"{share:.1%}", f"{entry['count']:,}", _cell(entry["accuracy"], ".4f"),
            _cell(entry["loss"], ".3f"), _cell(entry["perplexity"], ".2f"), _cell(entry["baseline_most_frequent"], ".4f"),
            (_cell(entry["baseline_class_most_frequent"], ".4f") + (f" {chosen}" if chosen else "")),
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:-1])]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    return "\n".join(lines)
