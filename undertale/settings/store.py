"""Config groups generated from the Python objects that own their defaults.

The ``model`` sizes (:class:`InstructionTraceTransformerEncoderForMaskedLMConfiguration`
presets), the optimizer defaults (:class:`OptimizerSettings`), the masking
defaults (:class:`MaskingSettings`) and the data defaults (:class:`DataSettings`)
(and the pairs of ``task=similarity``, :class:`PairsDataSettings`) are registered in Hydra's ConfigStore, so each value is written once. YAML files
in ``conf/`` extend these nodes (``defaults: [adamw, _self_]``) and change only
what they mean to change. Every node carries the ``_target_`` that
``hydra.utils.instantiate`` builds.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Callable

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from undertale.settings.data import DataSettings
from undertale.settings.model import InstructionTraceTransformerEncoderForMaskedLMConfiguration as Sizes
from undertale.settings.pairs import PairsDataSettings
from undertale.settings.masking import DEFAULTS as MASKING
from undertale.settings.optimizer import DEFAULTS as OPTIMIZER

CONF = Path(__file__).resolve().parents[2] / "conf"
INTERNAL_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")
# Named, not imported: composing and checking a config must not wait for torch and Lightning, and the
# settings layer imports no layer above it (tests/test_architecture.py proves each resolves to its class).
MODEL_TARGET = "undertale.models.maskedlm.InstructionTraceTransformerEncoderForMaskedLM"
COLLATOR_TARGET = "undertale.models.maskedlm.MaskedLMCollator"
DATA_TARGET = "undertale.data.config.DataConfig"
PAIRS_TARGET = "undertale.data.pairs.config.PairsDataConfig"


def target(callable_: Any) -> str:
    """The import path Hydra's ``_target_`` needs."""
    return f"{callable_.__module__}.{callable_.__qualname__}"


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Tuples as lists: OmegaConf stores sequences as lists."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def model_node(sizes: Sizes) -> dict[str, Any]:
    """A ``model`` option: the module to build (partially: token ids and optimizer come at run time) and its sizes."""
    return {"_target_": MODEL_TARGET, "_partial_": True, **sizes.as_dict()}


def register_configs() -> None:
    """Register the generated nodes (idempotent). Call before composing a config."""
    store = ConfigStore.instance()
    for name, sizes in Sizes.options.items():
        store.store(group="model", name=name, node=model_node(sizes))
    store.store(group="optimizer", name="adamw", node={"_target_": target(type(OPTIMIZER)), **_plain(OPTIMIZER.as_dict())})
    store.store(group="masking", name="bert", node={"_target_": COLLATOR_TARGET, "_partial_": True, **MASKING.as_dict()})
    data = _plain(dataclasses.asdict(DataSettings())) | {"cache_dir": "${paths.cache_dir}", "seed": "${seed}"}
    store.store(group="data", name="system", node={"_target_": DATA_TARGET, **data})
    pairs = _plain(dataclasses.asdict(PairsDataSettings(pairs="-"))) | {"pairs": None, "seed": "${seed}"}
    store.store(group="data", name="pairs", node={"_target_": PAIRS_TARGET, **pairs})


def settings(node: DictConfig) -> dict[str, Any]:
    """A config node's values without Hydra's ``_target_``-style keys."""
    return {key: value for key, value in OmegaConf.to_container(node, resolve=True).items() if key not in INTERNAL_KEYS}


def sizes_of(model: DictConfig) -> Sizes:
    """The model group's sizes as the typed configuration (validated)."""
    return Sizes(**settings(model))


def call_with_offered(factory: Callable, offered: dict[str, Any]) -> Any:
    """Call ``factory`` (a class, or a partial from ``instantiate(node, _partial_=True)``) with the offered values
    that its signature names and that the node leaves unset (absent or null)."""
    target = getattr(factory, "func", factory)
    parameters = inspect.signature(target).parameters
    already = {key for key, value in (getattr(factory, "keywords", None) or {}).items() if value is not None}
    return factory(**{key: value for key, value in offered.items() if key in parameters and key not in already})
