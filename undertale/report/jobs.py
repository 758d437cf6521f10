"""Find the runs under the directories given to the report and read what each one wrote (no network)."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from undertale.runtime.runs import RunDirectory
from undertale.runtime.errors import UsageError
from undertale.report.history import History, read_history

FAILED, FINISHED = "failed", "finished"
SKIPPED_FOLDERS = {"wandb", "checkpoints", "csv", ".hydra", "__pycache__"}
MAX_DEPTH = 3  # <dir>/<task>/multiruns/<time>/<job>: a whole outputs/<task> folder is searched


@dataclass
class Job:
    """One run directory, as the report sees it.

    Arguments:
        run: the run directory.
        label: its short name in tables and legends (its path below the directories given).
        metrics: ``metrics.json`` (empty when missing).
        config: ``config.yaml``, resolved (empty when missing).
        overrides: ``overrides.yaml``, the command-line overrides it was started with.
        environment: ``environment.json`` (empty when missing).
        history: the metrics it logged over steps.
        evaluation: ``evaluation.json`` when ``evaluate.py`` was run on it.
        similarity: ``similarity.json`` when the similarity benchmark was run on it.
        problem: why it counts as failed although its ``metrics.json`` does not say so.
    """

    run: RunDirectory
    label: str = ""
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    history: History = field(default_factory=History)
    evaluation: Optional[dict] = None
    similarity: Optional[dict] = None
    problem: Optional[str] = None

    @property
    def status(self) -> str:
        """``finished``, ``diverged``, ``preempted`` or ``failed``."""
        if self.problem:
            return FAILED
        return str(self.metrics.get("status") or FINISHED)

    @property
    def error(self) -> str:
        return self.problem or str(self.metrics.get("error") or "")

    @property
    def world_size(self) -> Optional[int]:
        value = self.metrics.get("world_size")
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def command(self) -> str:
        """The command that reproduces this job: ``python train.py <its overrides>``."""
        return " ".join(["python", "train.py", *(shlex.quote(override) for override in self.overrides)])


def _is_run(path: Path) -> bool:
    run = RunDirectory(path)
    return run.metrics.is_file() or run.config.is_file()


def _is_sweep(path: Path) -> bool:
    return (path / "multirun.yaml").is_file()


def _job_folders(sweep: Path) -> list[Path]:
    """A sweep's job folders: the runs, and the numbered folders of jobs that died before writing one."""
    folders = [child for child in sweep.iterdir() if child.is_dir() and child.name not in SKIPPED_FOLDERS]
    return [child for child in folders if _is_run(child) or child.name.isdigit()]


def _runs_below(path: Path, depth: int) -> list[Path]:
    if _is_run(path):
        return [path]
    if _is_sweep(path):
        return _job_folders(path)
    if depth == 0:
        return []
    found = []
    for child in sorted(path.iterdir()):
        if child.is_dir() and child.name not in SKIPPED_FOLDERS and not child.is_symlink():
            found.extend(_runs_below(child, depth - 1))
    return found


def _order(path: Path) -> tuple:
    """Job folders in job order (``2`` before ``10``), others by name."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts)


def find_runs(paths: list[str]) -> list[Path]:
    """Every run directory in ``paths``: a run, a sweep (multirun) directory, or a folder holding them.

    Raises:
        UsageError: a path that does not exist, a run directory without ``metrics.json`` or ``config.yaml``,
            or no runs at all.
    """
    found: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.is_dir():
            raise UsageError(f"{given} is not a directory" if path.exists() else f"{given} does not exist")
        run = RunDirectory(path)
        if _is_run(path):
            for required in (run.metrics, run.config):
                if not required.is_file():
                    raise UsageError(f"{given} has no {required.name}: not a finished run directory "
                                     "(still running, or killed before it wrote one?)")
        runs = _runs_below(path, MAX_DEPTH)
        if not runs:
            raise UsageError(f"no runs found in {given} (a run directory holds {run.metrics.name} and "
                             f"{run.config.name}; a sweep directory holds one folder per job)")
        found.extend(sorted(runs, key=_order))
    unique: dict[Path, Path] = {}
    for path in found:  # the same run given twice (or through a link) is one job
        unique.setdefault(path.resolve(), path.absolute())
    return list(unique.values())


def _read_json(path: Path, job: Job) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        job.problem = job.problem or f"{path.name} is unreadable ({error})"
        return None
    return value if isinstance(value, dict) else None


def _read_yaml(path: Path, job: Job) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        job.problem = job.problem or f"{path.name} is unreadable ({str(error).splitlines()[0]})"
        return None


def read_job(path: Path, label: str = "") -> Job:
    """Everything the report needs from one run directory; what is missing or unreadable marks it failed."""
    run = RunDirectory(path)
    job = Job(run=run, label=label or path.name)
    job.metrics = _read_json(run.metrics, job) or {}
    if not run.metrics.is_file():
        job.problem = f"no {run.metrics.name} (killed, or still running)"
    job.config = _read_yaml(run.config, job) or {}
    overrides = _read_yaml(run.overrides, job) or []
    job.overrides = [str(item) for item in overrides] if isinstance(overrides, list) else []
    job.environment = _read_json(run.environment, job) or {}
    job.evaluation = _read_json(run.evaluation, job)
    job.similarity = _read_json(run.similarity, job)
    job.history = read_history(run)
    return job


def read_jobs(paths: list[str]) -> list[Job]:
    """The jobs under ``paths`` (see :func:`find_runs`), labelled by their path below the common folder.

    Raises:
        UsageError: see :func:`find_runs`.
    """
    runs = find_runs(paths)
    root = Path(os.path.commonpath(runs)) if len(runs) > 1 else runs[0].parent
    return [read_job(run, str(run.relative_to(root)) if run != root else run.name) for run in runs]
