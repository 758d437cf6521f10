"""Where each token stands in its instruction trace: the instruction index and the argument index.

A property of the text format (``docs/design.md``): ``[NEXT]`` closes the instruction it follows. The
encoder embeds both indices (:class:`~undertale.models.encoder.InstructionTracePositionEmbedding`), and
the target classes of evaluation read them (:mod:`undertale.metrics.token_classes`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def segment_starts(mask: Tensor) -> Tensor:
    """Boolean (batch, length): True where a new segment (function or padding run) begins."""
    starts = torch.ones_like(mask, dtype=torch.bool)
    starts[:, 1:] = mask[:, 1:] != mask[:, :-1]
    return starts


def _as_batch(state: Tensor, segments: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor], bool]:
    """A (length,) input as a batch of one, and whether to squeeze the result back."""
    if state.dim() != 1:
        return state, segments, False
    return state.unsqueeze(0), None if segments is None else segments.unsqueeze(0), True


def instruction_index(state: Tensor, next_token_id: int, segments: Optional[Tensor] = None) -> Tensor:
    """Index of the instruction each token belongs to.

    ``foo bar baz [NEXT] blah`` gives ``0 0 0 0 1``: ``[NEXT]`` closes the
    instruction it follows. With ``segments`` (a mask of function ids), the
    count restarts at each segment.

    Arguments:
        state: token ids, (length,) or (batch, length).
        next_token_id: id of ``[NEXT]``.
        segments: optional segment ids of the same shape.

    Returns:
        LongTensor of the same shape as ``state``.
    """
    state, segments, squeeze = _as_batch(state, segments)
    is_next = (state == next_token_id).long()
    index = torch.cumsum(is_next, dim=1) - is_next
    if segments is not None:
        positions = torch.arange(state.shape[1], device=state.device).expand_as(state)
        start = torch.where(segment_starts(segments), positions, 0).cummax(dim=1).values
        index = index - index.gather(1, start)
    return index.squeeze(0) if squeeze else index


def argument_index(state: Tensor, next_token_id: int, segments: Optional[Tensor] = None) -> Tensor:
    """Position of each token within its instruction, with the arguments and result of :func:`instruction_index`.

    ``foo bar baz [NEXT] blah`` gives ``0 1 2 3 0``. With ``segments``, the
    count also restarts where a segment begins.
    """
    state, segments, squeeze = _as_batch(state, segments)
    positions = torch.arange(state.shape[1], device=state.device).expand_as(state)
    begins = torch.zeros_like(state, dtype=torch.bool)
    begins[:, 1:] = state[:, :-1] == next_token_id
    if segments is not None:
        begins = begins | segment_starts(segments)
    start = torch.where(begins, positions, 0).cummax(dim=1).values
    index = positions - start
    return index.squeeze(0) if squeeze else index
