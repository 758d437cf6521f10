"""The function ``train.py`` calls: check, build the task's parts, instantiate the rest, fit, summarise.

Every part comes from its config group through ``hydra.utils.instantiate``:
``task`` (a :class:`~undertale.tasks.Task`, which builds the LightningModule and
the data module from ``model``, ``optimizer``, ``data`` and its own groups),
``logger``, ``callbacks`` and ``trainer``. Nothing here knows which task runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import lightning
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar as LightningProgressBar
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from undertale.settings.store import call_with_offered
from undertale.runtime.environment import environment, resolve_compile, resolve_precision
from undertale.runtime.runs import RunDirectory
from undertale.tasks import Task, TaskParts
from undertale.data.workers import loader_failure
from undertale.training.callbacks import (DataEpoch, ModelSummary, NonFiniteLossGuard, Preemption, StepLog,
                                          StopTraining, ThroughputMonitor, slurm_requeue)
from undertale.training.checkpointing import AtomicCheckpointIO
from undertale.training.checks import check_config
from undertale.runtime.errors import ConfigError, Diverged, Preempted, RunError, first_line
from undertale.training.history import METRIC_PREFIXES, checkpoint_step, latest_metrics
from undertale.training.loggers import build_loggers, finish_wandb, wandb_logger
from undertale.training.resume import LATEST, resumption

# Our dataset splits rows between loader workers itself, so its __len__ is exact.
warnings.filterwarnings("ignore", message=r".*IterableDataset.*has `__len__` defined.*")
# Mid-epoch resume is handled by the data module (it skips the batches already trained on).
warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


NOISE = (
    "litlogger",  # an advertisement for Lightning's cloud logger
    "already configured with model summary",  # ours replaces Lightning's
    "was configured so 100% of the batches will be used",  # limit_val_batches=1.0, the default
)


class _DropNoise(logging.Filter):
    """Lightning's lines that tell a user nothing: see ``NOISE``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in NOISE)


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_DropNoise())

log = logging.getLogger(__name__)  # the run's log (train.log under Hydra)
STOPPED = ("preempted", "interrupted")  # a signal stopped training after a checkpoint (metrics.json's status)


def _hydra() -> Optional[HydraConfig]:
    return HydraConfig.get() if HydraConfig.initialized() else None


def _overrides() -> list[str]:
    hydra = _hydra()
    return list(hydra.overrides.task) if hydra else []


def _check_launch(cfg: DictConfig) -> None:
    hydra = _hydra()
    trainer = cfg.trainer
    strategy = trainer.strategy.get("_target_", "") if isinstance(trainer.strategy, DictConfig) else trainer.strategy
    launched = "LOCAL_RANK" in os.environ or "SLURM_PROCID" in os.environ  # torchrun/srun started every rank
    spawns = any(name in str(strategy).lower() for name in ("ddp", "fsdp")) and not launched
    devices = trainer.devices
    many = devices in (-1, "auto") or (isinstance(devices, int) and devices > 1) or isinstance(devices, (list, tuple))
    if hydra and hydra.mode == RunMode.MULTIRUN and spawns and many and trainer.accelerator != "cpu":
        raise RunError(
            "a -m sweep cannot start multi-GPU DDP/FSDP jobs from one process (each DDP rank would re-run the sweep); "
            "sweep with hydra/launcher=slurm (SLURM, via submitit), or run each trainer=ddp job on its own"
        )


def _job_name(cfg: DictConfig) -> tuple[str, Optional[str]]:
    """W&B run name (the job's overrides) and group (the sweep's name under -m)."""
    hydra = _hydra()
    if hydra is None:
        return cfg.task_name, None
    name = hydra.job.override_dirname or cfg.task_name
    group = f"{cfg.task_name}-{Path(hydra.sweep.dir).name}" if hydra.mode == RunMode.MULTIRUN else None
    return name, group


def _write_run_files(run: RunDirectory, cfg: DictConfig, tokenizer: Path, env: dict) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    run.config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    run.overrides.write_text(OmegaConf.to_yaml(OmegaConf.create(_overrides())))
    shutil.copyfile(tokenizer, run.tokenizer)
    run.environment.write_text(json.dumps(env, indent=2))


def _callbacks(cfg: DictConfig, run: RunDirectory, tokenizer: Path, flops_per_token: float) -> list[lightning.Callback]:
    """The ``callbacks`` group, each offered what only the run knows (by parameter name), plus the entry's own."""
    offered = {"dirpath": str(run.checkpoints), "tokenizer": str(tokenizer)}
    callbacks: list[lightning.Callback] = []
    for options in (cfg.get("callbacks") or {}).values():
        if options is None:
            continue
        callbacks.append(call_with_offered(instantiate(options, _partial_=True, _convert_="all"), offered))
    return callbacks + [DataEpoch(), ThroughputMonitor(flops_per_token), StepLog(), ModelSummary()]


def _start(cfg: DictConfig) -> tuple[DictConfig, RunDirectory, Optional[Path], dict]:
    """The config to run, its run directory, the checkpoint to continue from and the W&B run to continue."""
    hydra = _hydra()
    fresh = RunDirectory(hydra.runtime.output_dir if hydra else "outputs/manual")
    if cfg.get("resume"):
        # resume=latest: the run directory itself when it holds a checkpoint (a requeued job with a fixed
        # hydra.run.dir, or a sweep job), else the newest run of this task
        own = fresh.has_checkpoint() or (hydra is not None and hydra.mode == RunMode.MULTIRUN)
        root = (fresh.path if own else fresh.path.parent) if cfg.resume == LATEST else None
        resumed = resumption(str(cfg.resume), cfg, _overrides(), root)
        if resumed is None:
            print(f"resume=latest: no run with a checkpoint under {root}; starting a new run")
            cfg = cfg.copy()
            cfg.resume = None
            return cfg, fresh, None, {}
        for note in resumed.notes:
            print(f"resume: {note}")
        return resumed.config, resumed.run, resumed.checkpoint, resumed.run.wandb_run()
    if cfg.get("ckpt_path"):
        checkpoint = Path(cfg.ckpt_path).expanduser().resolve()
        if not checkpoint.is_file():
            raise RunError(f"ckpt_path={cfg.ckpt_path} does not exist")
        return cfg, fresh, checkpoint, RunDirectory.of_checkpoint(checkpoint).wandb_run()
    return cfg, fresh, None, {}


def train(cfg: DictConfig) -> dict:
    """Train from a composed config; return the final metrics (also in ``metrics.json``).

    Raises:
        ConfigError: a value that cannot run (raised before any work).
        RunError: settings that cannot run together, with what to do instead.
        Diverged: the loss became non-finite.
        LoaderFailed: a loader worker failed or died (one line naming it; its workers are ended).
        Preempted: a signal stopped training (SIGTERM, SIGUSR1, Ctrl-C: after saving a checkpoint; a second
            Ctrl-C: at once). A ``SystemExit`` with code 128 + the signal; its notice is printed on stderr.
    """
    started = time.perf_counter()
    cfg, run, checkpoint, wandb_run = _start(cfg)
    check_config(cfg, _overrides())
    _check_launch(cfg)
    rank_zero = rank_zero_only.rank == 0
    lightning.seed_everything(cfg.seed, workers=True)

    task: Task = instantiate(cfg.task, _convert_="all")
    cfg = task.resolve(cfg, _overrides())  # e.g. the sizes of a pretrained run
    parts = task.build(cfg, progress=rank_zero)
    if rank_zero:
        print(f"data: {parts.description}")
    accelerator = str(cfg.trainer.accelerator)
    if resolve_compile(cfg.compile, accelerator):
        getattr(parts.module, "encoder", parts.module).compile()

    env = environment()
    name, group = _job_name(cfg)
    loggers = build_loggers(cfg.get("logger"), run.path, {
        "name": wandb_run.get("name") or name, "group": wandb_run.get("group") or group, "id": wandb_run.get("id"),
        "job_type": cfg.task_name,
        "config": OmegaConf.to_container(cfg, resolve=True) | {"environment": env, "vocab_size": parts.vocab_size},
    }, resumed_from=checkpoint)
    callbacks = _callbacks(cfg, run, parts.tokenizer, parts.flops_per_token) + list(parts.callbacks)
    trainer: lightning.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run.path),
        precision=resolve_precision(cfg.trainer.precision, accelerator), plugins=[AtomicCheckpointIO()],
        # callbacks.progress_bar=null draws none (Lightning would draw its own); StepLog's lines tell the progress
        enable_progress_bar=any(isinstance(callback, LightningProgressBar) for callback in callbacks),
    )
    if rank_zero and not cfg.get("resume"):  # a resumed run keeps the files it started with
        _write_run_files(run, cfg, parts.tokenizer, env)
    if rank_zero and (logger := wandb_logger(loggers)) is not None:
        experiment = logger.experiment
        run.wandb_file.write_text(json.dumps({"id": experiment.id, "name": experiment.name, "group": experiment.group}))

    guard = next((c for c in callbacks if isinstance(c, NonFiniteLossGuard)), None)
    preemption = next((c for c in callbacks if isinstance(c, Preemption)), None)
    status = "failed"
    try:
        try:
            trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=str(checkpoint) if checkpoint else None)
        except StopTraining:  # a signal during a validation: saved, and fit left at once
            pass
        status = "diverged" if guard and guard.diverged else _stop_status(preemption) or "finished"
        metrics = _summarise(trainer, run, task, parts, loggers, started, status) if trainer.is_global_zero else {}
    except BaseException as error:
        aborted = preemption is not None and preemption.aborted
        failure = None if aborted else loader_failure(error)  # a loader worker's, in one line, its workers ended
        status = "aborted" if aborted else "failed"
        if trainer.is_global_zero:  # a crashed run still says what happened, in valid JSON
            stop = failure or error
            reason = "a second Ctrl-C" if aborted else f"{type(stop).__name__}: {first_line(stop, 2000)}"
            run.metrics.write_text(json.dumps({
                "status": status, "error": reason,
                "global_step": trainer.global_step, "world_size": trainer.world_size,
                "seconds": round(time.perf_counter() - started, 1), "run_dir": str(run.path),
            }, indent=2))
        if aborted:
            raise _stopped(trainer, run, signal.SIGINT, f"aborted by a second Ctrl-C at step {trainer.global_step}, "
                                                        "not saved") from None
        if failure is not None:
            if failure.details:
                log.info("the loader worker's traceback:\n%s", failure.details)
            raise failure from None
        raise
    finally:
        finish_wandb(loggers, status)
    if status == "diverged":
        raise Diverged(guard.diverged)
    if status in STOPPED:
        message = preemption.message(trainer.global_step)
        if status == "preempted" and trainer.is_global_zero and (requeued := slurm_requeue()):
            message += f"; {requeued}"
        raise _stopped(trainer, run, preemption.signum, message)
    return metrics


def _stop_status(preemption: Optional[Preemption]) -> Optional[str]:
    """``preempted`` (SIGTERM, SIGUSR1) or ``interrupted`` (Ctrl-C) when a signal stopped training, else None."""
    if preemption is None or not preemption.signum:
        return None
    return "interrupted" if preemption.signum == signal.SIGINT else "preempted"


def _stopped(trainer: lightning.Trainer, run: RunDirectory, signum: int, message: str) -> Preempted:
    """The stop to raise, its notice printed (once, not as an error): what stopped, what was saved, how to go on."""
    if run.last_checkpoint.is_file():
        message += f"; continue with: python train.py resume={run.path}"
    if trainer.is_global_zero:
        print(message, file=sys.stderr, flush=True)
    return Preempted(signum, message)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: those become null."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _summarise(trainer: lightning.Trainer, run: RunDirectory, task: Task, parts: TaskParts, loggers: list,
               started: float, status: str) -> dict:
    logged = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith(METRIC_PREFIXES)}
    metrics = dict(logged)
    if trainer.ckpt_path:  # a resumed run: the latest value of each metric, also those this session did not log
        metrics = latest_metrics(run.metrics, logged, checkpoint_step(trainer.ckpt_path))
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    metrics |= {
        "status": status,
        "task": type(task).__name__,
        "global_step": trainer.global_step,
        "world_size": trainer.world_size,
        "epoch": trainer.current_epoch,
        "seconds": round(time.perf_counter() - started, 1),
        "best_checkpoint": best,
        "last_checkpoint": str(run.last_checkpoint) if run.last_checkpoint.is_file() else None,
        "run_dir": str(run.path),
    }
    extra, line = task.summarise(trainer, parts, metrics)
    metrics = {key: _finite(value) for key, value in (metrics | extra).items()}
    if (logger := wandb_logger(loggers)) is not None:
        metrics["wandb_id"] = logger.experiment.id
        for key, value in metrics.items():  # and, resumed, the metrics only earlier sessions logged
            if key.startswith("baseline/") or (key.startswith(METRIC_PREFIXES) and key not in logged):
                logger.experiment.summary[key] = value
    run.metrics.write_text(json.dumps(metrics, indent=2, allow_nan=False))
    print(f"\nrun directory: {run.path}")
    if line:
        print(line)
    return metrics


__all__ = ["ConfigError", "Diverged", "Preempted", "RunError", "train"]
