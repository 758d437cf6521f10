"""Counting a model: training FLOPs per token and parameters."""

from __future__ import annotations

from typing import Any, Iterable, Optional

from torch import nn


def training_flops_per_token(depth: int, hidden_dimensions: int, intermediate_dimensions: int, vocab_size: int,
                              sequence_length: int, masked_fraction: float = 1.0, **_: Any) -> float:
    """Training FLOPs per token (forward + backward): 6 x matmul parameters + attention.

    The attention term is 12 x depth x hidden x length (QK^T and AV, forward
    and backward). ``masked_fraction`` scales the vocabulary projection, which
    runs on the target positions only; the default (1.0) counts it at every
    position, as model FLOPs are usually counted.
    """
    layer = 4 * hidden_dimensions * hidden_dimensions + 2 * hidden_dimensions * intermediate_dimensions
    head = hidden_dimensions * hidden_dimensions + masked_fraction * hidden_dimensions * vocab_size
    attention = 12 * depth * hidden_dimensions * sequence_length
    return 6 * (depth * layer + head) + attention


def count_parameters(module: nn.Module, where: Optional[Iterable[str]] = None) -> int:
    """Number of parameters, optionally only those whose name starts with one of ``where``."""
    prefixes = tuple(where) if where else None
    return sum(p.numel() for name, p in module.named_parameters() if prefixes is None or name.startswith(prefixes))
