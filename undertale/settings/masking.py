"""BERT masking settings: how many positions become targets, which never do, and how they are corrupted.

:class:`MaskingSettings` holds each setting's one default and its checks;
:class:`~undertale.models.maskedlm.MaskedLMCollator` applies them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from undertale.settings.checks import check_fraction


@dataclass(frozen=True)
class MaskingSettings:
    """Select ``probability`` of the non-padding tokens as targets; of those, ``mask_fraction``
    become ``[MASK]``, ``random_fraction`` a random token, and the rest stay unchanged.
    Tokens listed in ``exclude`` (token strings, e.g. ``["[NEXT]"]``) are never targets; the
    ``probability`` then applies to the remaining tokens.

    Raises:
        ValueError: naming the setting, for a value outside [0, 1], fractions summing past 1,
            or an ``exclude`` that is not a list of token strings.
    """

    probability: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1
    exclude: Sequence[str] = ()

    def __post_init__(self) -> None:
        exclude = self.exclude
        if isinstance(exclude, str) or not isinstance(exclude, Sequence) or not all(
            isinstance(token, str) and token for token in exclude
        ):
            raise ValueError(f"exclude must be a list of token strings, e.g. exclude=[\"[NEXT]\"], got {exclude!r}")
        object.__setattr__(self, "exclude", tuple(exclude))
        for field in dataclasses.fields(self):
            if field.name == "exclude":
                continue
            check_fraction(field.name, getattr(self, field.name))
        if self.mask_fraction + self.random_fraction > 1.0 + 1e-9:
            raise ValueError(
                f"mask_fraction + random_fraction must not exceed 1, got {self.mask_fraction} + {self.random_fraction}"
            )

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain config values (``exclude`` as a list)."""
        return dataclasses.asdict(self) | {"exclude": list(self.exclude)}


DEFAULTS = MaskingSettings()
