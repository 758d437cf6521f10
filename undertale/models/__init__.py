"""Models: the instruction-trace encoder and its masked-LM training module.

Names are loaded on first use, so that reading the sizes
(:mod:`undertale.settings.model`) or checking settings does not load torch and Lightning.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "InstructionTracePositionEmbedding": "undertale.models.encoder",
    "InstructionTraceTransformerEncoder": "undertale.models.encoder",
    "InstructionTraceTransformerEncoderForMaskedLM": "undertale.models.maskedlm",
    "InstructionTraceTransformerEncoderForMaskedLMConfiguration": "undertale.settings.model",
    "MaskedLMCollator": "undertale.models.maskedlm",
    "MaskedLMHead": "undertale.models.maskedlm",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
