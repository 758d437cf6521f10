"""A third task, written outside the framework: which optimisation level was a function compiled at?

Compiler-provenance classification on a pairs dataset (``python -m undertale.data pairs``): the
encoder's mean-pooled states go through a linear layer to one logit per level. Two classes and a
YAML file (``conf/task/levels.yaml``) make the task; ``train.py`` is not edited. See docs/tasks.md.
"""

from __future__ import annotations

from typing import Optional, Sequence

import lightning
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from undertale.data.pairs.build import read_pairs
from undertale.data.tokenizer import load_tokenizer
from undertale.models.encoder import InstructionTraceTransformerEncoder
from undertale.models.optimization import AdamWTraining, OptimizerSettings


class OptimisationLevelClassifier(AdamWTraining, lightning.LightningModule):
    """Encoder, mean pooling, one logit per level; ``val/accuracy`` is the share of functions placed right.

    :class:`~undertale.models.optimization.AdamWTraining` gives it the framework's AdamW, schedule and clipping.
    """

    def __init__(self, levels: Sequence[str], depth: int, hidden_dimensions: int, vocab_size: int, sequence_length: int,
                 heads: int, intermediate_dimensions: int, next_token_id: int, dropout: float, eps: float,
                 lr: float = 1e-4, warmup: float = 0.025, weight_decay: float = 0.01, betas=(0.9, 0.999),
                 schedule: str = "cosine", final_lr: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = InstructionTraceTransformerEncoder(depth, hidden_dimensions, vocab_size, sequence_length, heads,
                                                          intermediate_dimensions, next_token_id, dropout, eps)
        self.classify = torch.nn.Linear(hidden_dimensions, len(levels))
        self.optimizer_settings = OptimizerSettings(lr, warmup, weight_decay, betas, schedule, final_lr)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(tokens, mask)
        real = (mask != 0).unsqueeze(-1).to(hidden.dtype)
        return self.classify((hidden * real).sum(1) / real.sum(1).clamp(min=1))

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self(batch["tokens"], batch["mask"]).float(), batch["labels"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["tokens"], batch["mask"])
        accuracy = (logits.argmax(-1) == batch["labels"]).float().mean()
        self.log("val/accuracy", accuracy, prog_bar=True, batch_size=len(batch["labels"]))


class LevelsDataModule(lightning.LightningDataModule):
    """Functions of a pairs dataset's ``train`` and ``validation`` splits, labelled with their level."""

    def __init__(self, pairs: str, levels: Sequence[str], tokenizer: str, sequence_length: int, batch_size: int = 32,
                 seed: int = 0):
        super().__init__()
        self.pairs, self.levels, self.batch_size, self.seed = pairs, list(levels), batch_size, seed
        self.tokenizer = load_tokenizer(tokenizer, sequence_length)  # pads and cuts to the sequence length
        self.splits: dict[str, list[dict]] = {}

    def _examples(self, split: str) -> list[dict]:
        rows = [row for row in read_pairs(self.pairs, split, columns=["level", "disassembly"]).to_pylist()
                if row["level"] in self.levels]
        if not rows:
            raise ValueError(f"{self.pairs}: no {split} functions at {', '.join(self.levels)}")
        encodings = self.tokenizer.encode_batch([row["disassembly"] for row in rows])
        return [{"tokens": torch.tensor(e.ids), "mask": torch.tensor(e.attention_mask),
                 "labels": torch.tensor(self.levels.index(row["level"]))} for e, row in zip(encodings, rows)]

    def setup(self, stage: Optional[str] = None) -> None:
        for split in ("train", "validation"):
            self.splits.setdefault(split, self._examples(split))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        collate = lambda rows: {key: torch.stack([row[key] for row in rows]) for key in rows[0]}  # noqa: E731
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle, collate_fn=collate,
                          drop_last=shuffle, generator=generator)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)
