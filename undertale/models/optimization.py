"""The learning-rate schedule and the optimizer: AdamW, linear warmup, then a decay.

Applies :class:`~undertale.settings.optimizer.OptimizerSettings` (the settings and their one default
live in the settings layer) to a module.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

from undertale.settings.optimizer import SCHEDULES, OptimizerSettings

if TYPE_CHECKING:
    from torch import nn



def learning_rate_factor(step: int, warmup_steps: int, total_steps: int, schedule: str, final_ratio: float) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warmup, then the decay ``schedule``."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        shape = 1.0 - progress
    else:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    return final_ratio + (1.0 - final_ratio) * shape


def adamw_with_schedule(module: "nn.Module", settings: OptimizerSettings, total_steps: float) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` result: AdamW (fused on CUDA, unless a loss scaler is used) and a
    per-step schedule.

    Biases and norm weights are not decayed.

    Raises:
        ValueError: when ``total_steps`` is not a finite positive number (the schedule needs a length).
    """
    import torch  # here, so that checking settings does not load torch

    decay, no_decay = [], []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.dim() < 2 or "norm" in name else decay).append(parameter)
    trainer = getattr(module, "_trainer", None)
    scaled = getattr(getattr(trainer, "precision_plugin", None), "scaler", None) is not None  # 16-mixed
    fused = all(parameter.is_cuda for parameter in decay + no_decay) and not scaled
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=tuple(settings.betas),
        fused=fused or None,
    )
    if not math.isfinite(total_steps) or total_steps <= 0:
        raise ValueError(
            f"the learning-rate schedule needs a length, but the trainer's total steps are {total_steps}: "
            "set trainer.max_steps (or max_epochs with a sized dataset)"
        )
    total = int(total_steps)
    warmup = settings.warmup_steps(total)
    final_ratio = settings.final_lr / settings.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, warmup, total, settings.schedule, final_ratio)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def clip_gradients(module: Any, optimizer: Any, value: Optional[float], algorithm: Optional[str]) -> None:
    """Clip gradients the way every strategy and optimizer here allows (Lightning's ``configure_gradient_clipping``).

    Lightning refuses to clip for a fused AdamW under mixed precision (the optimizer "unscales gradients
    itself") and for FSDP by norm. With bf16 there is no loss scaling, so the gradients can be clipped as
    they are: by the FSDP module's own ``clip_grad_norm_`` when sharded, else by
    ``torch.nn.utils.clip_grad_norm_``. With a loss scaler (16-mixed) the optimizer is not fused (see
    :func:`adamw_with_schedule`) and Lightning's own clipping, which unscales first, is used.
    """
    import torch

    if not value:
        return
    trainer = module.trainer
    if getattr(trainer.precision_plugin, "scaler", None) is not None:
        module.clip_gradients(optimizer, gradient_clip_val=value, gradient_clip_algorithm=algorithm)
        return
    parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(parameters, value)
        return
    wrapped = getattr(trainer.strategy, "model", None)
    if hasattr(wrapped, "clip_grad_norm_"):  # FullyShardedDataParallel: the norm over every rank's shard
        wrapped.clip_grad_norm_(value)
    else:
        torch.nn.utils.clip_grad_norm_(parameters, value)


class AdamWTraining:
    """What every task's LightningModule here shares: AdamW with its schedule, and gradient clipping that works
    with the fused optimizer and FSDP. Needs ``self.optimizer_settings`` (:class:`OptimizerSettings`)."""

    optimizer_settings: OptimizerSettings

    def warmup_steps(self, total_steps: int) -> int:
        return self.optimizer_settings.warmup_steps(total_steps)

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_schedule(self, self.optimizer_settings, self.trainer.estimated_stepping_batches)

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Optional[float] = None,
                                    gradient_clip_algorithm: Optional[str] = None) -> None:
        clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm)
