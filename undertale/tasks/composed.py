"""A task made of two config nodes, a LightningModule and a LightningDataModule: a new task needs no Python glue.

``conf/task/<name>.yaml`` names both classes (partial nodes with their own settings);
:class:`ComposedTask` builds each, offering it, by parameter name, what only the run
knows: the tokenizer's ids, the ``model`` sizes and the ``optimizer`` settings.
``docs/tasks.md`` walks through one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from undertale.settings.store import call_with_offered
from undertale.tasks import Task, TaskParts

if TYPE_CHECKING:
    from omegaconf import DictConfig


class ComposedTask(Task):
    """A task from a ``module`` node and a ``datamodule`` node.

    Arguments:
        module: a partial node of a LightningModule class. Offered, by parameter name: ``vocab_size``,
            ``pad_token_id``, ``next_token_id``, ``mask_token_id``, the ``model`` sizes (``depth``,
            ``hidden_dimensions``, ``heads``, ``intermediate_dimensions``, ``sequence_length``, ``dropout``,
            ``eps``), the ``optimizer`` settings (``lr``, ``warmup``, ...), ``tokenizer`` (the file) and ``seed``.
        datamodule: a partial node of a LightningDataModule class; offered the same values.
        tokenizer: the ``tokenizer.json`` both are built with (e.g. a pretraining run's).
        monitor, mode: see :class:`~undertale.tasks.Task`.
    """

    def __init__(self, module: Callable, datamodule: Callable, tokenizer: str, monitor: str, mode: str = "max"):
        super().__init__(monitor, mode)
        if not callable(module) or not callable(datamodule):
            raise ValueError("module and datamodule must be nodes with a _target_ (and _partial_: true)")
        if not tokenizer:
            raise ValueError("tokenizer is required: task.tokenizer=<tokenizer.json>")
        self.module = module
        self.datamodule = datamodule
        self.tokenizer = Path(tokenizer).expanduser()

    def check(self, cfg: "DictConfig", overrides=()) -> None:
        if not self.tokenizer.is_file():
            raise ValueError(f"task.tokenizer={self.tokenizer} does not exist")

    def build(self, cfg: "DictConfig", progress: bool = True) -> TaskParts:
        from hydra.utils import instantiate

        from undertale.settings.store import settings
        from undertale.data.tokenizer import PAD, load_tokenizer, special_ids
        from undertale.models.flops import training_flops_per_token

        sizes = settings(cfg.model)
        tokenizer = load_tokenizer(self.tokenizer, sizes["sequence_length"])
        ids = special_ids(tokenizer)
        optimizer = instantiate(cfg.optimizer, _convert_="all")
        offered = {**sizes, **optimizer.as_dict(), "vocab_size": ids["vocab_size"],
                   "next_token_id": ids["next_token_id"], "mask_token_id": ids["mask_token_id"],
                   "pad_token_id": tokenizer.token_to_id(PAD), "tokenizer": str(self.tokenizer), "seed": cfg.seed}
        module = call_with_offered(self.module, offered)
        datamodule = call_with_offered(self.datamodule, offered)
        return TaskParts(module=module, datamodule=datamodule, tokenizer=self.tokenizer, vocab_size=ids["vocab_size"],
                         flops_per_token=training_flops_per_token(**sizes, vocab_size=0),
                         description=f"{type(datamodule).__name__} for {type(module).__name__}")
