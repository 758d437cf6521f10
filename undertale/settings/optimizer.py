"""Optimizer settings: AdamW with linear warmup, then a decay schedule.

:class:`OptimizerSettings` holds every setting and its one default; the ``optimizer`` config group
and the model's signature both read them; :mod:`undertale.models.optimization` applies them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW with linear warmup and a decay schedule.

    Arguments:
        lr: peak learning rate (> 0).
        warmup: below 1, a fraction of the total steps; otherwise a step count.
        weight_decay: decoupled weight decay (not applied to biases and norms).
        betas: AdamW betas, each in [0, 1).
        schedule: decay after warmup: ``cosine``, ``linear`` or ``constant``.
        final_lr: learning rate reached at the last step (0 <= final_lr <= lr).

    Raises:
        ValueError: naming the setting that is out of range or of the wrong type.
    """

    lr: float = 1e-4
    warmup: float = 0.025
    weight_decay: float = 0.01
    betas: Sequence[float] = (0.9, 0.999)
    schedule: str = "cosine"
    final_lr: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lr", "warmup", "weight_decay", "final_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0 (a fraction below 1, else a step count), got {self.warmup}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.final_lr <= self.lr:
            raise ValueError(f"final_lr must be within [0, lr={self.lr}], got {self.final_lr}")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers within [0, 1), got {list(self.betas)!r}")
        object.__setattr__(self, "betas", betas)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def warmup_steps(self, total_steps: int) -> int:
        return int(self.warmup * total_steps) if self.warmup < 1 else int(self.warmup)


DEFAULTS = OptimizerSettings()
