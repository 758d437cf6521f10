"""Continue a run: ``resume=<run dir>`` or ``resume=latest``, with that run's own config.

A resumed run is the run it names: its composed ``config.yaml`` is restored,
not today's defaults. Keys given on the command line with ``resume=`` must
either repeat the run's values, or be one of :data:`ALLOWED_ON_RESUME` (where
the run continues: hardware, loader processes, a new step or time budget).
Anything else is refused in one line naming the keys.

The run's loggers are its own too (``logger`` of its ``config.yaml``, whole: today's default
``logger=wandb`` adds no W&B run to a ``logger=csv`` run), and each continues its history
(:mod:`undertale.training.history`). ``logger=<option>`` on the resume command line replaces them for this
session, since where metrics go changes nothing the run computes; a later resume goes back to the run's own
loggers unless it names them again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from undertale.runtime.runs import RunDirectory
from undertale.runtime.errors import UsageError

LATEST = "latest"
# Keys a resumed run may change: where and how long it runs, not what it computes.
ALLOWED_ON_RESUME = (
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.num_nodes",
    "data.num_workers",
    "data.pin_memory",
    "data.workers",
    "paths.cache_dir",
    "compile",
    "logger.wandb.mode",
)
IGNORED_ON_RESUME = ("resume", "ckpt_path", "hydra")
LOGGERS = "logger"  # the group a resumed run takes from the run, unless named on the command line
BUDGETS = ("trainer.max_steps", "trainer.max_time")


@dataclass
class Resumption:
    """What a resumed run continues from."""

    run: RunDirectory
    checkpoint: Path
    config: DictConfig
    notes: list[str] = field(default_factory=list)


def latest_run(runs_root: Path) -> Optional[RunDirectory]:
    """The newest run directory under ``runs_root`` (or ``runs_root`` itself) that holds a checkpoint, or None."""
    if not runs_root.is_dir():
        return None
    runs = [RunDirectory(runs_root)] + [RunDirectory(path) for path in runs_root.iterdir() if path.is_dir()]
    runs = [run for run in runs if run.has_checkpoint()]
    return max(runs, key=lambda run: run.checkpoint_files()[0].stat().st_mtime_ns, default=None)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _value(config: DictConfig, key: str) -> Any:
    value = OmegaConf.select(config, key, default=None)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def restore_config(saved: DictConfig, given: DictConfig, overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """The saved config with the allowed overrides of ``given`` applied.

    Returns:
        The config to run and notes on what the overrides change.

    Raises:
        UsageError: naming every overridden key that would change what the run computes.
    """
    given = OmegaConf.masked_copy(given, [key for key in given if key != "hydra"])
    config = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(given, resolve=True)), saved)
    for key, node in saved.items():  # a part of another class (task=similarity's data=pairs): the run's, whole
        if isinstance(node, DictConfig) and node.get("_target_") != OmegaConf.select(given, f"{key}._target_"):
            config[key] = node
    conflicts, notes = [], []
    named = [override for override in overrides if _key(override) == LOGGERS]
    if LOGGERS in saved or named:  # the run's loggers, or those named now: never a merge of both
        config[LOGGERS] = (_value(given, LOGGERS) or {}) if named else saved[LOGGERS]
    if named and (old := sorted(saved.get(LOGGERS) or {})) != (new := sorted(given.get(LOGGERS) or {})):
        notes.append(f"logger: {', '.join(old) or 'none'} -> {', '.join(new) or 'none'} for this session")
    for override in overrides:
        key = _key(override)
        if key.split(".")[0] in IGNORED_ON_RESUME or key == LOGGERS:
            continue
        if "." in key or key in ALLOWED_ON_RESUME:
            changes = [key]
        else:  # a group option (trainer=gpu): compare its keys; budgets are kept unless given by name
            node = _value(given, key)
            changes = [f"{key}.{name}" for name in node if not str(name).startswith("_")] if isinstance(node, dict) else [key]
            changes = [name for name in changes if name not in BUDGETS] or [key]
        for name in changes:
            old, new = _value(saved, name), _value(given, name)
            if old == new:
                continue
            if name not in ALLOWED_ON_RESUME:
                conflicts.append(f"{name} (run: {old!r}, given: {new!r})")
                continue
            OmegaConf.update(config, name, new, force_add=True)
            if name == "trainer.max_steps":
                schedule = _value(saved, "optimizer.schedule") or "the"
                notes.append(
                    f"trainer.max_steps {old} -> {new}: the {schedule} learning-rate schedule is recomputed "
                    f"for {new} steps, so the learning rate from the resumed step on differs from the original run's"
                )
            else:
                notes.append(f"{name}: {old!r} -> {new!r}")
    if conflicts:
        raise UsageError(
            f"resume continues a run with its own config; these overrides change it: {'; '.join(conflicts)}. "
            f"Drop them, or start a new run (allowed with resume=: {', '.join(ALLOWED_ON_RESUME)}, {LOGGERS}=<option>)"
        )
    return config, notes


def resumption(resume: str, given: DictConfig, overrides: list[str], runs_root: Optional[Path]) -> Optional[Resumption]:
    """Resolve ``resume=`` into the run, its intact checkpoint and its config.

    Arguments:
        resume: a run directory, or ``latest`` (the newest run under ``runs_root`` with a checkpoint).
        given: the config composed from this command line.
        overrides: this command line's overrides (``key=value``).
        runs_root: where this task's runs live (for ``latest``).

    Returns:
        None for ``latest`` when there is no earlier run (a new run starts).

    Raises:
        UsageError: for a directory that is not a run, a run without an intact checkpoint, or
            overrides that would change the run.
    """
    if resume == LATEST:
        run = latest_run(runs_root) if runs_root else None
        if run is None:
            return None
    else:
        run = RunDirectory(Path(resume).expanduser().resolve())
        if not run.path.is_dir():
            raise UsageError(f"resume={resume}: no such run directory")
    if not run.config.is_file():
        raise UsageError(f"resume={resume}: {run.path} has no config.yaml; is it a run directory?")
    checkpoint, skipped = run.intact_checkpoint()
    if checkpoint is None:
        found = "; ".join(skipped) if skipped else f"no checkpoint in {run.checkpoints}"
        raise UsageError(f"resume={resume}: nothing to resume from ({found})")
    config, notes = restore_config(OmegaConf.load(run.config), given, overrides)
    config.resume = str(run.path)
    if skipped:
        notes = [f"{line}; resuming from {checkpoint.name} instead" for line in skipped] + notes
    return Resumption(run, checkpoint, config, notes)
