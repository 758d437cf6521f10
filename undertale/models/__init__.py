"""Models: the instruction-trace encoder and its masked-LM training module."""

from .encoder import InstructionTracePositionEmbedding, InstructionTraceTransformerEncoder
from .maskedlm import (
    InstructionTraceTransformerEncoderForMaskedLM,
    InstructionTraceTransformerEncoderForMaskedLMConfiguration,
    MaskedLMCollator,
    MaskedLMHead,
)

__all__ = [
    "InstructionTracePositionEmbedding",
    "InstructionTraceTransformerEncoder",
    "InstructionTraceTransformerEncoderForMaskedLM",
    "InstructionTraceTransformerEncoderForMaskedLMConfiguration",
    "MaskedLMCollator",
    "MaskedLMHead",
]
