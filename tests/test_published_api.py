"""The published API of ``undertale.models.maskedlm``: names, positional signatures, and the size presets as Mappings.

Code written against the original module calls these positionally; parameters added since are keyword-only,
after the published ones, so such calls keep their meaning.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import pytest

from undertale.models import maskedlm
from undertale.models.encoder import InstructionTraceTransformerEncoder
from undertale.models.maskedlm import (InstructionTraceTransformerEncoderForMaskedLM,
                                       InstructionTraceTransformerEncoderForMaskedLMConfiguration as Sizes)

PUBLISHED_MODEL = ("depth", "hidden_dimensions", "vocab_size", "sequence_length", "heads", "intermediate_dimensions",
                   "next_token_id", "mask_token_id", "dropout", "eps", "lr", "warmup")
PUBLISHED_ENCODER = ("depth", "hidden_dimensions", "vocab_size", "sequence_length", "heads", "intermediate_dimensions",
                     "next_token_id", "dropout", "eps")


def positional(callable_) -> tuple[str, ...]:
    return tuple(name for name, parameter in inspect.signature(callable_).parameters.items()
                 if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD) and name != "self")


def test_published_names():
    for name in ("MaskedLMCollator", "MaskedLMHead", "InstructionTraceTransformerEncoderForMaskedLM",
                 "InstructionTraceTransformerEncoderForMaskedLMConfiguration"):
        assert hasattr(maskedlm, name), name


def test_positional_signatures_are_the_published_ones():
    assert positional(InstructionTraceTransformerEncoderForMaskedLM) == PUBLISHED_MODEL
    assert positional(InstructionTraceTransformerEncoder) == PUBLISHED_ENCODER
    defaults = inspect.signature(InstructionTraceTransformerEncoderForMaskedLM).parameters
    assert defaults["lr"].default == 1e-4 and defaults["warmup"].default == 0.025


def test_a_positional_call_keeps_its_meaning():
    model = InstructionTraceTransformerEncoderForMaskedLM(2, 32, 50, 16, 4, 64, 5, 4, 0.1, 1e-12, 3e-4, 0.5)
    assert model.optimizer_settings.lr == 3e-4 and model.optimizer_settings.warmup == 0.5
    assert model.hparams["eps"] == 1e-12 and model.hparams["attention_dropout"] is None


@pytest.mark.parametrize("name", ["tiny", "small", "medium", "large", "xl"])
def test_presets_are_read_only_mappings(name):
    preset = getattr(Sizes, name)
    assert isinstance(preset, Mapping)
    assert preset.get("depth") == preset.depth and preset.get("missing", 7) == 7
    assert dict(preset) == dict(preset.items()) == preset.as_dict()
    assert len(preset) == len(preset.as_dict()) and "heads" in preset and "vocab_size" not in preset
    with pytest.raises(KeyError):
        preset["vocab_size"]
    with pytest.raises(AttributeError):
        preset.depth = 1  # frozen
    with pytest.raises(TypeError):
        preset["depth"] = 1  # no item assignment
    assert preset == Sizes.from_name(name) and hash(preset) == hash(Sizes.from_name(name))


def test_presets_still_validate():
    with pytest.raises(ValueError, match="heads"):
        Sizes.medium.replace(heads=5)
    with pytest.raises(ValueError, match="depth"):
        Sizes(**{**Sizes.tiny, "depth": 0})
