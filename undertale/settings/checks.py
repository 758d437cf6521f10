"""Value checks shared by the settings: each raises ValueError naming the setting."""

from __future__ import annotations

from typing import Any


def check_probability(name: str, value: Any, optional: bool = False) -> None:
    """Raises ValueError naming ``name`` unless ``value`` is a dropout probability in [0, 1) (or None if ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be within [0, 1){' or null' if optional else ''}, got {value!r}")


def check_fraction(name: str, value: Any) -> None:
    """Raises ValueError naming ``name`` unless ``value`` is a number in [0, 1] (a share, both ends included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")
