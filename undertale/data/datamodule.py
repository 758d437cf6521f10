"""LightningDataModule over tokenized shards (``train/`` and ``validation/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import lightning
import torch
from torch.utils.data import DataLoader

from undertale.data.dataset import TokenizedParquetDataset
from undertale.data.encode import tokenized_files
from undertale.data.pipeline import COMPLETE, PACKED
from undertale.data.workers import PreemptibleLoader


class EpochLoader(PreemptibleLoader):
    """A DataLoader that starts each pass of its dataset at ``epoch()`` (None: the dataset's own epoch).

    Lightning tells only samplers which epoch starts; this tells the
    :class:`TokenizedParquetDataset`, so each epoch is shuffled anew, and once a pass has taken the skip
    of a resumed epoch (loader workers copy the dataset as the pass starts) it drops the skip here too.
    """

    def __init__(self, dataset: TokenizedParquetDataset, epoch: Optional[Callable[[], Optional[int]]] = None, **kwargs):
        super().__init__(dataset, **kwargs)
        self.epoch = epoch

    def __iter__(self):
        epoch = self.epoch() if self.epoch is not None else None
        if epoch is not None:
            self.dataset.set_epoch(epoch)
        iterator = super().__iter__()
        self.dataset.resume_at(0)
        return iterator


class EpochDataModule(lightning.LightningDataModule):
    """A data module whose training dataset (with ``set_epoch`` and ``resume_at``) is told which epoch runs and,
    on a run resumed mid-epoch, how many of its batches were already trained on.

    Subclasses set ``self.train_dataset`` in ``setup`` and return :meth:`epoch_loader` from ``train_dataloader``.
    """

    train_dataset = None

    def rank(self) -> tuple[int, int]:
        """This process's DDP rank and the world size ((0, 1) outside a trainer)."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def epoch_loader(self, dataset, **options) -> EpochLoader:
        trainer = self.trainer
        if trainer is not None:
            dataset.set_epoch(trainer.current_epoch)
            # batches of this epoch already trained on; `processed` (not `completed`) also counts the batch
            # whose on_train_batch_end saved the checkpoint
            dataset.resume_at(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        return EpochLoader(dataset, self._epoch, **options)

    def _epoch(self) -> Optional[int]:
        return self.trainer.current_epoch if self.trainer is not None else None

    def on_train_epoch_start(self) -> None:
        """Called by :class:`~undertale.training.callbacks.DataEpoch` as each epoch starts afresh (not when
        resumed mid-epoch); the train loader also sets the epoch itself, so the callback is optional."""
        if self.trainer is not None and self.train_dataset is not None:
            self.train_dataset.set_epoch(self.trainer.current_epoch)
            self.train_dataset.resume_at(0)


class InstructionTraceDataModule(EpochDataModule):
    """Train and validation loaders of masked-LM batches.

    Arguments:
        directory: tokenized data with ``train/`` and ``validation/`` shards.
        collator: turns a batch of ``tokens``/``mask`` into the model's input
            (e.g. :class:`~undertale.models.maskedlm.MaskedLMCollator`).
        batch_size: rows per batch on each rank.
        num_workers: loader worker processes per rank.
        seed: shuffling seed (the epoch is added to it).
        shuffle_buffer: rows held for shuffling.
        pin_memory: pin host memory; default: when a GPU is present.
        even_ranks: equal rows per DDP rank (see :class:`TokenizedParquetDataset`).
        drop_last: drop each loader worker's last incomplete training batch, so every step has the
            same shape (no torch.compile recompilation); rows dropped differ from epoch to epoch.

    Raises:
        ValueError: at setup, naming the path, when a split has no rows.
    """

    def __init__(
        self,
        directory: str,
        collator: Callable,
        batch_size: int = 32,
        num_workers: int = 2,
        seed: int = 0,
        shuffle_buffer: int = 8192,
        pin_memory: Optional[bool] = None,
        even_ranks: bool = True,
        drop_last: bool = True,
    ):
        super().__init__()
        self.directory = Path(directory)
        self.collator = collator
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.even_ranks = even_ranks
        self.drop_last = drop_last
        self.train_dataset: Optional[TokenizedParquetDataset] = None
        self.val_dataset: Optional[TokenizedParquetDataset] = None

    def _dataset(self, split: str, shuffle: bool) -> TokenizedParquetDataset:
        rank, world = self.rank()
        try:
            files = tokenized_files(self.directory, split)
        except FileNotFoundError as error:
            raise ValueError(f"no {split} data: {error}") from error
        dataset = TokenizedParquetDataset(
            files,
            self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            shuffle_buffer=self.shuffle_buffer,
            even_ranks=self.even_ranks and shuffle,
            drop_last=self.drop_last and shuffle,
            rank=rank,
            world_size=world,
        )
        dataset.loader_workers = max(1, self.num_workers)
        if shuffle and len(dataset) == 0:
            raise ValueError(
                f"{self.directory / split}: {dataset.total_rows} rows make no full batch of {self.batch_size} "
                f"for each of {world} rank(s) x {dataset.loader_workers} loader worker(s); lower data.batch_size "
                "or data.num_workers, or use more data"
            )
        return dataset

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._dataset("train", shuffle=True)
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            self.val_dataset = self._dataset("validation", shuffle=False)

    def _options(self) -> dict:
        return {"batch_size": None, "collate_fn": self.collator, "num_workers": self.num_workers,
                "pin_memory": self.pin_memory, "persistent_workers": False,  # workers must see each set_epoch
                "prefetch_factor": 4 if self.num_workers else None, "unreadable_hint": self._unreadable_hint()}

    def _unreadable_hint(self) -> str:
        """What to do about a shard a loader worker cannot read: a prepared folder (the data cache's) is
        prepared again once deleted; a user's own shards are theirs to replace."""
        if any((self.directory / marker).is_file() for marker in (COMPLETE, PACKED)):
            return f"the shard is damaged: delete {self.directory} and run again to rebuild it"
        return "the shard is damaged: replace it"

    def train_dataloader(self) -> DataLoader:
        return self.epoch_loader(self.train_dataset, **self._options())

    def val_dataloader(self) -> DataLoader:
        return EpochLoader(self.val_dataset, **self._options())
