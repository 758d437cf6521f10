"""The swept values of each job: the overrides (or, failing those, the config keys) that differ between jobs."""

from __future__ import annotations

from typing import Any

from undertale.report.jobs import Job

NOT_COMPARED = ("resume", "ckpt_path")  # where a run continued from, not what it is (as in its W&B name)
DEFAULT = "(default)"


def parse_override(text: str) -> tuple[str, Any]:
    """``key`` and ``value`` of an override (``+key=v``, ``++key=v``, ``~key`` deletes)."""
    deleted = text.startswith("~")
    key, separator, value = text.lstrip("+~").partition("=")
    if deleted and not separator:
        return key, "(deleted)"
    return key, value


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of every leaf (lists are leaves): ``{"optimizer.lr": 0.001, ...}``."""
    if not isinstance(config, dict):
        return {prefix: config} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def number(value: Any) -> Any:
    """``value`` as an int or float when it reads as one (``"1e-3"`` too), else unchanged."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
    return value


def override_keys(job: Job) -> dict[str, Any]:
    """The job's overrides as ``{key: value}``, in command-line order."""
    pairs = (parse_override(text) for text in job.overrides)
    return {key: value for key, value in pairs if key not in NOT_COMPARED and not key.startswith(("hydra.", "hydra/"))}


def value_of(job: Job, key: str, flat: dict[str, Any]) -> Any:
    """What ``key`` was in ``job``: its resolved config value, else its override, else ``(default)``."""
    if key in flat and not isinstance(flat[key], dict):
        return flat[key]
    overrides = override_keys(job)
    return number(overrides[key]) if key in overrides else DEFAULT


def _same(values: list[Any]) -> bool:
    return len({repr(value) for value in values}) <= 1


def swept_values(jobs: list[Job]) -> tuple[list[str], list[dict[str, Any]]]:
    """The swept keys and each job's value of them.

    The keys are the overrides whose values differ between jobs (a single run: all its overrides); when
    no override differs, the config keys that do. Jobs that died before writing their config are left
    out of the comparison.

    Returns:
        The keys in command-line order, and one ``{key: value}`` per job (in the order of ``jobs``).
    """
    flats = [flatten(job.config) for job in jobs]
    known = [index for index, job in enumerate(jobs) if job.config or job.overrides]
    candidates: dict[str, None] = {}
    for index in known:
        candidates |= dict.fromkeys(override_keys(jobs[index]))
    keys = list(candidates)
    if len(known) > 1:
        keys = [key for key in keys if not _same([value_of(jobs[i], key, flats[i]) for i in known])]
        if not keys:
            leaves = dict.fromkeys(key for index in known for key in flats[index])
            keys = [key for key in leaves if not _same([flats[i].get(key, DEFAULT) for i in known])]
    values = [{key: value_of(job, key, flat) if job.config or job.overrides else None for key in keys}
              for job, flat in zip(jobs, flats)]
    return keys, values
