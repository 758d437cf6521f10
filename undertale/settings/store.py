"""Config groups generated from the Python objects that own their defaults.

The ``model`` sizes (:class:`InstructionTraceTransformerEncoderForMaskedLMConfiguration`
presets), the optimizer defaults (:class:`OptimizerSettings`), the masking
defaults (:class:`MaskingSettings`) and the data defaults (:class:`DataSettings`)
(and the pairs of ``task=similarity``, :class:`PairsDataSettings`) are registered in Hydra's ConfigStore
as typed structured configs (:func:`typed_node`), so each value is written once and OmegaConf checks
each value's type when a config is composed or overridden. YAML files in ``conf/`` extend these nodes
(``defaults: [adamw, _self_]``) and change only what they mean to change. Every node carries the
``_target_`` that ``hydra.utils.instantiate`` builds.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any, Callable, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from undertale.settings.data import DataSettings
from undertale.settings.model import InstructionTraceTransformerEncoderForMaskedLMConfiguration as Sizes
from undertale.settings.pairs import PairsDataSettings
from undertale.settings.masking import DEFAULTS as MASKING, MaskingSettings
from undertale.settings.optimizer import DEFAULTS as OPTIMIZER, OptimizerSettings
from undertale.settings.resolvers import register_resolvers

# the configs: the package's conf/ (in a checkout, a link to the repository's conf/, the one users edit)
CONF = Path(__file__).resolve().parents[1] / "conf"
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


# OmegaConf checks these types when a config is composed and on every override; what types cannot say
# (ranges, one setting against another) each settings class checks itself in __post_init__.
_TYPED = (int, float, bool, str)


def _node_type(hint: Any) -> Any:
    """The type OmegaConf checks a field by: scalars and Optional scalars; sequences and unions are left to
    the settings class (``data.paths=/usr/bin`` and ``data.paths=[a,b]`` are both valid there)."""
    if hint in _TYPED:
        return hint
    arguments = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and len(arguments) == 2 and type(None) in arguments:
        inner = next(argument for argument in arguments if argument is not type(None))
        if inner in _TYPED:
            return Optional[inner]
    return Any


def typed_node(settings: type, target_: str, values: dict[str, Any], partial: bool = False) -> type:
    """A structured config of ``settings``' fields (their types, ``values`` as defaults) that builds ``target_``.

    Arguments:
        settings: a settings dataclass (its annotations give the types).
        target_: the ``_target_`` that ``hydra.utils.instantiate`` builds.
        values: every field's default (may hold interpolations such as ``${seed}``).
        partial: build a partial (``_partial_: true``), completed at run time.
    """
    hints = typing.get_type_hints(settings)
    fields: list[tuple] = [("_target_", str, dataclasses.field(default=target_))]
    if partial:
        fields.append(("_partial_", bool, dataclasses.field(default=True)))
    for field in dataclasses.fields(settings):
        value = values[field.name]
        default = (dataclasses.field(default_factory=lambda value=value: list(value))
                   if isinstance(value, (list, tuple)) else dataclasses.field(default=value))
        kind = _node_type(hints[field.name])
        if isinstance(value, str) and value.startswith("${") and kind is not Any:
            kind = Optional[kind]  # an interpolation (${seed}) may resolve to null in a config that leaves it open
        fields.append((field.name, kind, default))
    return dataclasses.make_dataclass(settings.__name__, fields)


def register_configs() -> None:
    """Register the generated nodes (idempotent). Call before composing a config."""
    register_resolvers()
    store = ConfigStore.instance()
    for name, sizes in Sizes.options.items():
        store.store(group="model", name=name, node=typed_node(Sizes, MODEL_TARGET, sizes.as_dict(), partial=True))
    store.store(group="optimizer", name="adamw",
                node=typed_node(OptimizerSettings, target(OptimizerSettings), OPTIMIZER.as_dict()))
    store.store(group="masking", name="bert",
                node=typed_node(MaskingSettings, COLLATOR_TARGET, MASKING.as_dict(), partial=True))
    data = dataclasses.asdict(DataSettings()) | {"cache_dir": "${paths.cache_dir}", "seed": "${seed}"}
    store.store(group="data", name="system", node=typed_node(DataSettings, DATA_TARGET, data))
    pairs = dataclasses.asdict(PairsDataSettings(pairs="-")) | {"pairs": None, "seed": "${seed}"}
    store.store(group="data", name="pairs", node=typed_node(PairsDataSettings, PAIRS_TARGET, pairs))


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
