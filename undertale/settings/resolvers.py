"""OmegaConf resolvers the configs use (no torch: composing a config must stay fast).

``${undertale.direction:${task.mode}}``: an Optuna sweeper's ``direction`` from the task's monitor mode
(``max`` -> ``maximize``, ``min`` -> ``minimize``), so a search maximises ``val/accuracy`` under
``task=maskedlm`` and ``val/mrr`` under ``task=similarity`` without being told.
"""

from __future__ import annotations

from omegaconf import OmegaConf

DIRECTIONS = {"max": "maximize", "min": "minimize"}


def direction(mode: str) -> str:
    """The Optuna direction of a monitor mode (``max`` or ``min``, as Lightning's checkpoint callback takes)."""
    try:
        return DIRECTIONS[str(mode)]
    except KeyError:
        raise ValueError(f"task.mode must be max or min, got {mode!r}") from None


def register_resolvers() -> None:
    """Register the ``undertale.*`` resolvers (idempotent)."""
    if not OmegaConf.has_resolver("undertale.direction"):
        OmegaConf.register_new_resolver("undertale.direction", direction)
