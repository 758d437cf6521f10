"""The settings of the similarity head and loss, checked without loading torch."""

from __future__ import annotations

from typing import Optional

from undertale.settings.checks import check_fraction, check_probability

POOLINGS = ("mean", "first", "mean+max")


def pooled_width(hidden_dimensions: int, pooling: str) -> int:
    """Width of a pooled vector: ``mean+max`` puts the two poolings side by side."""
    return 2 * hidden_dimensions if pooling == "mean+max" else hidden_dimensions


def check_similarity_settings(temperature: float, projection_size: int, pooling: str, pool: int,
                              dropout: Optional[float] = None, attention_dropout: Optional[float] = None,
                              entry_weight: float = 0.0) -> None:
    """Raises ValueError naming the setting that is out of range."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    for name, value, low in (("projection_size", projection_size, 1), ("pool", pool, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    check_probability("dropout", dropout, optional=True)
    check_probability("attention_dropout", attention_dropout, optional=True)
    check_fraction("entry_weight", entry_weight)
