"""An evaluation's numbers as a run of the ``logger`` group, beside the training run it evaluates."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from undertale.runtime.runs import RunDirectory


def log_evaluation(cfg: DictConfig, run: RunDirectory, folder: str, job_type: str, name: str,
                   config: dict[str, Any], metrics: dict[str, float], step: int) -> None:
    """Log ``metrics`` with the ``logger`` group (W&B offline unless ``WANDB_MODE`` says otherwise) in the
    training run's group, job type ``job_type``; files go under ``<run>/<folder>/``. ``logger=none``: nothing."""
    from undertale.training.loggers import build_loggers, finish_wandb, wandb_logger

    trained = run.wandb_run()
    directory = run.path / folder
    directory.mkdir(exist_ok=True)
    loggers = build_loggers(cfg.get("logger"), directory, {
        "name": name, "group": trained.get("group") or trained.get("id"), "id": None, "job_type": job_type,
        "config": config | {"trained": trained},
    })
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
        if logger is not wandb_logger(loggers):
            logger.finalize("success")
    finish_wandb(loggers, "finished")
