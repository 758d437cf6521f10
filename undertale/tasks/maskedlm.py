"""``task=maskedlm`` (the default): masked-language-model pretraining on instruction traces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from undertale.tasks import Task, TaskParts
from undertale.settings.store import DATA_TARGET

if TYPE_CHECKING:
    import lightning
    from omegaconf import DictConfig


class MaskedLMTask(Task):
    """Pretrain :class:`~undertale.models.maskedlm.InstructionTraceTransformerEncoderForMaskedLM`.

    The ``model`` group is the module (partial: token ids and optimizer settings are added here),
    ``masking`` the collator, ``data`` a :class:`~undertale.data.config.DataConfig` (corpus, tokenizer,
    tokenized shards). Validation logs ``val/accuracy`` (the default ``monitor``), overall and per
    target class; the summary adds the most-frequent-token baseline.
    """

    def __init__(self, monitor: str = "val/accuracy", mode: str = "max"):
        super().__init__(monitor, mode)
        self.prepared = None

    def check(self, cfg: "DictConfig", overrides: Sequence[str] = ()) -> None:
        if cfg.data.get("_target_") != DATA_TARGET:
            raise ValueError(f"task=maskedlm trains on corpus data (data=system, binaries or parquet), "
                             f"not {cfg.data.get('_target_')}")

    def build(self, cfg: "DictConfig", progress: bool = True) -> TaskParts:
        from hydra.utils import instantiate

        from undertale.data.tokenizer import load_tokenizer, special_ids
        from undertale.metrics.token_classes import token_class_table
        from undertale.models.flops import training_flops_per_token
        from undertale.models.masking import build_collator
        from undertale.runtime.errors import ConfigError

        data = instantiate(cfg.data, _convert_="all")
        self.prepared = data.prepare(cfg.model.sequence_length, progress=progress)
        tokenizer = load_tokenizer(self.prepared.tokenizer, cfg.model.sequence_length)
        ids = special_ids(tokenizer)
        optimizer = instantiate(cfg.optimizer, _convert_="all")
        model = instantiate(cfg.model)(vocab_size=ids["vocab_size"], next_token_id=ids["next_token_id"],
                                       mask_token_id=ids["mask_token_id"], **optimizer.as_dict())
        model.set_token_classes(token_class_table(tokenizer))  # val/accuracy/<class>
        try:
            collator = build_collator(cfg.masking, tokenizer)  # token ids, masking.exclude mapped to ids
        except ValueError as error:
            raise ConfigError(str(error)) from None
        return TaskParts(
            module=model, datamodule=data.datamodule(self.prepared, collator), tokenizer=self.prepared.tokenizer,
            vocab_size=ids["vocab_size"], flops_per_token=training_flops_per_token(**model.hparams),
            description=f"{self.prepared.tokenized}{' (packed)' if data.packing else ''}",
        )

    def summarise(self, trainer: "lightning.Trainer", parts: TaskParts, metrics: dict) -> tuple[dict, Optional[str]]:
        from undertale.data.encode import tokenized_files
        from undertale.data.statistics import most_frequent_token_accuracy

        tokenized = self.prepared.tokenized
        token, baseline = most_frequent_token_accuracy(
            tokenized_files(tokenized, "train"), tokenized_files(tokenized, "validation"), parts.vocab_size
        )
        extra = {"baseline/most_frequent_token_accuracy": baseline, "baseline/most_frequent_token_id": token}
        accuracy = metrics.get("val/accuracy")
        line = None
        if accuracy is not None and metrics.get("status") == "finished":
            line = (f"val/accuracy {accuracy:.4f}  vs  {baseline:.4f} always predicting the most frequent token "
                    f"({accuracy / max(baseline, 1e-9):.1f}x)")
        return extra, line
