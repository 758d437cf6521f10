"""Masked-language modelling of instruction traces: collator, head and the LightningModule.

Sizes live in :mod:`.configuration`, the optimizer and schedule in
:mod:`.optimization`, FLOP and parameter counting in :mod:`.flops`; their
names are re-exported here for existing imports.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import lightning
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import Metric

from undertale.metrics.token_classes import METRIC_NAMES, target_classes
from undertale.settings.model import InstructionTraceTransformerEncoderForMaskedLMConfiguration
from undertale.models.encoder import InstructionTraceTransformerEncoder, check_tokens
from undertale.models.flops import count_parameters, training_flops_per_token
from undertale.models.heads import MaskedLMHead
from undertale.models.optimization import AdamWTraining, learning_rate_factor
from undertale.settings.masking import DEFAULTS as MASKING, MaskingSettings
from undertale.settings.optimizer import DEFAULTS, SCHEDULES, OptimizerSettings

__all__ = [
    "IGNORE_INDEX",
    "InstructionTraceTransformerEncoderForMaskedLM",
    "InstructionTraceTransformerEncoderForMaskedLMConfiguration",
    "MaskedLMCollator",
    "MaskedLMHead",
    "MaskedLMMetrics",
    "SCHEDULES",
    "count_parameters",
    "learning_rate_factor",
    "training_flops_per_token",
]

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
        exclude_ids: token ids that are never targets (``masking.exclude``, mapped to ids);
            ``probability`` applies to the other non-padding tokens.

    Calling it on a list of rows (each with equal-length ``tokens`` and
    ``mask``), or on a dict of already-batched ``tokens``/``mask`` tensors
    (and optionally a ``seed`` that fixes this batch's corruption), returns LongTensors ``tokens``, ``mask`` and ``labels`` (batch x length);
    ``labels`` holds the original token at each target and -100 elsewhere.

    Raises:
        ValueError: for a probability or fraction outside [0, 1], fractions summing past 1,
            or rows of unequal length.
    """

    PROBABILITY = MASKING.probability
    MASK_FRACTION = MASKING.mask_fraction
    RANDOM_FRACTION = MASKING.random_fraction

    def __init__(
        self,
        mask_token_id: int,
        vocab_size: int,
        probability: float = PROBABILITY,
        mask_fraction: float = MASK_FRACTION,
        random_fraction: float = RANDOM_FRACTION,
        exclude_ids: Sequence[int] = (),
    ):
        MaskingSettings(probability, mask_fraction, random_fraction)  # raises on values out of range
        if not 0 <= mask_token_id < vocab_size:
            raise ValueError(f"mask_token_id {mask_token_id} is outside the vocabulary [0, {vocab_size})")
        outside = [index for index in exclude_ids if not 0 <= int(index) < vocab_size]
        if outside:
            raise ValueError(f"exclude_ids holds {outside[0]}, outside the vocabulary [0, {vocab_size})")
        self.exclude_ids = torch.tensor(sorted({int(index) for index in exclude_ids}), dtype=torch.long)
        self.mask_token_id = mask_token_id
        self.vocab_size = vocab_size
        self.probability = probability
        self.mask_fraction = mask_fraction
        self.random_fraction = random_fraction

    def __call__(self, rows: Union[Sequence[Row], Mapping[str, Any]]) -> dict[str, Tensor]:
        seed = None
        if isinstance(rows, Mapping):
            tokens = torch.as_tensor(rows["tokens"]).long()
            mask = torch.as_tensor(rows["mask"]).long()
            seed = rows.get("seed")
        else:
            if not rows:
                raise ValueError("cannot collate an empty list of rows")
            tokens = _stack([row["tokens"] for row in rows], "tokens")
            mask = _stack([row["mask"] for row in rows], "mask")
        if tokens.shape != mask.shape:
            raise ValueError(f"tokens shape {tuple(tokens.shape)} differs from mask shape {tuple(mask.shape)}")
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        return self.corrupt(tokens, mask, generator)

    def corrupt(self, tokens: Tensor, mask: Tensor, generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        """Select targets among non-padding positions and corrupt them (80/10/10).

        With a ``generator`` (the batch's ``seed``), the same batch is corrupted the same way every time.
        """
        eligible = mask != 0
        if len(self.exclude_ids):
            eligible = eligible & ~torch.isin(tokens, self.exclude_ids)
        targets = (torch.rand(tokens.shape, generator=generator) < self.probability) & eligible
        labels = torch.where(targets, tokens, IGNORE_INDEX)
        choice = torch.rand(tokens.shape, generator=generator)
        masked = targets & (choice < self.mask_fraction)
        randomised = targets & (choice >= self.mask_fraction) & (choice < self.mask_fraction + self.random_fraction)
        corrupted = torch.where(masked, self.mask_token_id, tokens)
        random_tokens = torch.randint(0, self.vocab_size, tokens.shape, generator=generator, dtype=tokens.dtype)
        corrupted = torch.where(randomised, random_tokens, corrupted)
        return {"tokens": corrupted, "mask": mask, "labels": labels}


class MaskedLMMetrics(Metric):
    """Token-weighted masked-LM loss and accuracy, overall and per target class, summed across batches and ranks.

    Arguments:
        classes: metric-safe names of the target classes (e.g. ``next``, ``mnemonic``); none: overall only.

    :meth:`compute` returns ``loss``, ``accuracy``, ``perplexity`` and ``targets``, and for each class
    ``accuracy/<class>``, ``loss/<class>`` and ``targets/<class>`` (NaN accuracy and loss for a class
    without targets).
    """

    full_state_update = False

    def __init__(self, classes: Sequence[str] = ()):
        super().__init__()
        self.classes = tuple(classes)
        count = len(self.classes)
        self.add_state("loss_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("class_loss_sum", default=torch.zeros(count, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("class_correct", default=torch.zeros(count, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("class_total", default=torch.zeros(count, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor, classes: Optional[Tensor] = None) -> None:
        """Add one batch of targets.

        Arguments:
            logits: (n, vocab) at the targets.
            labels: (n,) the original tokens.
            classes: (n,) each target's class index (into ``classes``), or None to count overall only.
        """
        losses = F.cross_entropy(logits.float(), labels, reduction="none").double()
        correct = logits.argmax(-1) == labels
        self.loss_sum += losses.sum()
        self.correct += correct.sum()
        self.total += labels.numel()
        if classes is not None and self.classes:
            # one column per class: column sums are deterministic, unlike scatter-adds of floats on a GPU
            member = classes.unsqueeze(1) == torch.arange(len(self.classes), device=classes.device)
            self.class_loss_sum += torch.where(member, losses.unsqueeze(1), 0.0).sum(0)
            self.class_correct += (member & correct.unsqueeze(1)).sum(0)
            self.class_total += member.sum(0)

    def compute(self) -> dict[str, Tensor]:
        total = self.total.clamp(min=1)
        loss = (self.loss_sum / total).float()
        values = {
            "loss": loss,
            "accuracy": (self.correct.double() / total).float(),
            "perplexity": torch.exp(loss),
            "targets": self.total,
        }
        counts = self.class_total.double()
        accuracy = torch.where(counts > 0, self.class_correct.double() / counts.clamp(min=1), float("nan")).float()
        class_loss = torch.where(counts > 0, self.class_loss_sum / counts.clamp(min=1), float("nan")).float()
        for index, name in enumerate(self.classes):
            values |= {f"accuracy/{name}": accuracy[index], f"loss/{name}": class_loss[index],
                       f"targets/{name}": self.class_total[index]}
        return values


class InstructionTraceTransformerEncoderForMaskedLM(AdamWTraining, lightning.LightningModule):
    """Encoder plus masked-LM head, trained with AdamW and warmup + decay.

    Arguments:
        depth, hidden_dimensions, vocab_size, sequence_length, heads,
        intermediate_dimensions, next_token_id, dropout, eps, attention_dropout: see
            :class:`~undertale.models.encoder.InstructionTraceTransformerEncoder`.
        mask_token_id: id of ``[MASK]``; ``infer`` fills these positions.
        lr, warmup, weight_decay, betas, schedule, final_lr: see
            :class:`~undertale.settings.optimizer.OptimizerSettings` (their defaults are its defaults).

    Validation logs ``val/loss``, ``val/accuracy`` and ``val/perplexity``, and ``val/accuracy/<class>``
    per target class once :meth:`set_token_classes` has given the module its tokenizer's class table.

    Raises:
        ValueError: for an optimizer setting out of range or a ``mask_token_id`` outside the vocabulary.
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
        lr: float = DEFAULTS.lr,
        warmup: float = DEFAULTS.warmup,
        *,
        attention_dropout: Optional[float] = None,
        weight_decay: float = DEFAULTS.weight_decay,
        betas: Sequence[float] = DEFAULTS.betas,
        schedule: str = DEFAULTS.schedule,
        final_lr: float = DEFAULTS.final_lr,
    ):
        super().__init__()
        self.optimizer_settings = OptimizerSettings(lr, warmup, weight_decay, betas, schedule, final_lr)
        if not 0 <= mask_token_id < vocab_size:
            raise ValueError(f"mask_token_id {mask_token_id} is outside the vocabulary [0, {vocab_size})")
        self.save_hyperparameters()
        self.encoder = InstructionTraceTransformerEncoder(
            depth=depth,
            hidden_dimensions=hidden_dimensions,
            vocab_size=vocab_size,
            sequence_length=sequence_length,
            heads=heads,
            intermediate_dimensions=intermediate_dimensions,
            next_token_id=next_token_id,
            dropout=dropout,
            eps=eps,
            attention_dropout=attention_dropout,
        )
        self.head = MaskedLMHead(hidden_dimensions, vocab_size, eps)
        self.val_metrics = MaskedLMMetrics(METRIC_NAMES)
        self.register_buffer("token_classes", None, persistent=False)

    def set_token_classes(self, table: Tensor) -> None:
        """Give the module the per-id class table of its tokenizer, so validation reports each target class.

        Arguments:
            table: (vocab_size,) from :func:`undertale.metrics.token_classes.token_class_table`;
                not saved in checkpoints.

        Raises:
            ValueError: when the table's length is not the model's vocabulary size.
        """
        if table.dim() != 1 or table.shape[0] != self.hparams.vocab_size:
            raise ValueError(
                f"the class table has shape {tuple(table.shape)}, the model's vocabulary {self.hparams.vocab_size} ids; "
                "build it from the tokenizer the model was trained with"
            )
        self.token_classes = table.long().to(self.device)

    def classify_targets(self, batch: Mapping[str, Tensor]) -> Optional[Tensor]:
        """The class of each target of a batch, in the order of :meth:`masked_logits` (indices into
        :data:`~undertale.metrics.token_classes.CLASSES`); None before :meth:`set_token_classes`."""
        if self.token_classes is None:
            return None
        labels = batch["labels"]
        targets = labels != IGNORE_INDEX
        original = torch.where(targets, labels, batch["tokens"])
        return target_classes(original, batch.get("mask"), targets, self.token_classes)

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
        self.val_metrics.update(logits, labels, self.classify_targets(batch))

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()  # summed across ranks
        overall = {f"val/{name}": values[name] for name in ("loss", "accuracy", "perplexity")}
        self.log_dict(overall, prog_bar=True, sync_dist=False)
        names = self.val_metrics.classes
        counts = torch.stack([values[f"targets/{name}"] for name in names]).tolist() if names else []
        self.log_dict({f"val/accuracy/{name}": values[f"accuracy/{name}"] for name, count in zip(names, counts) if count},
                      sync_dist=False)
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

