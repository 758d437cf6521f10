"""Which data an evaluation reads, always with the run's own tokenizer.

Without ``data`` overrides it is the run's own data (its ``config.yaml`` settings, prepared from the
cache; by default its validation split). ``data=<option>`` or ``data.source``/``data.paths``/
``data.directory`` choose other data instead, prepared with the run's tokenizer (every split by default).
Loader settings (``data.batch_size``, ``data.num_workers``, ...) may change either way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from undertale.settings.store import INTERNAL_KEYS
from undertale.data.config import DataConfig
from undertale.runtime.errors import UsageError
from undertale.runtime.runs import RunDirectory

SPLITS = ("validation", "train", "all")
SOURCE_KEYS = ("source", "paths", "directory")
LOADER_KEYS = ("batch_size", "num_workers", "pin_memory", "cache_dir", "workers", "shuffle_buffer")


@dataclass(frozen=True)
class DataChoice:
    """The data to evaluate.

    Arguments:
        data: its settings, with ``tokenizer`` set to the run's ``tokenizer.json``.
        own: True for the run's own data.
        split: ``validation``, ``train`` or ``all``.
        seed: the seed of the per-batch masking.
    """

    data: DataConfig
    own: bool
    split: str
    seed: int

    def describe(self) -> str:
        """E.g. ``the validation split of the run's data``, ``every split of /usr/bin/true``."""
        if self.own:
            where = "the run's data"
        else:
            where = ", ".join(self.data.paths or []) or self.data.directory or "this machine's binaries"
        return f"{'every split' if self.split == 'all' else f'the {self.split} split'} of {where}"


def override_key(override: str) -> str:
    """The key a command-line override sets: ``+data.paths=[...]`` -> ``data.paths``."""
    return override.split("=", 1)[0].lstrip("+~")


def data_keys(overrides: Sequence[str]) -> list[str]:
    """The ``data`` keys set on the command line (``data`` itself for a group choice such as ``data=binaries``)."""
    keys = [override_key(override) for override in overrides]
    return [key for key in keys if key == "data" or key.startswith("data.")]


def _plain(node: Any) -> dict:
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return {key: value for key, value in values.items() if key not in INTERNAL_KEYS}


def _data_config(values: dict, context: str = "") -> DataConfig:
    try:
        return DataConfig(**values)
    except (TypeError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"{context}data.{message}" if message[:1].islower() else f"{context}{message}") from None


def choose_data(cfg: DictConfig, run_config: DictConfig, run: RunDirectory, overrides: Sequence[str]) -> DataChoice:
    """The data an evaluation reads, from its config and command line and the run's ``config.yaml``.

    Arguments:
        cfg: the evaluation's composed config (``data``, ``split``, ``seed``, ``paths.cache_dir``: where the data
            is prepared, null for the cache the run used).
        run_config: the run's ``config.yaml``.
        run: the run directory.
        overrides: the evaluation's command-line overrides.

    Raises:
        UsageError: for an unknown split, a setting that would change the run's corpus without choosing
            other data, ``data.tokenizer`` (the run's is always used), or data settings that cannot run.
    """
    split = cfg.get("split")
    if split is not None and split not in SPLITS:
        raise UsageError(f"split={split} is not a split; choose {', '.join(SPLITS)} (null: validation of the "
                         "run's own data, all of other data)")
    keys = data_keys(overrides)
    if "data.tokenizer" in keys:
        raise UsageError("data.tokenizer cannot be set: an evaluation always uses the run's own tokenizer.json")
    run_data = _plain(run_config.data)
    own = not any(key == "data" or key.removeprefix("data.") in SOURCE_KEYS for key in keys)
    seed = cfg.get("seed")
    seed = run_data.get("seed", 0) if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be an integer >= 0 or null (the run's data.seed), got {seed!r}")
    composed = _plain(cfg.data)
    cache = OmegaConf.select(cfg, "paths.cache_dir")
    cache = {"cache_dir": cache} if cache else {}  # null: the cache the run used
    if own:
        changed = [key for key in keys if key.removeprefix("data.") not in LOADER_KEYS]
        if changed:
            raise UsageError(
                f"{changed[0]} would change the run's corpus; to evaluate other data choose it with data=binaries "
                "data.paths=[...] (or data=parquet data.directory=...); loader settings such as data.batch_size "
                "may change"
            )
        loader = {key.removeprefix("data."): composed[key.removeprefix("data.")] for key in keys}
        values = run_data | cache | loader | {"tokenizer": str(run.tokenizer)}
        return DataChoice(_data_config(values, "the run's data settings: "), True, split or "validation", seed)
    values = composed | {"tokenizer": str(run.tokenizer), "seed": seed,
                         "cache_dir": composed.get("cache_dir") or run_data.get("cache_dir")}
    return DataChoice(_data_config(values), False, split or "all", seed)


def split_files(directory: Path, split: str) -> list[Path]:
    """The prepared shards of ``split`` (``all``: every split).

    Raises:
        UsageError: when the split has no shards.
    """
    from undertale.data.encode import tokenized_files

    try:
        return tokenized_files(directory) if split == "all" else tokenized_files(directory, split)
    except FileNotFoundError:
        raise UsageError(
            f"the data has no {split} split ({directory / split} holds no shards); choose split=all or another split"
        ) from None


def cached_tokenized(data: DataConfig, tokenizer: Path, sequence_length: int) -> Optional[Path]:
    """The tokenized shards that ``prepare`` built for ``data`` and ``tokenizer``, if they are in the cache.

    Nothing is built: this finds a run's training data when other data is evaluated. None when
    they are not there (or the cache layout is not the one this code knows).
    """
    from undertale.data import pipeline
    from undertale.data.corpus.build import CorpusOptions
    from undertale.data.encode import TOKENIZED_FORMAT
    from undertale.data.tokenizer import load_tokenizer

    try:
        cache = data.cache
        if data.source == "parquet":
            shards = Path(data.directory).expanduser()
            if pipeline.is_tokenized(shards):
                return shards
            corpus_id = pipeline._files_digest(shards)
        else:
            options = CorpusOptions(seed=data.seed, validation_fraction=data.validation_fraction,
                                    max_functions=data.max_functions, limits=data.limits)
            corpus = cache / "corpus" / pipeline._digest(sorted(data.paths or []), options.__dict__)
            corpus_id = json.loads((corpus / "manifest.json").read_text())["key"][:16]
        model = load_tokenizer(tokenizer, sequence_length)
        tokenizer_id = hashlib.sha256(model.to_str().encode()).hexdigest()[:16]
        tokenized = cache / "tokenized" / f"{corpus_id}-{tokenizer_id}-v{TOKENIZED_FORMAT}"
        return tokenized if (tokenized / pipeline.COMPLETE).is_file() else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def run_data(run_config: DictConfig, run: RunDirectory) -> Optional[DataConfig]:
    """The run's own data settings with its tokenizer, or None when they no longer load."""
    try:
        return DataConfig(**(_plain(run_config.data) | {"tokenizer": str(run.tokenizer)}))
    except (TypeError, ValueError):
        return None
