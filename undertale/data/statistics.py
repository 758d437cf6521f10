"""Corpus statistics: token frequencies and the most-frequent-token baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow.parquet as pq

from undertale.data.parquet import matrix


def token_counts(files: Sequence[Path], vocab_size: int) -> np.ndarray:
    """How often each token id occurs at non-padding positions of ``files``."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for path in files:
        handle = pq.ParquetFile(path)
        for group in range(handle.metadata.num_row_groups):
            table = handle.read_row_group(group, columns=["tokens", "mask"])
            tokens, mask = matrix(table.column("tokens")), matrix(table.column("mask"))
            counts += np.bincount(tokens[mask != 0], minlength=vocab_size)[:vocab_size]
    return counts


def most_frequent_token_accuracy(train: Sequence[Path], validation: Sequence[Path], vocab_size: int) -> tuple[int, float]:
    """The train split's most frequent token, and the masked-token accuracy of always predicting it on validation.

    Masked positions are drawn uniformly from the non-padding tokens, so the
    expected accuracy is that token's share of the validation tokens.
    """
    token = int(np.argmax(token_counts(train, vocab_size)))
    validation_counts = token_counts(validation, vocab_size)
    return token, float(validation_counts[token] / max(1, validation_counts.sum()))
