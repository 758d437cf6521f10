"""The configuration of an exported undertale model (remote code for ``transformers``' Auto classes).

Written by ``python export.py`` from ``undertale/inference/hub_template/``; the field names are the
keyword arguments of ``InstructionTraceTransformerEncoder`` (``encoder.py`` beside this file).
"""

from typing import Optional

try:  # transformers 5 spells it PreTrainedConfig; 4.x PretrainedConfig
    from transformers import PreTrainedConfig
except ImportError:  # pragma: no cover
    from transformers import PretrainedConfig as PreTrainedConfig


class UndertaleConfig(PreTrainedConfig):
    """An instruction-trace encoder's sizes, special token ids and task (``maskedlm`` or ``similarity``).

    ``pooling``, ``projection_size`` and ``windows`` describe how a function becomes one vector
    (``pooler_output`` of ``UndertaleModel``; ``FunctionEncoder`` in undertale).
    """

    model_type = "undertale"
    attribute_map = {
        "hidden_size": "hidden_dimensions",
        "num_hidden_layers": "depth",
        "num_attention_heads": "heads",
        "intermediate_size": "intermediate_dimensions",
        "max_position_embeddings": "sequence_length",
        "layer_norm_eps": "eps",
    }

    def __init__(self, depth: int = 2, hidden_dimensions: int = 128, heads: int = 4,
                 intermediate_dimensions: int = 512, sequence_length: int = 128, vocab_size: int = 8,
                 next_token_id: int = 5, mask_token_id: int = 4, pad_token_id: int = 0, dropout: float = 0.0,
                 attention_dropout: Optional[float] = None, eps: float = 1e-12, task: str = "maskedlm",
                 pooling: str = "mean", projection_size: Optional[int] = None, windows: str = "all+first",
                 **kwargs):
        self.depth = depth
        self.hidden_dimensions = hidden_dimensions
        self.heads = heads
        self.intermediate_dimensions = intermediate_dimensions
        self.sequence_length = sequence_length
        self.vocab_size = vocab_size
        self.next_token_id = next_token_id
        self.mask_token_id = mask_token_id
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.eps = eps
        self.task = task
        self.pooling = pooling
        self.projection_size = projection_size
        self.windows = windows
        kwargs.setdefault("tie_word_embeddings", False)  # the masked-LM head has its own decoder weights
        super().__init__(pad_token_id=pad_token_id, **kwargs)
