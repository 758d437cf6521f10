"""``data=system|binaries|parquet|debian``: the data settings, prepared into shards and loaded for a task's collator.

``python train.py data=...`` instantiates :class:`DataConfig`; :meth:`DataConfig.prepare`
builds (or reuses) corpus, tokenizer and tokenized shards, and
:meth:`DataConfig.datamodule` loads them. The settings and their checks are
:class:`~undertale.settings.data.DataSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from undertale.data.corpus.build import CorpusOptions
from undertale.data.datamodule import InstructionTraceDataModule
from undertale.data.pipeline import PreparedData, prepare
from undertale.settings.data import DataSettings


@dataclass(frozen=True)
class DataConfig(DataSettings):
    """:class:`~undertale.settings.data.DataSettings` that prepare and load their data."""

    def prepare(self, sequence_length: int, progress: bool = True) -> PreparedData:
        """Corpus, tokenizer and tokenized (and packed) shards for this source; cached, one process builds."""
        options = CorpusOptions(
            seed=self.seed, validation_fraction=self.validation_fraction, max_functions=self.max_functions,
            limits=self.limits,
        )
        return prepare(
            source=self.source,
            cache_dir=self.cache,
            paths=list(self.paths) if self.paths else None,
            directory=self.directory,
            packages=self.packages,
            mirror=self.mirror,
            suite=self.suite,
            allow_missing=self.allow_missing,
            tokenizer=self.tokenizer,
            sequence_length=sequence_length,
            merges=self.merges,
            tokenizer_functions=self.tokenizer_functions,
            corpus_options=options,
            workers=self.workers,
            packing=self.packing,
            progress=progress,
            scheduler=self.scheduler,
        )

    def datamodule(self, prepared: PreparedData, collator: Callable) -> InstructionTraceDataModule:
        """Train and validation loaders over the prepared shards, batches made by ``collator``."""
        return InstructionTraceDataModule(
            str(prepared.tokenized), collator, batch_size=self.batch_size, num_workers=self.num_workers,
            seed=self.seed, shuffle_buffer=self.shuffle_buffer, pin_memory=self.pin_memory,
        )
