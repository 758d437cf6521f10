"""What ``train.py`` does around Hydra: check the command line first, turn stops into exit codes.

Before Hydra makes a run directory, :func:`before_hydra` composes and checks
the config (a mistake is one line on stderr and exit code 2) and points a
resumed run's Hydra directory at the run it continues. :func:`run_job` runs
one job and maps how it ended to the exit code (see ``train.py``).
"""

from __future__ import annotations

import sys
from typing import NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from undertale.training.checks import check_command_line, check_config, check_outputs, runs_root
from undertale.runtime.errors import Diverged, Preempted, UsageError, WorkerLost, report_usage_error
from undertale.runtime.outputs import expected_failure
from undertale.training.resume import resumption


def _fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def before_hydra(argv: list[str]) -> list[str]:
    """Check ``train.py``'s arguments before Hydra runs; the arguments Hydra should get.

    A resumed run (``resume=<dir>`` or ``resume=latest``) gets ``hydra.run.dir``
    set to the run it continues, so its log continues there too; ``resume=latest``
    without an earlier run becomes a new run.
    """
    arguments = argv[1:]
    try:
        cfg = check_command_line(arguments)
        if cfg is None:
            return argv
        if not cfg.get("resume"):
            check_outputs(cfg)
            return argv
        overrides = [arg for arg in arguments if not arg.startswith("-")]
        resumed = resumption(str(cfg.resume), cfg, overrides, runs_root(cfg))
        if resumed is None:
            print(f"resume=latest: no run with a checkpoint under {runs_root(cfg)}; starting a new run")
            check_outputs(cfg)
            return [arg if not arg.startswith("resume=") else "resume=null" for arg in argv]
        check_config(resumed.config)
        check_outputs(resumed.config, resumed.run.path)
    except UsageError as error:  # ConfigError and OutputError among them: one line, exit code 2
        sys.exit(report_usage_error(error))
    arguments = [arg if not arg.startswith("resume=") else f"resume={resumed.run.path}" for arg in arguments]
    if not any(arg.startswith("hydra.run.dir=") for arg in arguments):
        arguments += [f"hydra.run.dir={resumed.run.path}", "hydra.output_subdir=null"]
    return [argv[0], *arguments]


def run_job(cfg: DictConfig) -> float:
    """Train one job; the objective for sweepers (the task's ``monitor``, e.g. ``val/accuracy``), or exit with
    the stop's code."""
    from undertale.training.run import train  # torch and Lightning load here, after the command line was checked

    try:
        metrics = train(cfg)
    except Exception as error:  # UsageError (ConfigError, RunError, OutputError), Diverged, WorkerLost, a full disk
        stop = (error if isinstance(error, (Diverged, Preempted, WorkerLost))
                else expected_failure(error))  # a full disk, named so
        if stop is None or (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
            raise  # a bug keeps its traceback; under -m, Hydra records the job as failed
        _fail(str(stop), stop.exit_code)
    return metrics.get(cfg.task.get("monitor", "val/accuracy"), float("nan"))
