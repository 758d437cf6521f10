"""Frequency baselines: token counts per target class, and the accuracy of two predictors that need no model.

- **most frequent**: always predict the most frequent token of the counted data (``[NEXT]`` on most corpora);
- **class most frequent**: an oracle that knows each target's class and predicts the most frequent token
  of that class (``mov`` for a mnemonic, ``rax`` for a register, ...).

Counts come from the run's training split when it is available (else from the evaluated data), over
every non-padding position, classes decided as for targets; tokens that masking excludes are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor

from undertale.data.parquet import matrix
from undertale.metrics.token_classes import CLASSES, position_classes


def class_token_counts(files: Sequence[Path], table: Tensor, exclude_ids: Sequence[int] = ()) -> np.ndarray:
    """How often each token occurs in each class at the non-padding positions of tokenized or packed shards.

    Arguments:
        files: shards with ``tokens`` and ``mask`` columns.
        table: the per-id class table (:func:`~undertale.metrics.token_classes.token_class_table`).
        exclude_ids: ids never counted (``masking.exclude``: they are never targets).

    Returns:
        int64 array (classes, vocabulary).
    """
    size = len(table)
    flat = torch.zeros(len(CLASSES) * size, dtype=torch.long)
    for path in files:
        handle = pq.ParquetFile(path)
        for group in range(handle.metadata.num_row_groups):
            chunk = handle.read_row_group(group, columns=["tokens", "mask"])
            tokens = torch.from_numpy(matrix(chunk.column("tokens")).astype(np.int64))
            mask = torch.from_numpy(matrix(chunk.column("mask")).astype(np.int64))
            real = mask != 0
            classes = position_classes(tokens, mask, table)
            flat += torch.bincount(classes[real] * size + tokens[real], minlength=len(flat))
    counts = flat.view(len(CLASSES), size).numpy()
    counts[:, list(exclude_ids)] = 0
    return counts


@dataclass(frozen=True)
class Baselines:
    """The tokens the two frequency predictors choose.

    Arguments:
        most_frequent: the most frequent token overall.
        class_most_frequent: the most frequent token of each class (-1 for a class never seen).
        source: where the counts come from, in words.
    """

    most_frequent: int
    class_most_frequent: tuple[int, ...]
    source: str

    @classmethod
    def from_counts(cls, counts: np.ndarray, source: str) -> "Baselines":
        """From :func:`class_token_counts`."""
        per_class = tuple(int(row.argmax()) if row.any() else -1 for row in counts)
        return cls(int(counts.sum(0).argmax()), per_class, source)

    def accuracies(self, targets: np.ndarray) -> dict[str, np.ndarray]:
        """Each predictor's correct targets per class.

        Arguments:
            targets: the evaluated targets counted by class and token, (classes, vocabulary).

        Returns:
            ``most_frequent`` and ``class_most_frequent``: int64 arrays (classes,) of correct predictions.
        """
        rows = np.arange(len(targets))
        chosen = np.array(self.class_most_frequent)
        known = chosen >= 0
        return {
            "most_frequent": targets[:, self.most_frequent].astype(np.int64),
            "class_most_frequent": np.where(known, targets[rows, np.where(known, chosen, 0)], 0).astype(np.int64),
        }
