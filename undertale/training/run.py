"""The function ``train.py`` calls: data, model, collator, logger, callbacks, Trainer, fit, summary."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import lightning
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ..data.corpus import CorpusOptions
from ..data.datamodule import InstructionTraceDataModule
from ..data.encode import tokenized_files
from ..data.pipeline import PreparedData, prepare
from ..data.statistics import most_frequent_token_accuracy
from ..data.tokenizer import load_tokenizer, special_ids
from ..models.maskedlm import (
    InstructionTraceTransformerEncoderForMaskedLM,
    MaskedLMCollator,
    training_flops_per_token,
)
from .callbacks import DataEpoch, ThroughputMonitor
from .environment import environment
from .loggers import WANDB_ID_FILE, build_logger, finish_wandb

METRICS_FILE = "metrics.json"
# Our dataset splits rows between loader workers itself, so its __len__ is exact.
warnings.filterwarnings("ignore", message=r".*IterableDataset.*has `__len__` defined.*")
# Mid-epoch resume is handled by the data module (it skips the batches already trained on).
warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
LAST_CHECKPOINT = "last.ckpt"


class RunError(ValueError):
    """A configuration that cannot run, with what to do instead."""


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise data preparation between processes (torchrun/SLURM start all ranks at once)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".prepare.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_data(data: DictConfig, sequence_length: int, progress: bool) -> PreparedData:
    """Corpus, tokenizer and tokenized shards for the ``data`` config (cached; one process builds).

    Raises:
        RunError: for ``data=binaries`` without ``data.paths``.
    """
    if data.source == "binaries" and not data.paths:
        raise RunError("data=binaries needs data.paths=[file,directory,glob,...]; data=system reads this machine's binaries")
    with _locked(Path(data.cache_dir).expanduser()):
        return prepare(
            source=data.source,
            cache_dir=data.cache_dir,
            paths=list(data.paths) if data.paths else None,
            directory=data.directory,
            tokenizer=data.tokenizer,
            sequence_length=sequence_length,
            merges=data.merges,
            tokenizer_functions=data.tokenizer_functions,
            corpus_options=CorpusOptions(
                seed=data.seed, validation_fraction=data.validation_fraction, max_functions=data.max_functions
            ),
            workers=data.workers,
            packing=data.packing,
            progress=progress,
        )


def _hydra() -> Optional[HydraConfig]:
    return HydraConfig.get() if HydraConfig.initialized() else None


def run_directory(cfg: DictConfig) -> tuple[Path, Optional[Path], Optional[str]]:
    """The run directory, the checkpoint to resume from and the W&B id to continue.

    Raises:
        RunError: when ``resume`` or ``ckpt_path`` names something that does not exist.
    """
    hydra = _hydra()
    fresh = Path(hydra.runtime.output_dir) if hydra else Path(cfg.get("run_dir") or "outputs/manual")
    if cfg.get("resume"):
        run_dir = Path(cfg.resume).expanduser().resolve()
        checkpoint = run_dir / "checkpoints" / LAST_CHECKPOINT
        if not checkpoint.is_file():
            raise RunError(f"resume={cfg.resume}: no checkpoint at {checkpoint}; pass a run directory of a run that saved one")
        id_file = run_dir / WANDB_ID_FILE
        return run_dir, checkpoint, id_file.read_text().strip() if id_file.is_file() else None
    if cfg.get("ckpt_path"):
        checkpoint = Path(cfg.ckpt_path).expanduser().resolve()
        if not checkpoint.is_file():
            raise RunError(f"ckpt_path={cfg.ckpt_path} does not exist")
        id_file = checkpoint.parent.parent / WANDB_ID_FILE
        return fresh, checkpoint, id_file.read_text().strip() if id_file.is_file() else None
    return fresh, None, None


def resolve_precision(precision: Optional[str], accelerator: str) -> str:
    """``bf16-mixed`` on CUDA GPUs that support it, ``32-true`` elsewhere, unless set."""
    if precision is not None:
        return str(precision)
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def resolve_compile(setting: Any, accelerator: str) -> bool:
    if setting == "auto":
        return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return bool(setting)


def _check_launch(cfg: DictConfig) -> None:
    hydra = _hydra()
    trainer = cfg.trainer
    spawns = str(trainer.strategy).startswith("ddp") and "LOCAL_RANK" not in os.environ and "SLURM_PROCID" not in os.environ
    devices = trainer.devices
    many = devices in (-1, "auto") or (isinstance(devices, int) and devices > 1) or isinstance(devices, (list, tuple))
    if hydra and hydra.mode == RunMode.MULTIRUN and spawns and many and trainer.accelerator != "cpu":
        raise RunError(
            "a -m sweep cannot start multi-GPU DDP jobs from one process (each DDP rank would re-run the sweep); "
            "sweep with hydra/launcher=submitit_slurm, or run each trainer=ddp job on its own"
        )


def _job_name(cfg: DictConfig) -> tuple[str, Optional[str]]:
    """W&B run name (the job's overrides) and group (the sweep's name under -m)."""
    hydra = _hydra()
    if hydra is None:
        return cfg.task_name, None
    name = hydra.job.override_dirname or cfg.task_name
    group = None
    if hydra.mode == RunMode.MULTIRUN:
        group = f"{cfg.task_name}-{Path(hydra.sweep.dir).name}"
    return name, group


def _write_run_files(run_dir: Path, cfg: DictConfig, prepared: PreparedData, env: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    hydra = _hydra()
    overrides = list(hydra.overrides.task) if hydra else []
    (run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    shutil.copyfile(prepared.tokenizer, run_dir / "tokenizer.json")
    (run_dir / "environment.json").write_text(json.dumps(env, indent=2))


def build_model(cfg: DictConfig, ids: dict) -> InstructionTraceTransformerEncoderForMaskedLM:
    sizes = OmegaConf.to_container(cfg.model, resolve=True)
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    return InstructionTraceTransformerEncoderForMaskedLM(
        **sizes,
        vocab_size=ids["vocab_size"],
        next_token_id=ids["next_token_id"],
        mask_token_id=ids["mask_token_id"],
        **optimizer,
    )


def _callbacks(cfg: DictConfig, run_dir: Path, flops_per_token: float) -> list[lightning.Callback]:
    callbacks: list[lightning.Callback] = []
    for name, options in (cfg.get("callbacks") or {}).items():
        if options is None:
            continue
        extra = {"dirpath": str(run_dir / "checkpoints")} if name == "checkpoint" else {}
        callbacks.append(instantiate(options, **extra))
    callbacks += [DataEpoch(), ThroughputMonitor(flops_per_token)]
    return callbacks


def train(cfg: DictConfig) -> dict:
    """Train a masked-LM from a composed config; return the final metrics (also in ``metrics.json``).

    Raises:
        RunError: for settings that cannot run together, with what to do instead.
    """
    started = time.perf_counter()
    _check_launch(cfg)
    rank_zero = rank_zero_only.rank == 0
    run_dir, checkpoint, run_id = run_directory(cfg)
    lightning.seed_everything(cfg.seed, workers=True)

    prepared = prepare_data(cfg.data, cfg.model.sequence_length, progress=rank_zero)
    if rank_zero:
        print(f"data: {prepared.tokenized}{' (packed)' if cfg.data.packing else ''}")
    tokenizer = load_tokenizer(prepared.tokenizer, cfg.model.sequence_length)
    ids = special_ids(tokenizer)
    model = build_model(cfg, ids)
    accelerator = str(cfg.trainer.accelerator)
    if resolve_compile(cfg.compile, accelerator):
        model.encoder.compile()
    collator = MaskedLMCollator(ids["mask_token_id"], ids["vocab_size"], **cfg.masking)
    data = cfg.data
    datamodule = InstructionTraceDataModule(
        str(prepared.tokenized), collator, batch_size=data.batch_size, num_workers=data.num_workers,
        seed=cfg.seed, shuffle_buffer=data.shuffle_buffer, pin_memory=data.pin_memory,
    )

    env = environment()
    resolved = OmegaConf.to_container(cfg, resolve=True) | {"environment": env, "vocab_size": ids["vocab_size"]}
    name, group = _job_name(cfg)
    logger = build_logger(cfg.get("logger"), run_dir, name, group, cfg.task_name, resolved, run_id)
    # model FLOPs as usually counted (full-vocabulary head), as in `python -m undertale.bench`
    flops = training_flops_per_token(**cfg.model, vocab_size=ids["vocab_size"])
    trainer: lightning.Trainer = instantiate(
        cfg.trainer,
        callbacks=_callbacks(cfg, run_dir, flops),
        logger=logger if logger is not None else False,
        default_root_dir=str(run_dir),
        precision=resolve_precision(cfg.trainer.precision, accelerator),
    )
    if rank_zero and not cfg.get("resume"):  # a resumed run keeps the config and tokenizer it started with
        _write_run_files(run_dir, cfg, prepared, env)
        if isinstance(logger, WandbLogger):
            (run_dir / WANDB_ID_FILE).write_text(logger.experiment.id)

    failed = True
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(checkpoint) if checkpoint else None)
        failed = False
        metrics = _summarise(trainer, run_dir, prepared, ids["vocab_size"], logger, started) if trainer.is_global_zero else {}
    finally:
        finish_wandb(logger, failed)
    return metrics


def _summarise(trainer: lightning.Trainer, run_dir: Path, prepared: PreparedData, vocab_size: int, logger: Any,
               started: float) -> dict:
    token, baseline = most_frequent_token_accuracy(
        tokenized_files(prepared.tokenized, "train"), tokenized_files(prepared.tokenized, "validation"), vocab_size
    )
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith(("train/", "val/"))}
    checkpoint = trainer.checkpoint_callback
    metrics |= {
        "baseline/most_frequent_token_accuracy": baseline,
        "baseline/most_frequent_token_id": token,
        "global_step": trainer.global_step,
        "world_size": trainer.world_size,
        "epoch": trainer.current_epoch,
        "seconds": round(time.perf_counter() - started, 1),
        "best_checkpoint": getattr(checkpoint, "best_model_path", "") or None,
        "last_checkpoint": str(run_dir / "checkpoints" / LAST_CHECKPOINT),
        "run_dir": str(run_dir),
    }
    if isinstance(logger, WandbLogger):
        metrics["wandb_id"] = logger.experiment.id
        logger.experiment.summary["baseline/most_frequent_token_accuracy"] = baseline
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    accuracy = metrics.get("val/accuracy")
    print(f"\nrun directory: {run_dir}")
    if accuracy is not None:
        print(
            f"val/accuracy {accuracy:.4f}  vs  {baseline:.4f} always predicting the most frequent token "
            f"({accuracy / max(baseline, 1e-9):.1f}x)"
        )
    return metrics
