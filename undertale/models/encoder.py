"""Transformer encoder over instruction traces.

Each token is embedded as the sum of its token, instruction-index and
argument-index embeddings (see ``docs/design.md``). Layers are pre-LayerNorm
with one fused QKV projection and one ``scaled_dot_product_attention`` call
for all heads.

Attention masks come from ``mask``: 0 marks padding; any other value names the
function (segment) a token belongs to, so several functions packed into one
row attend only within themselves. A plain 0/1 padding mask is the special
case of one function per row.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from undertale.data.positions import argument_index, instruction_index
from undertale.settings.model import attention_dropout_of


def check_tokens(state: Tensor, mask: Optional[Tensor], sequence_length: int, vocab_size: Optional[int] = None) -> None:
    """Validate a batch of token ids (and its mask) before a forward pass.

    Shape checks never synchronise with the device. The vocabulary range is
    checked for CPU tensors only, outside ``torch.compile``: on an accelerator
    that check would stall the stream, and the collator (CPU) already sees the ids.

    Raises:
        ValueError: on a wrong rank, a sequence longer than ``sequence_length``,
            a mask shape that differs from ``state``, or an id outside the
            vocabulary.
    """
    if state.dim() != 2:
        raise ValueError(f"expected tokens of shape (batch, length), got shape {tuple(state.shape)}")
    if state.shape[1] > sequence_length:
        raise ValueError(
            f"sequence of length {state.shape[1]} is longer than the model's sequence_length {sequence_length}"
        )
    if mask is not None and mask.shape != state.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from tokens shape {tuple(state.shape)}")
    if vocab_size is not None and state.device.type == "cpu" and state.numel() and not torch.compiler.is_compiling():
        low, high = int(state.min()), int(state.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {vocab_size})")


class InstructionTracePositionEmbedding(nn.Module):
    """Token + instruction-index + argument-index embeddings, then LayerNorm and dropout.

    Arguments:
        hidden_dimensions: embedding width.
        vocab_size: number of token ids.
        sequence_length: longest sequence (and so most instructions/arguments).
        next_token_id: id of ``[NEXT]``, which closes an instruction.
        dropout: dropout probability after the norm.
        eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        hidden_dimensions: int,
        vocab_size: int,
        sequence_length: int,
        next_token_id: int,
        dropout: float,
        eps: float,
    ):
        super().__init__()
        self.next_token_id = next_token_id
        self.token = nn.Embedding(vocab_size, hidden_dimensions)
        self.instruction = nn.Embedding(sequence_length, hidden_dimensions)
        self.argument = nn.Embedding(sequence_length, hidden_dimensions)
        self.norm = nn.LayerNorm(hidden_dimensions, eps=eps)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def compute_instruction_index(state: Tensor, next_token_id: int, segments: Optional[Tensor] = None) -> Tensor:
        """Index of the instruction each token belongs to: :func:`undertale.data.positions.instruction_index`."""
        return instruction_index(state, next_token_id, segments)

    @staticmethod
    def compute_argument_index(state: Tensor, next_token_id: int, segments: Optional[Tensor] = None) -> Tensor:
        """Position of each token within its instruction: :func:`undertale.data.positions.argument_index`."""
        return argument_index(state, next_token_id, segments)

    def forward(self, state: Tensor, segments: Optional[Tensor] = None) -> Tensor:
        instruction = self.compute_instruction_index(state, self.next_token_id, segments)
        argument = self.compute_argument_index(state, self.next_token_id, segments)
        embedded = self.token(state) + self.instruction(instruction) + self.argument(argument)
        return self.dropout(self.norm(embedded))


class SelfAttention(nn.Module):
    """Multi-head self-attention: one fused QKV projection, one SDPA call.

    ``dropout`` drops attention probabilities inside SDPA. At 0, CPU training keeps SDPA's fused
    kernel; above 0 it falls back to the unfused path (a training step of ``tiny`` on 2 CPU cores
    took about 1.4x as long, measured on fine-tuning batches; GPUs fuse both).
    """

    def __init__(self, hidden_dimensions: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_dimensions, 3 * hidden_dimensions)
        self.output = nn.Linear(hidden_dimensions, hidden_dimensions)

    def forward(self, hidden: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
        batch, length, width = hidden.shape
        qkv = self.qkv(hidden).view(batch, length, 3, self.heads, width // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.output(attended.transpose(1, 2).reshape(batch, length, width))


class EncoderLayer(nn.Module):
    """Pre-LayerNorm transformer layer: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, hidden_dimensions: int, heads: int, intermediate_dimensions: int, dropout: float, eps: float,
                 attention_dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_dimensions, eps=eps)
        self.attention = SelfAttention(hidden_dimensions, heads, attention_dropout)
        self.attention_output_dropout = nn.Dropout(dropout)
        self.feedforward_norm = nn.LayerNorm(hidden_dimensions, eps=eps)
        self.feedforward = nn.Sequential(
            nn.Linear(hidden_dimensions, intermediate_dimensions),
            nn.GELU(),
            nn.Linear(intermediate_dimensions, hidden_dimensions),
            nn.Dropout(dropout),
        )

    def forward(self, hidden: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
        hidden = hidden + self.attention_output_dropout(self.attention(self.attention_norm(hidden), attention_mask))
        return hidden + self.feedforward(self.feedforward_norm(hidden))


class InstructionTraceTransformerEncoder(nn.Module):
    """Stack of pre-LayerNorm layers over instruction-trace embeddings.

    Arguments:
        depth: number of layers.
        hidden_dimensions: model width; must be divisible by ``heads``.
        vocab_size: number of token ids.
        sequence_length: longest accepted sequence.
        heads: attention heads.
        intermediate_dimensions: feed-forward width.
        next_token_id: id of ``[NEXT]``.
        dropout: dropout probability of the hidden states.
        eps: LayerNorm epsilon.
        attention_dropout: dropout probability of the attention weights (None: ``dropout``). BERT's
            ``attention_probs_dropout_prob``; 0 keeps CPU attention on its fused kernel.

    Raises:
        ValueError: when ``heads`` does not divide ``hidden_dimensions`` or a size is not positive.
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
        *,
        attention_dropout: Optional[float] = None,
    ):
        super().__init__()
        for name, value in [
            ("depth", depth),
            ("hidden_dimensions", hidden_dimensions),
            ("vocab_size", vocab_size),
            ("sequence_length", sequence_length),
            ("heads", heads),
            ("intermediate_dimensions", intermediate_dimensions),
        ]:
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if hidden_dimensions % heads:
            raise ValueError(f"heads ({heads}) must divide hidden_dimensions ({hidden_dimensions})")
        if not 0 <= next_token_id < vocab_size:
            raise ValueError(f"next_token_id {next_token_id} is outside the vocabulary [0, {vocab_size})")
        self.vocab_size = vocab_size
        self.sequence_length = sequence_length
        self.embedding = InstructionTracePositionEmbedding(
            hidden_dimensions, vocab_size, sequence_length, next_token_id, dropout, eps
        )
        attention_dropout = attention_dropout_of(dropout, attention_dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(hidden_dimensions, heads, intermediate_dimensions, dropout, eps, attention_dropout)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(hidden_dimensions, eps=eps)

    def forward(self, state: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Encode token ids.

        Arguments:
            state: token ids, (batch, length).
            mask: optional (batch, length); 0 is padding, other values are
                segment (function) ids. Tokens attend only within their segment.

        Returns:
            Hidden states, (batch, length, hidden_dimensions).
        """
        check_tokens(state, mask, self.sequence_length, self.vocab_size)
        attention_mask = None if mask is None else (mask.unsqueeze(2) == mask.unsqueeze(1)).unsqueeze(1)
        hidden = self.embedding(state, mask)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask)
        return self.norm(hidden)
