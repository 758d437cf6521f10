"""``task=similarity``: contrastive fine-tuning for function search across optimisation levels.

``python train.py task=similarity pretrained=<pretraining run> data.pairs=<pairs dir>`` loads the
pretrained encoder (its sizes and tokenizer come from that run), adds a projection head and trains
with InfoNCE over in-batch (and cross-rank) negatives; ``pretrained=null`` trains from scratch with
``data.tokenizer`` and the ``model`` sizes. Validation logs ``val/mrr`` and ``val/recall@1`` at pool
``pool`` on the validation projects; checkpoints follow ``val/mrr``.
"""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from undertale.tasks import Task, TaskParts

if TYPE_CHECKING:
    import lightning
    from omegaconf import DictConfig

MODULE = "undertale.models.similarity.InstructionTraceTransformerEncoderForSimilarity"


def _overridden(overrides: Sequence[str], group: str) -> bool:
    """Whether the command line sets ``group`` or one of its keys."""
    return any(item.lstrip("+~").split("=", 1)[0].split(".", 1)[0] == group for item in overrides if "=" in item)


class SimilarityTask(Task):
    """Fine-tune :class:`~undertale.models.similarity.InstructionTraceTransformerEncoderForSimilarity`.

    Arguments:
        temperature: InfoNCE temperature.
        projection_size: width of the search embeddings.
        pooling: ``mean``, ``first`` or ``mean+max``.
        pool: validation pool size (``val/mrr`` at this pool).
        entry_weight: the loss's share for each function's first window as a view of its own (0: none).
        dropout: the encoder's dropout while fine-tuning (None: the pretrained run's, or ``model.dropout``
            from scratch). Not a size, so it may differ from the pretraining run's.
        attention_dropout: the dropout of the attention weights while fine-tuning (None: the pretrained run's
            ``model.attention_dropout``, which itself defaults to ``dropout``). 0 keeps CPU attention fused.
        monitor, mode: see :class:`~undertale.tasks.Task` (``val/mrr``, ``max``).
    """

    def __init__(self, temperature: float = 0.05, projection_size: int = 128, pooling: str = "mean", pool: int = 32,
                 dropout: Optional[float] = None, attention_dropout: Optional[float] = None,
                 entry_weight: float = 0.0, monitor: str = "val/mrr", mode: str = "max"):
        from undertale.settings.similarity import check_similarity_settings

        super().__init__(monitor, mode)
        check_similarity_settings(temperature, projection_size, pooling, pool, dropout, attention_dropout,
                                  entry_weight)
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.settings = {"temperature": temperature, "projection_size": projection_size, "pooling": pooling,
                         "pool": pool, "entry_weight": entry_weight}
        self.validation_pairs: Optional[tuple[list[str], list[str]]] = None

    # --- before any work -------------------------------------------------------------------------

    @staticmethod
    def pretrained_run(cfg: "DictConfig"):
        """The pretrained run directory, checked (None for ``pretrained=null``)."""
        from undertale.runtime.runs import RunDirectory

        value = cfg.get("pretrained")
        if not value:
            return None
        run = RunDirectory(value)
        if not run.path.is_dir():
            raise ValueError(f"pretrained={value} is not a run directory")
        for path, what in ((run.config, "config.yaml"), (run.tokenizer, "tokenizer.json")):
            if not path.is_file():
                raise ValueError(f"pretrained={value} has no {what}; give the directory train.py printed as "
                                 "'run directory:'")
        if not run.has_checkpoint():
            raise ValueError(f"pretrained={value} has no checkpoint in {run.checkpoints}")
        return run

    def check(self, cfg: "DictConfig", overrides: Sequence[str] = ()) -> None:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        from undertale.settings.store import sizes_of

        data = instantiate(cfg.data, _convert_="all")
        if not hasattr(data, "check_pairs"):
            raise ValueError(f"task=similarity trains on pairs (data=pairs data.pairs=<dir>), not {cfg.data._target_}")
        data.check_pairs()
        run = self.pretrained_run(cfg)
        if run is None:
            if not data.tokenizer:
                raise ValueError("task=similarity with pretrained=null needs data.tokenizer=<tokenizer.json> "
                                 "(e.g. a pretraining run's, to compare with fine-tuning it)")
            if not Path(data.tokenizer).expanduser().is_file():
                raise ValueError(f"data.tokenizer={data.tokenizer} does not exist")
            return
        if data.tokenizer and not Path(data.tokenizer).expanduser().is_file():
            raise ValueError(f"data.tokenizer={data.tokenizer} does not exist (with pretrained=, drop it: the run's "
                             "tokenizer is used)")
        if data.tokenizer and not filecmp.cmp(Path(data.tokenizer).expanduser(), run.tokenizer, shallow=False):
            raise ValueError(f"data.tokenizer={data.tokenizer} differs from the tokenizer of pretrained={run.path}; "
                             "a pretrained encoder only reads its own tokenizer's ids (drop data.tokenizer)")
        theirs = sizes_of(OmegaConf.load(run.config).model).as_dict()  # a run saved before a field was added
        ours = sizes_of(cfg.model).as_dict()                            # has its default
        if _overridden(overrides, "model") and theirs != ours:
            different = [f"{key} {ours[key]} vs {theirs[key]}" for key in ours if ours[key] != theirs[key]]
            hint = (" (for dropout: task.dropout=... or task.attention_dropout=...)"
                    if any("dropout " in item for item in different) else "")
            raise ValueError(f"model sizes differ from pretrained={run.path} ({'; '.join(different)}); "
                             f"drop the model override: a fine-tuned model takes the pretrained run's sizes{hint}")

    def resolve(self, cfg: "DictConfig", overrides: Sequence[str] = ()) -> "DictConfig":
        from omegaconf import OmegaConf, open_dict

        run = self.pretrained_run(cfg)
        cfg = cfg.copy()
        with open_dict(cfg):
            if run is not None:
                cfg.model = OmegaConf.load(run.config).model
                cfg.data.tokenizer = str(run.tokenizer.resolve())
            for key in ("dropout", "attention_dropout"):
                if getattr(self, key) is not None:
                    cfg.model[key] = float(getattr(self, key))
            cfg.model._target_ = MODULE  # the saved config names the module this run trains
        return cfg

    # --- the run ---------------------------------------------------------------------------------

    def build(self, cfg: "DictConfig", progress: bool = True) -> TaskParts:
        from hydra.utils import instantiate

        from undertale.settings.store import settings
        from undertale.data.tokenizer import load_tokenizer, special_ids
        from undertale.models.flops import training_flops_per_token
        from undertale.models.similarity import InstructionTraceTransformerEncoderForSimilarity, load_pretrained_encoder

        cfg = self.resolve(cfg)
        data = instantiate(cfg.data, _convert_="all")
        sizes = settings(cfg.model)
        tokenizer_path = Path(data.tokenizer).expanduser()
        ids = special_ids(load_tokenizer(tokenizer_path, sizes["sequence_length"]))
        optimizer = instantiate(cfg.optimizer, _convert_="all")
        module = InstructionTraceTransformerEncoderForSimilarity(
            **sizes, vocab_size=ids["vocab_size"], next_token_id=ids["next_token_id"], **self.settings,
            **optimizer.as_dict(),
        )
        run = self.pretrained_run(cfg)
        resuming = bool(cfg.get("resume") or cfg.get("ckpt_path"))
        if run is not None and not resuming:
            checkpoint = load_pretrained_encoder(module, run)
            if progress:
                print(f"pretrained: the encoder of {checkpoint}")
        datamodule = data.datamodule(tokenizer_path, sizes["sequence_length"])
        self.datamodule = datamodule
        return TaskParts(
            module=module, datamodule=datamodule, tokenizer=tokenizer_path, vocab_size=ids["vocab_size"],
            flops_per_token=training_flops_per_token(**sizes, vocab_size=0),
            description=f"pairs {data.pairs}: levels {', '.join(data.levels)}; validation "
                        f"{' vs '.join(datamodule.validation_sides())}{' (packed)' if data.packing else ''}",
        )

    def summarise(self, trainer: "lightning.Trainer", parts: TaskParts, metrics: dict) -> tuple[dict, Optional[str]]:
        """Adds TF-IDF over instruction n-grams on the same validation pools (the baseline to beat)."""
        from undertale.metrics.retrieval import pools, search_scores
        from undertale.metrics.tfidf import TfIdf

        queries, partners = self.datamodule.validation_texts()
        if len(queries) < 2:
            return {}, None
        tfidf = TfIdf(queries + partners)
        scores = search_scores(tfidf.vectors(queries), tfidf.vectors(partners),
                               pools(len(queries), self.settings["pool"], 0))
        extra = {"baseline/tfidf_mrr": scores["mrr"], "baseline/tfidf_recall@1": scores["recall@1"]}
        mrr = metrics.get("val/mrr")
        line = None
        if mrr is not None and metrics.get("status") == "finished":
            levels = " vs ".join(self.datamodule.validation_sides())
            line = (f"val/mrr {mrr:.4f} (pool {self.settings['pool']}, {levels}, {scores['queries']} of "
                    f"{len(queries)} pairs in {scores['pools']} pools)  vs  "
                    f"{scores['mrr']:.4f} TF-IDF over instruction n-grams ({mrr / max(scores['mrr'], 1e-9):.2f}x)")
        return extra, line
