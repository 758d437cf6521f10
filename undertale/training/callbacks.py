"""Callbacks the training entry adds: data epochs, throughput and MFU."""

from __future__ import annotations

import time
from typing import Any, Optional

import lightning
import torch

# Dense bf16 tensor-core peaks (TFLOP/s) of common training GPUs, matched by name.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "A10G": 125.0,
    "L40S": 362.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


def peak_flops(device: torch.device) -> Optional[float]:
    """Known bf16 peak of a CUDA device in FLOP/s, or None (CPU, unknown card)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


class DataEpoch(lightning.Callback):
    """Tell the data module which epoch starts, so its streaming dataset reshuffles."""

    def on_train_epoch_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "on_train_epoch_start"):
            datamodule.on_train_epoch_start()


class ThroughputMonitor(lightning.Callback):
    """Log ``train/tokens_per_sec`` (real, non-padding tokens, all ranks) and ``train/mfu``.

    Tokens are counted on the device and read back only every
    ``log_every_n_steps``, so the hot loop never waits on the host.

    Arguments:
        flops_per_token: training FLOPs per token of the model (for MFU).
    """

    def __init__(self, flops_per_token: Optional[float] = None):
        self.flops_per_token = flops_per_token
        self.tokens: Optional[torch.Tensor] = None
        self.started: Optional[float] = None
        self.peak: Optional[float] = None

    def on_train_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        self.peak = peak_flops(pl_module.device)
        self._reset(pl_module.device)

    def _reset(self, device: torch.device) -> None:
        self.tokens = torch.zeros((), dtype=torch.long, device=device)
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.tokens += (batch["mask"] != 0).sum()
        if not trainer.is_last_batch and (batch_idx + 1) % max(1, trainer.log_every_n_steps) != 0:
            return
        elapsed = time.perf_counter() - self.started
        tokens = trainer.strategy.reduce(self.tokens.float(), reduce_op="sum")
        rate = float(tokens) / max(elapsed, 1e-9)
        metrics = {"train/tokens_per_sec": rate}
        if self.peak and self.flops_per_token:
            metrics["train/mfu"] = rate * self.flops_per_token / (self.peak * trainer.world_size)
        pl_module.log_dict(metrics, rank_zero_only=True)
        self._reset(pl_module.device)

    def on_validation_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if self.tokens is not None:  # validation time is not training throughput
            self._reset(pl_module.device)
