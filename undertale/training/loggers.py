"""Experiment loggers from the ``logger`` config group."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

WANDB_ID_FILE = "wandb_id.txt"


def build_logger(
    config: DictConfig,
    run_dir: Path,
    name: str,
    group: Optional[str],
    job_type: str,
    resolved: dict[str, Any],
    run_id: Optional[str],
) -> Optional[Logger]:
    """One logger (``wandb``, ``tensorboard`` or ``csv``) or None for an empty ``logger`` group.

    Raises:
        ValueError: for more than one or an unknown logger.
    """
    kinds = list(config.keys()) if config else []
    if not kinds:
        return None
    if len(kinds) > 1:
        raise ValueError(f"choose one logger, got {kinds}")
    kind = kinds[0]
    options = OmegaConf.to_container(config[kind], resolve=True) or {}
    if kind == "wandb":
        return WandbLogger(
            project=options.get("project", "undertale"),
            entity=options.get("entity"),
            group=options.get("group") or group,
            name=options.get("name") or name,
            tags=list(options.get("tags") or []),
            mode=options.get("mode", "offline"),
            log_model=options.get("log_model", False),
            save_dir=str(run_dir),
            id=run_id,
            resume="allow" if run_id else None,
            job_type=job_type,
            config=resolved,
        )
    if kind == "tensorboard":
        return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", **options)
    if kind == "csv":
        return CSVLogger(save_dir=str(run_dir), name="csv", version="", **options)
    raise ValueError(f"unknown logger {kind!r}; choose wandb, tensorboard, csv or none")


def finish_wandb(logger: Optional[Logger], failed: bool) -> None:
    """End the W&B run of this job (marked failed when the job raised) so the next sweep job starts its own."""
    if isinstance(logger, WandbLogger) and logger._experiment is not None:
        import wandb

        wandb.finish(exit_code=1 if failed else 0)
