"""One vector per function from encoder states: the poolings of fine-tuning, validation and embed.py."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def pool_functions(hidden: Tensor, owner: Tensor, count: int, pooling: str = "mean") -> Tensor:
    """One vector per function from packed rows.

    Arguments:
        hidden: (rows, length, width) encoder states.
        owner: (rows, length) the function each position belongs to, in ``[0, count)``; -1 for padding.
            A function may span several segments (windows of a long function).
        count: number of functions.
        pooling: ``mean`` (over all the function's tokens), ``first`` (its first token) or ``mean+max``
            (the mean and the element-wise maximum over its tokens, side by side).

    Returns:
        (count, width) in float32; (count, 2 * width) for ``mean+max``.
    """
    width = hidden.shape[-1]
    flat = hidden.reshape(-1, width).float()
    owners = owner.reshape(-1)
    real = owners >= 0
    if pooling == "first":
        # the first position of each function: positions ordered, keep the lowest index per owner
        positions = torch.arange(owners.numel(), device=owners.device)
        first = torch.full((count,), owners.numel(), device=owners.device, dtype=torch.long)
        first = first.scatter_reduce(0, owners.clamp(min=0), torch.where(real, positions, owners.numel()), "amin")
        return flat[first.clamp(max=owners.numel() - 1)]
    sums = torch.zeros(count, width, device=hidden.device, dtype=flat.dtype)
    sums.index_add_(0, owners[real], flat[real])
    tokens = torch.zeros(count, device=hidden.device, dtype=flat.dtype)
    tokens.index_add_(0, owners[real], torch.ones_like(owners[real], dtype=flat.dtype))
    mean = sums / tokens.clamp(min=1).unsqueeze(1)
    if pooling != "mean+max":
        return mean
    index = owners[real].unsqueeze(1).expand(-1, width)
    maxima = torch.zeros(count, width, device=hidden.device, dtype=flat.dtype)  # a function with no tokens: 0
    maxima = maxima.scatter_reduce(0, index, flat[real], "amax", include_self=False)
    return torch.cat([mean, maxima], dim=-1)


def search_vectors(whole: torch.Tensor, entry: torch.Tensor) -> torch.Tensor:
    """``windows=all+first``: each function's whole and entry vectors at unit length, side by side, / sqrt(2).

    The result has unit length, and the dot product of two results is the mean of the two cosines. Used by
    :meth:`~undertale.inference.embedding.FunctionEncoder.embed` and by a similarity model's validation, so both search with one vector.
    """
    unit = torch.nn.functional.normalize
    return torch.cat([unit(whole.float(), dim=-1), unit(entry.float(), dim=-1)], dim=-1) / math.sqrt(2)
