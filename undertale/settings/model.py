"""Model sizes: one frozen dataclass with named presets, the single source of every size.

``InstructionTraceTransformerEncoderForMaskedLMConfiguration.medium`` etc. are
instances; the Hydra ``model`` group is generated from them (see
:mod:`undertale.settings.store`). A preset unpacks like a dict of keyword arguments::

    ids = special_ids(tokenizer)          # undertale.data.tokenizer
    Model(**Sizes.medium, vocab_size=ids["vocab_size"], next_token_id=ids["next_token_id"],
          mask_token_id=ids["mask_token_id"])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, ClassVar, Iterator, Optional

from undertale.settings.checks import check_probability

# Longest supported sequence: instruction/argument-index tables and the tokenizer's
# fixed-length encodings grow with it (a 100k-token row of 50k functions is ~20 GB).
MAX_SEQUENCE_LENGTH = 8192


@dataclass(frozen=True)
class InstructionTraceTransformerEncoderForMaskedLMConfiguration(Mapping):
    """The sizes of an instruction-trace encoder (``vocab_size`` and token ids come from the tokenizer).

    Arguments:
        depth: number of encoder layers.
        hidden_dimensions: width of every hidden state.
        heads: attention heads; must divide ``hidden_dimensions``.
        intermediate_dimensions: width of each feed-forward block.
        sequence_length: longest input, in tokens (at most ``MAX_SEQUENCE_LENGTH``).
        dropout: dropout probability of the hidden states, in [0, 1).
        eps: LayerNorm epsilon.
        attention_dropout: dropout probability of the attention weights, in [0, 1); None: ``dropout``.

    Raises:
        ValueError: naming the field, for a size that is not a positive integer, heads that do
            not divide the width, a dropout outside [0, 1) or a non-positive eps.
    """

    depth: int
    hidden_dimensions: int
    heads: int
    intermediate_dimensions: int
    sequence_length: int
    dropout: float = 0.1
    eps: float = 1e-12
    attention_dropout: Optional[float] = None

    # the presets, set below the class
    tiny: ClassVar["InstructionTraceTransformerEncoderForMaskedLMConfiguration"]
    small: ClassVar["InstructionTraceTransformerEncoderForMaskedLMConfiguration"]
    medium: ClassVar["InstructionTraceTransformerEncoderForMaskedLMConfiguration"]
    large: ClassVar["InstructionTraceTransformerEncoderForMaskedLMConfiguration"]
    xl: ClassVar["InstructionTraceTransformerEncoderForMaskedLMConfiguration"]
    options: ClassVar[dict[str, "InstructionTraceTransformerEncoderForMaskedLMConfiguration"]]

    def __post_init__(self) -> None:
        for name in ("depth", "hidden_dimensions", "heads", "intermediate_dimensions", "sequence_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_dimensions % self.heads:
            raise ValueError(
                f"heads ({self.heads}) must divide hidden_dimensions ({self.hidden_dimensions}); "
                f"e.g. heads={_divisor_near(self.hidden_dimensions, self.heads)}"
            )
        if self.sequence_length > MAX_SEQUENCE_LENGTH:
            raise ValueError(f"sequence_length must be at most {MAX_SEQUENCE_LENGTH}, got {self.sequence_length}")
        check_probability("dropout", self.dropout)
        check_probability("attention_dropout", self.attention_dropout, optional=True)
        if not isinstance(self.eps, (int, float)) or not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps!r}")

    @classmethod
    def from_name(cls, name: str) -> "InstructionTraceTransformerEncoderForMaskedLMConfiguration":
        """A preset by name.

        Raises:
            KeyError: naming the valid presets.
        """
        if name not in cls.options:
            raise KeyError(f"unknown model size {name!r}; choose from {', '.join(cls.options)}")
        return cls.options[name]

    def replace(self, **changes: Any) -> "InstructionTraceTransformerEncoderForMaskedLMConfiguration":
        """A copy with some sizes changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # A read-only Mapping of the sizes: `**preset`, `dict(preset)`, `preset.get("depth")`, `preset.items()`.
    def __getitem__(self, key: str) -> Any:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELDS)

    def __len__(self) -> int:
        return len(_FIELDS)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def attention_dropout_of(dropout: float, attention_dropout: Optional[float]) -> float:
    """The attention weights' dropout probability: ``attention_dropout``, or ``dropout`` where it is None."""
    return dropout if attention_dropout is None else attention_dropout


def _divisor_near(width: int, heads: int) -> int:
    return min((d for d in range(1, width + 1) if width % d == 0), key=lambda d: abs(d - heads))


_Sizes = InstructionTraceTransformerEncoderForMaskedLMConfiguration
_FIELDS = tuple(field.name for field in dataclasses.fields(_Sizes))
_Sizes.tiny = _Sizes(depth=2, hidden_dimensions=128, heads=4, intermediate_dimensions=512, sequence_length=128,
                     dropout=0.0)  # trains on a laptop CPU in minutes
_Sizes.small = _Sizes(depth=6, hidden_dimensions=512, heads=8, intermediate_dimensions=2048, sequence_length=512)
_Sizes.medium = _Sizes(depth=12, hidden_dimensions=768, heads=12, intermediate_dimensions=3072,
                       sequence_length=512)  # BERT-base shape: the published undertale recipe
_Sizes.large = _Sizes(depth=24, hidden_dimensions=1024, heads=16, intermediate_dimensions=4096,
                      sequence_length=512)  # BERT-large shape
_Sizes.xl = _Sizes(depth=36, hidden_dimensions=1280, heads=20, intermediate_dimensions=5120,
                   sequence_length=512)  # ~0.7B parameters; one 80 GB GPU with bf16-mixed
_Sizes.options = {"tiny": _Sizes.tiny, "small": _Sizes.small, "medium": _Sizes.medium, "large": _Sizes.large,
                  "xl": _Sizes.xl}
