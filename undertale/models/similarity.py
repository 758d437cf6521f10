"""Contrastive fine-tuning for function search: the encoder, a projection head and an InfoNCE loss.

A training batch holds ``K`` groups (source functions) with two variants each
(say ``-O0`` and ``-O3``). Each variant is embedded (the encoder's states
pooled over the function's tokens, then projected and scaled to unit length),
and each ``a`` variant must pick its own ``b`` among every ``b`` in the batch,
and the other way round: the other groups are the negatives. With ``V > 2``
variants per group, every two of the ``V`` blocks make such a pair, and the
loss is the mean over every query of every pair. Under DDP the
embeddings of every rank are gathered (with gradients), so a query meets
``world_size x K`` candidates.

Validation embeds the validation pairs (query level vs partner level) and logs
``val/mrr`` and ``val/recall@1`` at pool ``pool`` (32: the jTrans protocol of
:mod:`undertale.evaluation.similarity`).
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Optional, Sequence

import lightning
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from undertale.models.encoder import InstructionTraceTransformerEncoder
from undertale.models.heads import ProjectionHead
from undertale.models.optimization import AdamWTraining
from undertale.settings.optimizer import DEFAULTS, OptimizerSettings
from undertale.metrics.retrieval import pools, search_scores
from undertale.models.pooling import pool_functions, search_vectors
from undertale.settings.similarity import check_similarity_settings, pooled_width



def info_nce(a: Tensor, b: Tensor, temperature: float, a_all: Optional[Tensor] = None,
             b_all: Optional[Tensor] = None, offset: int = 0, keep: Optional[Tensor] = None) -> Tensor:
    """Symmetric InfoNCE: ``a[i]`` must find ``b[i]`` among ``b_all``, and ``b[i]`` find ``a[i]`` among ``a_all``.

    Arguments:
        a, b: (K, d) unit-length embeddings of this rank's two variants of K groups.
        temperature: divides the cosine similarities (> 0).
        a_all, b_all: (N, d) the embeddings of every rank (default: ``a`` and ``b``).
        offset: where this rank's K rows start within ``a_all``/``b_all``.
        keep: (K,) bool, the rows that count as queries (default: all); the others stay candidates.

    Returns:
        The mean of the two cross-entropies over the kept rows (0 when none is kept).
    """
    losses = info_nce_rows(a, b, temperature, a_all, b_all, offset)
    if keep is None:
        return losses.mean()
    return (losses * keep).sum() / keep.sum().clamp(min=1)


def info_nce_rows(a: Tensor, b: Tensor, temperature: float, a_all: Optional[Tensor] = None,
                  b_all: Optional[Tensor] = None, offset: int = 0) -> Tensor:
    """(K,) each row's InfoNCE, the mean of its two directions (the arguments of :func:`info_nce`)."""
    a_all = a if a_all is None else a_all
    b_all = b if b_all is None else b_all
    labels = torch.arange(a.shape[0], device=a.device) + offset
    forward = F.cross_entropy((a @ b_all.T).float() / temperature, labels, reduction="none")
    backward = F.cross_entropy((b @ a_all.T).float() / temperature, labels, reduction="none")
    return (forward + backward) / 2


class InstructionTraceTransformerEncoderForSimilarity(AdamWTraining, lightning.LightningModule):
    """Encoder plus projection head, trained with InfoNCE over in-batch (and cross-rank) negatives.

    Arguments:
        depth, hidden_dimensions, vocab_size, sequence_length, heads,
        intermediate_dimensions, next_token_id, dropout, eps, attention_dropout: see
            :class:`~undertale.models.encoder.InstructionTraceTransformerEncoder`.
        temperature: InfoNCE temperature (> 0).
        projection_size: width of the search embeddings.
        pooling: ``mean``, ``first`` or ``mean+max`` (:func:`pool_functions`).
        pool: validation pool size for ``val/mrr`` and ``val/recall@1``.
        entry_weight: the share of the loss given to each function's entry (its first window) as a view of
            its own: ``(1 - w) * InfoNCE(whole) + w * InfoNCE(entry)``; 0 trains the whole function only.
        lr, warmup, weight_decay, betas, schedule, final_lr: see
            :class:`~undertale.settings.optimizer.OptimizerSettings`.

    A batch holds ``tokens`` and ``mask`` (packed rows: ``mask`` names the segment),
    ``owner`` (the function of each position, -1 for padding) and ``functions``
    (their number), and ``entry`` (True in each function's first window); training
    batches put the ``a`` variants first and the ``b`` variants second, or hold
    ``V`` such blocks and ``variant`` (``V``, ``K``: each function's variant
    within its group); validation
    batches add ``pair`` and ``side`` per function. Validation searches with the
    vector ``embed.py`` writes by default (``windows=all+first``): the whole and
    entry embeddings side by side, scaled to unit length.

    Raises:
        ValueError: for a setting out of range.
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
        dropout: float,
        eps: float,
        attention_dropout: Optional[float] = None,
        temperature: float = 0.05,
        projection_size: int = 128,
        pooling: str = "mean",
        pool: int = 32,
        entry_weight: float = 0.0,
        lr: float = DEFAULTS.lr,
        warmup: float = DEFAULTS.warmup,
        weight_decay: float = DEFAULTS.weight_decay,
        betas: Sequence[float] = DEFAULTS.betas,
        schedule: str = DEFAULTS.schedule,
        final_lr: float = DEFAULTS.final_lr,
        **_: Any,
    ):
        super().__init__()
        check_similarity_settings(temperature, projection_size, pooling, pool, entry_weight=entry_weight)
        self.optimizer_settings = OptimizerSettings(lr, warmup, weight_decay, betas, schedule, final_lr)
        self.save_hyperparameters()
        self.encoder = InstructionTraceTransformerEncoder(
            depth=depth, hidden_dimensions=hidden_dimensions, vocab_size=vocab_size,
            sequence_length=sequence_length, heads=heads, intermediate_dimensions=intermediate_dimensions,
            next_token_id=next_token_id, dropout=dropout, eps=eps, attention_dropout=attention_dropout,
        )
        self.projection = ProjectionHead(hidden_dimensions, projection_size,
                                         pooled_width(hidden_dimensions, pooling))
        self._validation: list[tuple[Tensor, Tensor, Tensor]] = []

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Unit-length embeddings of the batch's functions (all their windows), (functions, projection_size)."""
        return self.views(batch, entry=False)[0]

    def views(self, batch: Mapping[str, Tensor], entry: bool = True) -> tuple[Tensor, Optional[Tensor]]:
        """Unit-length embeddings of each function whole and of its entry (first window; None unless ``entry``)."""
        hidden = self.encoder(batch["tokens"], batch["mask"])
        count, pooling = int(batch["functions"]), self.hparams.pooling
        whole = self._project(pool_functions(hidden, batch["owner"], count, pooling))
        if not entry:
            return whole, None
        entry_owner = batch["owner"].masked_fill(~batch["entry"].bool(), -1)
        return whole, self._project(pool_functions(hidden, entry_owner, count, pooling))

    def _project(self, pooled: Tensor) -> Tensor:
        return F.normalize(self.projection(pooled).float(), dim=-1)

    def _gather(self, embeddings: Tensor) -> Tensor:
        if self._trainer is None or self._trainer.world_size == 1:
            return embeddings
        gathered = self.all_gather(embeddings, sync_grads=True)  # (world, K, d)
        return gathered.reshape(-1, embeddings.shape[-1])

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        weight = float(self.hparams.entry_weight)
        whole, entry = self.views(batch, entry=weight > 0)
        variant = batch.get("variant")
        loss, accuracy, candidates = self._contrast(whole, variant)
        if entry is not None:
            entry_loss, _, _ = self._contrast(entry, variant)
            self.log_dict({"train/whole_loss": loss, "train/entry_loss": entry_loss})
            loss = (1 - weight) * loss + weight * entry_loss
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/accuracy", accuracy)
        self.log("train/candidates", candidates)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def _contrast(self, embeddings: Tensor, variant: Optional[Tensor] = None) -> tuple[Tensor, Tensor, float]:
        """InfoNCE between every two of the batch's ``V`` blocks (negatives from every rank); top-1 accuracy.

        ``variant`` (``V``, ``K``) names each function's variant within its group (None: two blocks of
        different variants). A group's repeated variant is no query in that pair; the loss and the accuracy
        are the means over every query of every pair (with no host sync, whatever repeats).
        """
        views = 2 if variant is None else variant.shape[0]
        groups = embeddings.shape[0] // views
        blocks = embeddings.reshape(views, groups, -1)
        gathered = [self._gather(block) for block in blocks]
        rank = self._trainer.global_rank if self._trainer is not None else 0
        labels = torch.arange(groups, device=embeddings.device) + rank * groups
        losses, hits, kept = [], [], []
        for i, j in itertools.combinations(range(views), 2):
            losses.append(info_nce_rows(blocks[i], blocks[j], self.hparams.temperature, gathered[i], gathered[j],
                                        offset=rank * groups))
            with torch.no_grad():
                hits.append((blocks[i] @ gathered[j].T).argmax(-1) == labels)
            kept.append(torch.ones_like(labels, dtype=torch.bool) if variant is None else variant[i] != variant[j])
        keep = torch.cat(kept).float()
        queries = keep.sum().clamp(min=1)
        loss = (torch.cat(losses) * keep).sum() / queries
        accuracy = (torch.cat(hits).float() * keep).sum() / queries
        return loss, accuracy, float(gathered[0].shape[0])

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._validation.append((search_vectors(*self.views(batch)).detach(), batch["pair"], batch["side"]))

    def on_validation_epoch_end(self) -> None:
        if not self._validation:
            return
        embeddings = torch.cat([item[0] for item in self._validation])
        pairs = torch.cat([item[1] for item in self._validation]).to(embeddings.device)
        sides = torch.cat([item[2] for item in self._validation]).to(embeddings.device)
        self._validation.clear()
        if self.trainer is not None and self.trainer.world_size > 1:
            embeddings, pairs, sides = self._gather_padded(embeddings, pairs, sides)
        scores = validation_scores(embeddings.cpu().numpy(), pairs.cpu().numpy(), sides.cpu().numpy(),
                                   self.hparams.pool, seed=0)
        if scores["mrr"] is not None:
            self.log_dict({"val/mrr": scores["mrr"], "val/recall@1": scores["recall@1"],
                           "val/pairs": float(scores["queries"])}, prog_bar=True, sync_dist=False)

    def _gather_padded(self, embeddings: Tensor, pairs: Tensor, sides: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Every rank's validation embeddings (ranks may hold different counts: padded, then dropped)."""
        count = torch.tensor([embeddings.shape[0]], device=embeddings.device)
        most = int(self.all_gather(count).max())
        pad = most - embeddings.shape[0]
        embeddings = F.pad(embeddings, (0, 0, 0, pad))
        pairs = F.pad(pairs, (0, pad), value=-1)
        sides = F.pad(sides, (0, pad), value=-1)
        embeddings, pairs, sides = (self.all_gather(x).reshape(-1, *x.shape[1:]) for x in (embeddings, pairs, sides))
        keep = pairs >= 0
        return embeddings[keep], pairs[keep], sides[keep]



def validation_scores(embeddings: np.ndarray, pairs: np.ndarray, sides: np.ndarray, pool: int, seed: int = 0) -> dict:
    """MRR and Recall@1 at pool ``pool`` of queries (side 0) against partners (side 1), by pair index."""
    _, unique = np.unique(np.stack([pairs, sides]), axis=1, return_index=True)  # each function once
    embeddings, pairs, sides = embeddings[unique], pairs[unique], sides[unique]
    common = np.intersect1d(pairs[sides == 0], pairs[sides == 1])  # sorted pair indices with both sides
    queries = embeddings[sides == 0][np.isin(pairs[sides == 0], common)]
    partners = embeddings[sides == 1][np.isin(pairs[sides == 1], common)]
    return search_scores(queries, partners, pools(len(common), pool, seed))


def load_pretrained_encoder(module: nn.Module, run) -> str:
    """Copy the encoder weights of a pretraining run's checkpoint into ``module.encoder``; the checkpoint used.

    The checkpoint is the one every command loads (:meth:`~undertale.runtime.runs.RunDirectory.checkpoint`).

    Raises:
        UsageError: (a ``ValueError``) when the run has no intact checkpoint, or its encoder does not fit.
    """
    from undertale.runtime.errors import UsageError

    saved, checkpoint = run.read()
    state = saved.get("state_dict") or {}
    encoder = {key.removeprefix("encoder."): value for key, value in state.items() if key.startswith("encoder.")}
    if not encoder:
        raise UsageError(f"{checkpoint} holds no encoder weights")
    own = module.encoder.state_dict()
    wrong = [key for key, value in encoder.items() if key in own and own[key].shape != value.shape]
    if wrong or own.keys() != encoder.keys():
        raise UsageError(f"the encoder of {checkpoint} does not fit this model "
                         f"({wrong[0] if wrong else 'other layers'}): its sizes or tokenizer differ")
    module.encoder.load_state_dict(encoder)
    return str(checkpoint)
