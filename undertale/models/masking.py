"""BERT masking settings: how many positions become targets, which never do, and how they are corrupted.

:class:`MaskingSettings` holds each setting's one default and its checks;
:class:`~undertale.models.maskedlm.MaskedLMCollator` applies them, and :func:`build_collator`
builds it from the ``masking`` group for a tokenizer (``exclude`` token strings become ids).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .configuration import check_fraction


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


def exclude_ids(exclude: Sequence[str], vocabulary: Mapping[str, int]) -> tuple[int, ...]:
    """The ids of the ``exclude`` token strings.

    Arguments:
        exclude: token strings, as in ``masking.exclude``.
        vocabulary: the run's tokenizer vocabulary (token string to id).

    Raises:
        ValueError: naming the first token string the vocabulary lacks.
    """
    missing = [token for token in exclude if token not in vocabulary]
    if missing:
        token = missing[0]
        hint = (f"; on the command line quote brackets: 'masking.exclude=[\"[{token}]\"]'"
                if f"[{token}]" in vocabulary else "; list whole tokens such as [NEXT], [UNK], mov or rax")
        raise ValueError(f"masking.exclude names {token!r}, which is not a token of the run's tokenizer{hint}")
    return tuple(sorted({vocabulary[token] for token in exclude}))


def build_collator(masking: Any, tokenizer: Any) -> Any:
    """The ``masking`` group's collator for one tokenizer: token ids filled in, ``exclude`` mapped to ids.

    Arguments:
        masking: the ``masking`` config node (``_target_``: the collator, partial).
        tokenizer: the run's ``tokenizers.Tokenizer``.

    Raises:
        ValueError: for an ``exclude`` token the tokenizer lacks.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ..data.tokenizer import special_ids

    ids = special_ids(tokenizer)
    exclude = list(masking.get("exclude") or ())
    node = OmegaConf.masked_copy(masking, [key for key in masking if key != "exclude"])
    return instantiate(node)(mask_token_id=ids["mask_token_id"], vocab_size=ids["vocab_size"],
                             exclude_ids=exclude_ids(exclude, tokenizer.get_vocab()))


DEFAULTS = MaskingSettings()
