"""Distributed strategies that need more than a YAML value: FSDP with one encoder layer per unit."""

from __future__ import annotations

from lightning.pytorch.strategies import FSDPStrategy


def layer_sharded_fsdp(activation_checkpointing: bool = False, sharding_strategy: str = "FULL_SHARD",
                       state_dict_type: str = "sharded", **kwargs) -> FSDPStrategy:
    """Lightning's FSDP strategy wrapping each encoder layer as its own unit.

    Arguments:
        activation_checkpointing: recompute each layer's activations in the backward pass (less memory, ~1/3 more compute).
        sharding_strategy: ``FULL_SHARD`` (parameters, gradients, optimizer state), ``SHARD_GRAD_OP`` or ``HYBRID_SHARD``.
        state_dict_type: ``sharded`` (each rank writes its shard; resume reads them back) or ``full``.
        **kwargs: any other :class:`~lightning.pytorch.strategies.FSDPStrategy` argument.
    """
    from undertale.models.encoder import EncoderLayer

    return FSDPStrategy(
        auto_wrap_policy={EncoderLayer},
        activation_checkpointing_policy={EncoderLayer} if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        **kwargs,
    )
