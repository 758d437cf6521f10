"""Check a composed config before any work: every part is built once, and a mistake is one line naming the key.

:func:`check_config` builds each part's own settings object (sizes,
optimizer, collator, data, callbacks) so that each part validates its own
values, and checks the trainer's numbers. :func:`check_command_line` composes
the command line the way ``train.py`` will, before Hydra creates a run
directory, and turns Hydra's multi-line composition errors into one line with
the closest valid key or option.
"""

from __future__ import annotations

import difflib
import glob
import os
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from undertale.settings.data import default_cache_dir
from undertale.settings.store import CONF, settings, sizes_of
from undertale.settings.model import InstructionTraceTransformerEncoderForMaskedLMConfiguration as Sizes
from undertale.settings.masking import MaskingSettings
from undertale.settings.optimizer import OptimizerSettings
from undertale.runtime.errors import ConfigError
from undertale.runtime.outputs import check_cache_writable, check_writable

PRECISIONS = ("64", "64-true", "32", "32-true", "16", "16-mixed", "16-true", "bf16", "bf16-mixed", "bf16-true",
              "transformer-engine", "transformer-engine-float16")
DIVERGENCE_POLICIES = ("stop", "skip")  # of undertale.training.callbacks.NonFiniteLossGuard


def _message(group: str, error: BaseException) -> str:
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", text)
    if unexpected:
        return f"{group}.{unexpected.group(1)} is not a setting of {group}"
    missing = re.search(r"missing \d+ required positional argument[s]?: (.+)", text)
    if missing:
        return f"{group} lacks {missing.group(1)}"
    first = text.split(" ", 1)[0]
    return f"{group}.{text}" if re.fullmatch(r"[a-z_]+", first) else f"{group}: {text}"


def _check(group: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except (ValueError, TypeError, KeyError, InstantiationException, OmegaConfBaseException) as error:
        raise ConfigError(_message(group, error)) from None


def _number(name: str, value: Any, low: float, integer: bool = False, allow: tuple = ()) -> None:
    if value in allow and not isinstance(value, bool):
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < low:
        what = "an integer" if integer else "a number"
        extra = f" (or {', '.join(map(str, allow))})" if allow else ""
        raise ConfigError(f"{name} must be {what} >= {low}{extra}, got {value!r}")


def check_trainer(trainer: DictConfig) -> None:
    _number("trainer.max_steps", trainer.get("max_steps"), 1, integer=True, allow=(-1,))
    _number("trainer.log_every_n_steps", trainer.get("log_every_n_steps", 1), 1, integer=True)
    _number("trainer.accumulate_grad_batches", trainer.get("accumulate_grad_batches", 1), 1, integer=True)
    _number("trainer.num_nodes", trainer.get("num_nodes", 1), 1, integer=True)
    clip = trainer.get("gradient_clip_val")
    if clip is not None:
        _number("trainer.gradient_clip_val", clip, 0)
    interval = trainer.get("val_check_interval")
    if interval is not None:
        _number("trainer.val_check_interval", interval, 1e-9)
    limit = trainer.get("limit_val_batches")
    if limit is not None:
        _number("trainer.limit_val_batches", limit, 0)
    strategy = trainer.get("strategy")
    target = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy)
    if "fsdp" in target.lower() and str(trainer.get("accelerator")) == "cpu":
        raise ConfigError("trainer=fsdp needs GPUs (Lightning's FSDP strategy refuses accelerator=cpu); "
                          "use trainer=ddp_cpu to try multi-process training on CPU")
    precision = trainer.get("precision")
    if precision is not None and str(precision) not in PRECISIONS:
        raise ConfigError(f"trainer.precision must be one of {', '.join(PRECISIONS)} or null, got {precision!r}")


def check_callbacks(callbacks: DictConfig) -> None:
    for name, options in callbacks.items():
        if options is None:
            continue
        if "_target_" not in options:
            raise ConfigError(f"callbacks.{name} needs a _target_ (the callback class to build)")
        if "every_n_train_steps" in options:
            _number(f"callbacks.{name}.every_n_train_steps", options.every_n_train_steps, 0, integer=True)
        if "policy" in options and options.policy not in DIVERGENCE_POLICIES:
            raise ConfigError(f"callbacks.{name}.policy must be one of {', '.join(DIVERGENCE_POLICIES)}, "
                              f"got {options.policy!r}")
        if "max_skips" in options:
            _number(f"callbacks.{name}.max_skips", options.max_skips, 0, integer=True)


def check_config(cfg: DictConfig, overrides: Sequence[str] = ()) -> Sizes:
    """Validate every part of a composed training config; return the model sizes.

    Arguments:
        overrides: the command line's overrides (a task may check what the user set, e.g. ``model``).

    Raises:
        ConfigError: one line naming the key, the value and what is allowed.
    """
    cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{getattr(error, 'full_key', '') or 'config'}: {str(error).splitlines()[0]}") from None
    sizes = _check("model", lambda: sizes_of(cfg.model))
    _check("optimizer", lambda: OptimizerSettings(**settings(cfg.optimizer)))
    _check("masking", lambda: MaskingSettings(**settings(cfg.masking)))
    if "_target_" not in (cfg.get("data") or {}):
        raise ConfigError("data needs a _target_ (its settings class): pick an option, e.g. data=system")
    data = _check("data", lambda: get_class(cfg.data._target_)(**settings(cfg.data)))
    check_data_paths(data)
    if "_target_" not in (cfg.get("task") or {}):
        raise ConfigError("task needs a _target_ (its Task class): pick an option, e.g. task=maskedlm")
    task = _check("task", lambda: instantiate(cfg.task, _convert_="all"))
    try:
        task.check(cfg, overrides)
    except (ValueError, OmegaConfBaseException) as error:
        raise ConfigError(str(error).splitlines()[0]) from None
    check_trainer(cfg.trainer)
    check_callbacks(cfg.get("callbacks") or {})
    _number("seed", cfg.get("seed"), 0, integer=True)
    if cfg.get("compile") not in ("auto", True, False):
        raise ConfigError(f"compile must be auto, true or false, got {cfg.get('compile')!r}")
    return sizes


def _missing(path: str) -> bool:
    path = os.path.expanduser(str(path))
    return not (glob.glob(path) if glob.has_magic(path) else os.path.exists(path))


def check_data_paths(data: Any) -> None:
    """Every file the data settings name exists: each ``data.paths`` entry (a file, a directory or a glob that
    matches), ``data.directory``, ``data.packages``, ``data.pairs`` and ``data.tokenizer``, so a wrong path stops
    before any work (and before the run directory is made).

    Raises:
        ConfigError: naming the first setting and path that does not exist.
    """
    paths = getattr(data, "paths", None) or []
    for index, path in enumerate([paths] if isinstance(paths, str) else paths):
        if _missing(path):
            what = "matches no file" if glob.has_magic(str(path)) else "does not exist"
            raise ConfigError(f"data.paths[{index}]: {path} {what}; give existing ELF files, directories or globs")
    for name in ("directory", "packages", "pairs", "tokenizer"):
        value = getattr(data, name, None)
        if value and _missing(value):
            raise ConfigError(f"data.{name}: {value} does not exist")


def check_outputs(cfg: DictConfig, run_dir: Optional[Path] = None) -> None:
    """The run directory (``hydra.run.dir``, or ``run_dir`` of a resumed run) and the data cache can be written,
    before any work (:func:`~undertale.runtime.outputs.check_writable`).

    Raises:
        OutputError: naming the directory that cannot be written and what to set instead.
    """
    run_dir = run_dir or OmegaConf.select(cfg, "hydra.run.dir", default=None)
    if run_dir is not None:
        check_writable(str(run_dir), "run directory", directory=True,
                       hint="set hydra.run.dir=<a writable directory>")
    data = cfg.get("data")
    if isinstance(data, DictConfig) and "cache_dir" in data:  # the data group of a task that prepares a cache
        cache = data.get("cache_dir")
        check_cache_writable(Path(str(cache)) if cache else default_cache_dir())


# --- the command line, before Hydra ------------------------------------------------------------

FLAGS_THAT_SKIP = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
                   "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--resolve", "-p",
                   "--package", "--version", "--experimental-rerun")


def is_multirun(argv: list[str]) -> bool:
    return any(arg in ("-m", "--multirun") for arg in argv)


def _closest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {match[0]}?" if match else ""


def explain_composition_error(error: BaseException, overrides: list[str], config_name: str = "train") -> str:
    """One line for a Hydra/OmegaConf composition error, with the closest valid key or option of ``config_name``."""
    text = str(error)
    missing_option = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing_option:
        group, option = missing_option.groups()
        listing = text.split("Available options", 1)[-1].split("Config search path", 1)[0]
        options = [line.strip() for line in listing.splitlines()[1:] if line.strip()]
        return (f"{group}={option}: no such option of {group}{_closest(option, options)} "
                f"(options: {', '.join(options)})")
    cause = f"{text} {error.__cause__ or ''}"
    invalid = re.search(r"Value '(.*?)'(?: of type '\w+')? (?:could not be converted to (\w+)|is not a valid bool)", cause)
    full_key = re.search(r"full_key: (\S+)", cause)
    if invalid and full_key:  # a typed node refused a value (undertale.settings.store.typed_node)
        kind = {"Float": "a number", "Integer": "an integer"}.get(invalid.group(2), "true or false")
        return f"{full_key.group(1)} must be {kind}, got {invalid.group(1)!r}"
    unknown_key = re.search(r"Could not override '([^']+)'", text) or full_key
    if unknown_key and ("not in struct" in cause or re.search(r"Key '[^']+' not in '", cause)):
        key = unknown_key.group(1)
        parent, _, leaf = key.rpartition(".")
        known = _known_keys(parent, [item for item in overrides if _key_of(item) != key], config_name)
        hint = _closest(leaf, known)
        hint = hint.replace("did you mean ", f"did you mean {parent + '.' if parent else ''}")
        return f"{key} is not a config key{hint} (to add a new key on purpose: +{key}=...)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else type(error).__name__


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _known_keys(parent: str, overrides: list[str], config_name: str = "train") -> list[str]:
    groups = [item for item in overrides if "=" in item and "." not in item.split("=", 1)[0]]
    try:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            config = compose(config_name, overrides=[item for item in groups if not item.startswith("hydra")])
        node = OmegaConf.select(config, parent) if parent else config
        return [str(key) for key in node.keys()] if isinstance(node, DictConfig) else []
    except Exception:  # the hint is best effort
        return []


def compose_command_line(argv: list[str], return_hydra_config: bool = False) -> DictConfig:
    """Compose ``train.py``'s config for these arguments (no run directory is made).

    Raises:
        ConfigError: for a composition error, in one line.
    """
    overrides = [arg for arg in argv if not arg.startswith("-")]
    try:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return compose("train", overrides=overrides, return_hydra_config=return_hydra_config)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        raise ConfigError(explain_composition_error(error, overrides)) from None


def check_command_line(argv: list[str]) -> Optional[DictConfig]:
    """Compose and check a single run's command line; None when Hydra should handle it (flags, ``-m``).

    Raises:
        ConfigError: one line naming the problem.
    """
    if any(arg.split("=", 1)[0] in FLAGS_THAT_SKIP for arg in argv) or is_multirun(argv):
        return None
    cfg = compose_command_line(argv, return_hydra_config=True)
    if cfg.get("resume"):
        return cfg  # a resumed run is checked once its own config is restored
    check_config(cfg, [arg for arg in argv if not arg.startswith("-")])
    return cfg


def runs_root(cfg: DictConfig) -> Path:
    """Where ``resume=latest`` looks: ``hydra.run.dir`` itself when it already holds a checkpoint
    (a requeued job with a fixed run directory), else its parent (this task's runs)."""
    from undertale.runtime.runs import RunDirectory

    run_dir = Path(str(OmegaConf.select(cfg, "hydra.run.dir", default="outputs/run")))
    return run_dir if RunDirectory(run_dir).has_checkpoint() else run_dir.parent
