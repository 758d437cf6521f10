"""The heads on the encoder: masked-token logits (pretraining) and the search projection (fine-tuning).

Plain ``torch.nn`` modules without Lightning, so that an exported model and :class:`FunctionEncoder`
build them without the training framework.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn


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


class ProjectionHead(nn.Module):
    """Pooled states to the search space: linear, GELU, linear (the SimCLR head).

    ``input_dimensions`` is the pooled width (twice the encoder's for ``mean+max``); the hidden layer has the
    encoder's width.
    """

    def __init__(self, hidden_dimensions: int, projection_size: int, input_dimensions: Optional[int] = None):
        super().__init__()
        self.transform = nn.Linear(input_dimensions or hidden_dimensions, hidden_dimensions)
        self.activation = nn.GELU()
        self.project = nn.Linear(hidden_dimensions, projection_size)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.project(self.activation(self.transform(pooled)))
