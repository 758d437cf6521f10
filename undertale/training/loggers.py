"""Experiment loggers from the ``logger`` config group, and the end of a W&B run.

Each entry of the group is a node with a ``_target_`` (a Lightning logger);
the training entry adds only what the run decides: the save directory and,
for W&B, the run's name, group, id, job type and config. A resumed run's
loggers continue the history of its earlier sessions (:mod:`undertale.training.history`).
"""

from __future__ import annotations

import socket
import sys
import warnings
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from undertale.runtime.runs import RunDirectory
from undertale.training.history import checkpoint_step, csv_rows_before, next_wandb_step

DEFAULT_WANDB_URL = "https://api.wandb.ai"
REACH_TIMEOUT = 5.0


def build_loggers(config: Optional[DictConfig], save_dir: Path, wandb_arguments: dict[str, Any],
                  resumed_from: Optional[Path] = None) -> list[Logger]:
    """Instantiate every logger of the group (an empty group: none).

    Arguments:
        config: the ``logger`` group, ``{name: {_target_: ..., ...}}``.
        save_dir: the run directory.
        wandb_arguments: ``name``, ``group``, ``id``, ``job_type``, ``config`` for a W&B logger;
            a ``name`` or ``group`` set in the config wins.
        resumed_from: the checkpoint a resumed run continues from: each logger continues its history
            (CSV rows and TensorBoard events before the checkpoint's step kept, W&B's step counter continued).
    """
    step = checkpoint_step(resumed_from) if resumed_from is not None else None
    loggers = []
    for options in (config or {}).values():
        if options is None or "_target_" not in options:  # e.g. an experiment's logger.wandb.tags under logger=csv
            continue
        kind = get_class(options._target_)
        extra: dict[str, Any] = {"save_dir": str(save_dir)}
        if issubclass(kind, WandbLogger):
            extra |= {key: value for key, value in wandb_arguments.items() if options.get(key) is None}
            extra["resume"] = "allow" if extra.get("id") else None
            if str(options.get("mode", "offline")) == "online":
                extra["mode"] = online_or_offline(wandb_base_url())
        if issubclass(kind, TensorBoardLogger) and step is not None and options.get("purge_step") is None:
            extra["purge_step"] = step  # hides the events a killed session logged after its checkpoint
        # partial, then called: `config` is also the name of instantiate's own first parameter
        run_config = extra.pop("config", None)
        factory = instantiate(options, **extra, _partial_=True, _convert_="all")
        logger = factory(config=run_config) if run_config is not None else factory()
        if isinstance(logger, WandbLogger):  # Lightning passes anonymous=None, which recent wandb warns about
            logger._wandb_init.pop("anonymous", None)
        if step is not None and rank_zero_only.rank == 0:
            _continue_history(logger, step, [Path(save_dir), RunDirectory.of_checkpoint(resumed_from).path])
        loggers.append(logger)
    return loggers


def _continue_history(logger: Logger, step: int, run_directories: list[Path]) -> None:
    """Make a resumed run's ``logger`` continue the history its earlier sessions wrote (up to ``step``)."""
    if isinstance(logger, CSVLogger):
        metrics = Path(logger.log_dir) / "metrics.csv"
        rows = csv_rows_before(metrics, step)
        with warnings.catch_warnings():  # "Previous log files ... will be deleted": they are written back below
            warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted")
            writer = logger.experiment  # Lightning's writer deletes metrics.csv when it starts
        writer.metrics = rows
        writer.save()
    elif isinstance(logger, WandbLogger) and logger._wandb_init.get("id"):
        run_id = logger._wandb_init["id"]
        offline = [path for directory in dict.fromkeys(run_directories)
                   for path in RunDirectory(directory).offline_runs()]
        first = next_wandb_step(offline, run_id)  # read before this session's own offline run exists
        experiment = logger.experiment
        if experiment.step < first:  # offline: W&B restarts at 0; online it already continues the server's count
            experiment.log({}, step=first, commit=False)


def wandb_base_url() -> str:
    import os

    return os.environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_URL


def online_or_offline(url: str, timeout: float = REACH_TIMEOUT) -> str:
    """``online`` when the W&B server at ``url`` accepts a connection within ``timeout`` s, else ``offline``.

    Without this check, ``wandb.init`` retries an unreachable server for minutes
    before failing. The fallback is announced on stderr in one line.
    """
    parsed = urlparse(url)
    host = parsed.hostname or "api.wandb.ai"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "online"
    except OSError as error:
        print(
            f"warning: W&B server {url} is unreachable ({error.__class__.__name__}: {error}); logging offline "
            "instead, upload later with `wandb sync <run dir>/wandb/offline-run-*`",
            file=sys.stderr,
        )
        return "offline"


def wandb_logger(loggers: list[Logger]) -> Optional[WandbLogger]:
    return next((logger for logger in loggers if isinstance(logger, WandbLogger)), None)


def finish_wandb(loggers: list[Logger], status: str) -> None:
    """End this job's W&B run with its status, so the next sweep job starts its own.

    ``finished`` exits 0; ``preempted`` marks the run preempting and exits 1;
    ``failed`` and ``diverged`` exit 1.
    """
    logger = wandb_logger(loggers)
    if logger is None or logger._experiment is None:
        return
    import wandb

    run = logger.experiment
    run.summary["status"] = status
    if status == "preempted":
        run.mark_preempting()
    wandb.finish(exit_code=0 if status == "finished" else 1)
