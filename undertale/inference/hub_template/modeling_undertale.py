"""Exported undertale models for ``transformers``: ``AutoModel`` (encoder) and ``AutoModelForMaskedLM``.

Written by ``python export.py`` from ``undertale/inference/hub_template/``. The encoder, the heads and the
pooling are undertale's own source files, copied beside this one at export time (``encoder.py``,
``positions.py``, ``heads.py``, ``pooling.py``, ``similarity_settings.py``); this file only wraps them in ``PreTrainedModel`` classes.

Inputs are ``input_ids`` and ``attention_mask`` (0 on padding; other values name the function a token
belongs to, so one row may hold several functions that never attend to each other). A row is at most
``config.sequence_length`` tokens.
"""

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, MaskedLMOutput

from .configuration_undertale import UndertaleConfig
from .encoder import InstructionTraceTransformerEncoder
from .heads import MaskedLMHead, ProjectionHead
from .similarity_settings import pooled_width
from .pooling import pool_functions


def build_encoder(config: UndertaleConfig) -> InstructionTraceTransformerEncoder:
    return InstructionTraceTransformerEncoder(
        depth=config.depth, hidden_dimensions=config.hidden_dimensions, vocab_size=config.vocab_size,
        sequence_length=config.sequence_length, heads=config.heads,
        intermediate_dimensions=config.intermediate_dimensions, next_token_id=config.next_token_id,
        dropout=config.dropout, eps=config.eps, attention_dropout=config.attention_dropout,
    )


class UndertalePreTrainedModel(PreTrainedModel):
    config_class = UndertaleConfig
    base_model_prefix = "undertale"  # no module has this name: weights are stored as encoder.*, head.*, projection.*
    main_input_name = "input_ids"
    _no_split_modules = ["EncoderLayer"]
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation, for weights a checkpoint does not hold (the trained ones are loaded over it)."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.embedding.token

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.encoder.embedding.token = value


class UndertaleModel(UndertalePreTrainedModel):
    """The encoder: ``last_hidden_state`` (batch, length, hidden) and ``pooler_output``, one vector per row.

    ``pooler_output`` pools the row's non-padding tokens with ``config.pooling``; a fine-tuned similarity model
    (``config.task == "similarity"``) then applies its projection head and scales to unit length. It is the
    vector of one window: undertale's ``FunctionEncoder`` also combines the windows of longer functions.
    """

    _keys_to_ignore_on_load_unexpected = [r"^head\."]  # a pretraining export's masked-LM head

    def __init__(self, config: UndertaleConfig):
        super().__init__(config)
        self.encoder = build_encoder(config)
        self.projection = None
        if config.task == "similarity":
            self.projection = ProjectionHead(config.hidden_dimensions, config.projection_size,
                                             pooled_width(config.hidden_dimensions, config.pooling))
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                return_dict: Optional[bool] = None, **_) -> BaseModelOutputWithPooling:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids, attention_mask)
        rows = torch.arange(len(hidden), device=hidden.device).unsqueeze(1)
        owner = torch.where(attention_mask != 0, rows, -1)
        pooled = pool_functions(hidden, owner, len(hidden), self.config.pooling)
        if self.projection is not None:
            pooled = F.normalize(self.projection(pooled).float(), dim=-1)
        output = BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)
        return output if return_dict is not False else output.to_tuple()


class UndertaleForMaskedLM(UndertalePreTrainedModel):
    """The encoder and its masked-LM head: ``logits`` (batch, length, vocab), and ``loss`` given ``labels``
    (-100 where a position is not a target)."""

    def __init__(self, config: UndertaleConfig):
        super().__init__(config)
        self.encoder = build_encoder(config)
        self.head = MaskedLMHead(config.hidden_dimensions, config.vocab_size, config.eps)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, return_dict: Optional[bool] = None, **_) -> MaskedLMOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids, attention_mask)
        logits = self.head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=None)
        return output if return_dict is not False else output.to_tuple()
