"""BERT masking settings: how many positions become targets and how they are corrupted.

:class:`MaskingSettings` holds each setting's one default and its checks;
:class:`~undertale.models.maskedlm.MaskedLMCollator` applies them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MaskingSettings:
    """Select ``probability`` of the non-padding tokens as targets; of those, ``mask_fraction``
    become ``[MASK]``, ``random_fraction`` a random token, and the rest stay unchanged.

    Raises:
        ValueError: naming the setting, for a value outside [0, 1] or fractions summing past 1.
    """

    probability: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{field.name} must be within [0, 1], got {value!r}")
        if self.mask_fraction + self.random_fraction > 1.0 + 1e-9:
            raise ValueError(
                f"mask_fraction + random_fraction must not exceed 1, got {self.mask_fraction} + {self.random_fraction}"
            )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULTS = MaskingSettings()
