"""Masked-language modelling of instruction traces: collator, head, LightningModule, sizes."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import lightning
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import Metric

from .encoder import InstructionTraceTransformerEncoder, check_tokens

IGNORE_INDEX = -100

Row = Mapping[str, Any]


def _stack(values: Sequence[Any], name: str) -> Tensor:
    lengths = {len(value) for value in values}
    if len(lengths) > 1:
        raise ValueError(f"rows have unequal {name!r} lengths {sorted(lengths)}; pad them to one fixed length")
    if isinstance(values[0], Tensor):
        return torch.stack(list(values)).long()
    return torch.from_numpy(np.asarray(values, dtype=np.int64))


class MaskedLMCollator:
    """Collate rows into a masked-LM batch with the BERT 80/10/10 corruption.

    Arguments:
        mask_token_id: id of ``[MASK]``.
        vocab_size: random replacements are drawn from ``[0, vocab_size)``.
        probability: chance that a non-padding position becomes a prediction target.
        mask_fraction: share of targets replaced by ``[MASK]``.
        random_fraction: share of targets replaced by a random token; the rest stay unchanged.

    Calling it on a list of rows (each with equal-length ``tokens`` and
    ``mask``), or on a dict of already-batched ``tokens``/``mask`` tensors,
    returns LongTensors ``tokens``, ``mask`` and ``labels`` (batch x length);
    ``labels`` holds the original token at each target and -100 elsewhere.

    Raises:
        ValueError: for a probability or fraction outside [0, 1], fractions summing past 1,
            or rows of unequal length.
    """

    def __init__(
        self,
        mask_token_id: int,
        vocab_size: int,
        probability: float = 0.15,
        mask_fraction: float = 0.8,
        random_fraction: float = 0.1,
    ):
        for name, value in [
            ("probability", probability),
            ("mask_fraction", mask_fraction),
            ("random_fraction", random_fraction),
        ]:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if mask_fraction + random_fraction > 1.0 + 1e-9:
            raise ValueError(
                f"mask_fraction + random_fraction must not exceed 1, got {mask_fraction} + {random_fraction}"
            )
        if not 0 <= mask_token_id < vocab_size:
            raise ValueError(f"mask_token_id {mask_token_id} is outside the vocabulary [0, {vocab_size})")
        self.mask_token_id = mask_token_id
        self.vocab_size = vocab_size
        self.probability = probability
        self.mask_fraction = mask_fraction
        self.random_fraction = random_fraction

    def __call__(self, rows: Union[Sequence[Row], Mapping[str, Any]]) -> dict[str, Tensor]:
        if isinstance(rows, Mapping):
            tokens = torch.as_tensor(rows["tokens"]).long()
            mask = torch.as_tensor(rows["mask"]).long()
        else:
            if not rows:
                raise ValueError("cannot collate an empty list of rows")
            tokens = _stack([row["tokens"] for row in rows], "tokens")
            mask = _stack([row["mask"] for row in rows], "mask")
        if tokens.shape != mask.shape:
            raise ValueError(f"tokens shape {tuple(tokens.shape)} differs from mask shape {tuple(mask.shape)}")
        return self.corrupt(tokens, mask)

    def corrupt(self, tokens: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Select targets among non-padding positions and corrupt them (80/10/10)."""
        targets = (torch.rand(tokens.shape) < self.probability) & (mask != 0)
        labels = torch.where(targets, tokens, IGNORE_INDEX)
        choice = torch.rand(tokens.shape)
        masked = targets & (choice < self.mask_fraction)
        randomised = targets & (choice >= self.mask_fraction) & (choice < self.mask_fraction + self.random_fraction)
        corrupted = torch.where(masked, self.mask_token_id, tokens)
        corrupted = torch.where(randomised, torch.randint_like(tokens, self.vocab_size), corrupted)
        return {"tokens": corrupted, "mask": mask, "labels": labels}


class MaskedLMHead(nn.Module):
    """Hidden states to vocabulary logits: linear, GELU, LayerNorm, linear decode.

    Arguments:
        hidden_dimensions: width of the incoming states.
        vocab_size: number of output logits.
        eps: LayerNorm epsilon.
    """

    def __init__(self, hidden_dimensions: int, vocab_size: int, eps: float):
        super().__init__()
        self.transform = nn.Linear(hidden_dimensions, hidden_dimensions)
        self.activation = nn.GELU()
        self.norm = nn.LayerNorm(hidden_dimensions, eps=eps)
        self.decode = nn.Linear(hidden_dimensions, vocab_size)

    def forward(self, state: Tensor) -> Tensor:
        return self.decode(self.norm(self.activation(self.transform(state))))


class MaskedLMMetrics(Metric):
    """Token-weighted masked-LM loss and accuracy, summed across batches and ranks."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("loss_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:  # logits: (n, vocab), labels: (n,)
        self.loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        self.correct += (logits.argmax(-1) == labels).sum()
        self.total += labels.numel()

    def compute(self) -> dict[str, Tensor]:
        total = self.total.clamp(min=1)
        loss = (self.loss_sum / total).float()
        return {
            "loss": loss,
            "accuracy": (self.correct.double() / total).float(),
            "perplexity": torch.exp(loss),
        }


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
        raise ValueError(f"unknown schedule {schedule!r}; choose 'cosine', 'linear' or 'constant'")
    return final_ratio + (1.0 - final_ratio) * shape


SCHEDULES = ("cosine", "linear", "constant")


class InstructionTraceTransformerEncoderForMaskedLM(lightning.LightningModule):
    """Encoder plus masked-LM head, trained with AdamW and warmup + decay.

    Arguments:
        depth, hidden_dimensions, vocab_size, sequence_length, heads,
        intermediate_dimensions, next_token_id, dropout, eps: see
            :class:`~undertale.models.encoder.InstructionTraceTransformerEncoder`.
        mask_token_id: id of ``[MASK]``; ``infer`` fills these positions.
        lr: peak learning rate.
        warmup: below 1, a fraction of the trainer's total steps; otherwise a step count.
        weight_decay: AdamW decoupled weight decay (not applied to biases and norms).
        betas: AdamW betas.
        schedule: decay after warmup: ``cosine`` (default), ``linear`` or ``constant``.
        final_lr: learning rate reached at the last step.
    """

    def __init__(
        self,
        depth: int,
        hidden_dimensions: int,
        vocab_size: int,
        sequence_length: int,
        heads: int,
        intermediate_dimensions: int,
        next_token_id: int,
        mask_token_id: int,
        dropout: float,
        eps: float,
        lr: float = 0.0001,
        warmup: float = 0.025,
        weight_decay: float = 0.01,
        betas: Sequence[float] = (0.9, 0.999),
        schedule: str = "cosine",
        final_lr: float = 0.0,
    ):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        if not 0 <= mask_token_id < vocab_size:
            raise ValueError(f"mask_token_id {mask_token_id} is outside the vocabulary [0, {vocab_size})")
        self.save_hyperparameters()
        self.encoder = InstructionTraceTransformerEncoder(
            depth,
            hidden_dimensions,
            vocab_size,
            sequence_length,
            heads,
            intermediate_dimensions,
            next_token_id,
            dropout,
            eps,
        )
        self.head = MaskedLMHead(hidden_dimensions, vocab_size, eps)
        self.val_metrics = MaskedLMMetrics()

    def forward(self, state: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Logits, (batch, length, vocab_size)."""
        return self.head(self.encoder(state, mask))

    def masked_logits(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Logits and labels at the target positions only: the head runs on those rows alone."""
        labels = batch["labels"]
        if labels.shape != batch["tokens"].shape:
            raise ValueError(
                f"labels shape {tuple(labels.shape)} differs from tokens shape {tuple(batch['tokens'].shape)}"
            )
        hidden = self.encoder(batch["tokens"], batch.get("mask"))
        targets = labels != IGNORE_INDEX
        return self.head(hidden[targets]), labels[targets]

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        logits, labels = self.masked_logits(batch)
        loss = F.cross_entropy(logits.float(), labels)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        logits, labels = self.masked_logits(batch)
        self.val_metrics.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict({f"val/{name}": value for name, value in values.items()}, prog_bar=True, sync_dist=False)
        self.val_metrics.reset()

    @torch.no_grad()
    def infer(self, tokens: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Fill every ``[MASK]`` with the arg-max prediction; other positions are unchanged.

        Arguments:
            tokens: (length,) or (batch, length) token ids.
            mask: optional padding/segment mask of the same shape.

        Returns:
            A 1-D tensor for a 1-D input or a batch of one, else (batch, length).
        """
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(0)
            mask = None if mask is None else mask.unsqueeze(0)
        check_tokens(tokens, mask, self.hparams.sequence_length, self.hparams.vocab_size)
        was_training = self.training
        self.eval()
        try:
            predicted = self(tokens, mask).argmax(-1)
        finally:
            self.train(was_training)
        filled = torch.where(tokens == self.hparams.mask_token_id, predicted, tokens)
        return filled.squeeze(0) if filled.shape[0] == 1 else filled

    def warmup_steps(self, total_steps: int) -> int:
        warmup = self.hparams.warmup
        return int(warmup * total_steps) if warmup < 1 else int(warmup)

    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = [], []
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            (no_decay if parameter.dim() < 2 or "norm" in name else decay).append(parameter)
        fused = all(parameter.is_cuda for parameter in decay + no_decay)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
            fused=fused or None,
        )
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total <= 0:
            raise ValueError(
                f"the learning-rate schedule needs a length, but the trainer's total steps are {total}: "
                "set trainer.max_steps (or max_epochs with a sized dataset)"
            )
        total = int(total)
        warmup = self.warmup_steps(total)
        final_ratio = self.hparams.final_lr / self.hparams.lr if self.hparams.lr else 0.0
        schedule = self.hparams.schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: learning_rate_factor(step, warmup, total, schedule, final_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class InstructionTraceTransformerEncoderForMaskedLMConfiguration:
    """Named model sizes, each a dict of keyword arguments for the model.

    ``vocab_size``, ``next_token_id`` and ``mask_token_id`` come from the tokenizer.
    ``conf/model/*.yaml`` mirrors these (a test proves they agree).
    """

    tiny = {
        "depth": 2,
        "hidden_dimensions": 128,
        "heads": 4,
        "intermediate_dimensions": 512,
        "sequence_length": 128,
        "dropout": 0.0,
        "eps": 1e-12,
    }
    small = {
        "depth": 6,
        "hidden_dimensions": 512,
        "heads": 8,
        "intermediate_dimensions": 2048,
        "sequence_length": 512,
        "dropout": 0.1,
        "eps": 1e-12,
    }
    medium = {
        "depth": 12,
        "hidden_dimensions": 768,
        "heads": 12,
        "intermediate_dimensions": 3072,
        "sequence_length": 512,
        "dropout": 0.1,
        "eps": 1e-12,
    }
    large = {
        "depth": 24,
        "hidden_dimensions": 1024,
        "heads": 16,
        "intermediate_dimensions": 4096,
        "sequence_length": 512,
        "dropout": 0.1,
        "eps": 1e-12,
    }
    xl = {
        "depth": 36,
        "hidden_dimensions": 1280,
        "heads": 20,
        "intermediate_dimensions": 5120,
        "sequence_length": 512,
        "dropout": 0.1,
        "eps": 1e-12,
    }

    options = {"tiny": tiny, "small": small, "medium": medium, "large": large, "xl": xl}


def training_flops_per_token(depth: int, hidden_dimensions: int, intermediate_dimensions: int, vocab_size: int,
                              sequence_length: int, masked_fraction: float = 1.0, **_: Any) -> float:
    """Training FLOPs per token (forward + backward): 6 x matmul parameters + attention.

    The attention term is 12 x depth x hidden x length (QK^T and AV, forward
    and backward). ``masked_fraction`` scales the vocabulary projection, which
    runs on the target positions only.
    """
    layer = 4 * hidden_dimensions * hidden_dimensions + 2 * hidden_dimensions * intermediate_dimensions
    head = hidden_dimensions * hidden_dimensions + masked_fraction * hidden_dimensions * vocab_size
    attention = 12 * depth * hidden_dimensions * sequence_length
    return 6 * (depth * layer + head) + attention


def count_parameters(module: nn.Module, where: Optional[Iterable[str]] = None) -> int:
    """Number of parameters, optionally only those whose name starts with one of ``where``."""
    prefixes = tuple(where) if where else None
    return sum(p.numel() for name, p in module.named_parameters() if prefixes is None or name.startswith(prefixes))
