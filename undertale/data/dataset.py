"""Streaming dataset over tokenized parquet shards, shared by DDP ranks and loader workers.

Each epoch, the row groups of all shards are put in a seeded order; that
ordered stream of rows is cut into one contiguous range per consumer (DDP rank
x loader worker), so every row is read exactly once per epoch across the
world. Rows are shuffled within a bounded buffer and emitted as batches of
numpy-backed tensors (no per-row Python objects on the hot path).

Resuming mid-epoch: given the number of batches the loader already delivered
this epoch, each consumer works out how many of its own batches that was (the
DataLoader takes batches from its workers in turn) and skips them. The skip
belongs to the epoch it was asked for and is taken once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from undertale.data.parquet import matrix, open_parquet

COLUMNS = ("tokens", "mask")


@dataclass(frozen=True)
class RowGroup:
    """One readable unit: a row group of a shard."""

    path: str
    index: int
    rows: int


def row_groups(files: Sequence[Path]) -> list[RowGroup]:
    """Every row group of ``files``, checking their schema first.

    Raises:
        ValueError: naming a file that is corrupt or lacks ``tokens``/``mask``.
    """
    units = []
    for path in files:
        handle = open_parquet(Path(path), COLUMNS)
        metadata = handle.metadata
        units.extend(RowGroup(str(path), i, metadata.row_group(i).num_rows) for i in range(metadata.num_row_groups))
    return units


def consumer_range(total: int, consumer: int, consumers: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of a stream of ``total`` rows that one of ``consumers`` reads."""
    return total * consumer // consumers, total * (consumer + 1) // consumers


def batches_in(rows: int, batch_size: int, drop_last: bool) -> int:
    return rows // batch_size if drop_last else math.ceil(rows / batch_size)


def batches_already_taken(per_worker: Sequence[int], delivered: int) -> tuple[list[int], int]:
    """Replay the DataLoader's turn-taking for ``delivered`` batches.

    The DataLoader takes one batch from each live worker in order, dropping
    workers that run out. Returns how many batches each worker had delivered,
    and the worker whose turn comes next.
    """
    taken = [0] * len(per_worker)
    turn = 0
    for _ in range(delivered):
        live = [w for w in range(len(per_worker)) if taken[w] < per_worker[w]]
        if not live:
            break
        worker = next((w for w in live if w >= turn), live[0])
        taken[worker] += 1
        turn = worker + 1
    live = [w for w in range(len(per_worker)) if taken[w] < per_worker[w]]
    following = next((w for w in live if w >= turn), live[0] if live else 0)
    return taken, following


class TokenizedParquetDataset(IterableDataset):
    """Batches of ``tokens`` and ``mask`` (and a per-batch ``seed``) from tokenized shards.

    Arguments:
        files: tokenized parquet shards.
        batch_size: rows per batch.
        shuffle: shuffle row-group order (seeded per epoch) and rows within a buffer.
        seed: base seed; the epoch is added to it.
        shuffle_buffer: rows held for shuffling.
        drop_last: drop each consumer's last incomplete batch.
        even_ranks: give every rank the same number of rows (dropping at most
            ``world - 1`` rows per epoch) so DDP ranks run the same number of
            steps; turn off to read every row.
        rank, world_size: this process's DDP rank and the world size.

    Raises:
        ValueError: when a file is unreadable or the shards hold no rows.
    """

    def __init__(
        self,
        files: Sequence[Path],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 8192,
        drop_last: bool = False,
        even_ranks: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.units = row_groups(files)
        self.total_rows = sum(unit.rows for unit in self.units)
        if not self.total_rows:
            raise ValueError(f"no rows in {len(files)} shard(s) starting with {files[0] if files else '(none)'}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = max(shuffle_buffer, batch_size)
        self.drop_last = drop_last
        self.even_ranks = even_ranks
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.resume_batches = 0
        self.loader_workers = 1  # set by the data module: len() counts batches across workers

    def set_epoch(self, epoch: int) -> None:
        """Read ``epoch`` next (its own shuffle); a skip asked for another epoch is dropped."""
        if epoch != self.epoch:
            self.resume_batches = 0
        self.epoch = epoch

    def resume_at(self, batches: int) -> None:
        """Skip the first ``batches`` that the loader delivered in the current epoch, once.

        The next pass takes the skip, and iterating drops it in the process that iterates. Loader
        workers iterate copies, so this copy keeps it until :meth:`set_epoch` moves to another epoch
        or ``resume_at(0)``; :class:`~undertale.data.datamodule.InstructionTraceDataModule`'s loader
        does both at each pass.
        """
        if batches < 0:
            raise ValueError(f"resume_at needs a count of delivered batches >= 0, got {batches}")
        self.resume_batches = batches

    def rank_range(self) -> tuple[int, int]:
        """Rows ``[start, stop)`` of the epoch's stream that this rank reads."""
        if self.even_ranks:
            per_rank = self.total_rows // self.world_size
            return self.rank * per_rank, (self.rank + 1) * per_rank
        return consumer_range(self.total_rows, self.rank, self.world_size)

    def rank_rows(self) -> int:
        """Rows this rank reads in an epoch."""
        start, stop = self.rank_range()
        return stop - start

    def worker_rows(self, workers: int) -> list[int]:
        rows = self.rank_rows()
        return [stop - start for start, stop in (consumer_range(rows, w, workers) for w in range(workers))]

    def __len__(self) -> int:
        """Batches this rank yields in an epoch (across its loader workers)."""
        return sum(batches_in(rows, self.batch_size, self.drop_last) for rows in self.worker_rows(self.loader_workers))

    def ordered_units(self) -> list[RowGroup]:
        if not self.shuffle:
            return list(self.units)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.units))
        return [self.units[i] for i in order]

    def consumer_rows(self, consumer: int, consumers: int) -> tuple[int, int]:
        """First and stop row, in the epoch's stream, of one of this rank's ``consumers``."""
        rank_start, rank_stop = self.rank_range()
        start, stop = consumer_range(rank_stop - rank_start, consumer, consumers)
        return rank_start + start, rank_start + stop

    def read_rows(self, start: int, stop: int) -> Iterator[dict[str, np.ndarray]]:
        """Column chunks covering rows ``[start, stop)`` of the epoch's ordered stream.

        Raises:
            OSError: naming the shard and row group that cannot be read (a damaged or missing file).
        """
        offset = 0
        handles: dict[str, pq.ParquetFile] = {}
        for unit in self.ordered_units():
            unit_start, unit_stop = offset, offset + unit.rows
            offset = unit_stop
            if unit_stop <= start:
                continue
            if unit_start >= stop:
                break
            try:
                if unit.path not in handles:
                    handles[unit.path] = pq.ParquetFile(unit.path)
                table = handles[unit.path].read_row_group(unit.index, columns=list(COLUMNS))
            except (OSError, pa.ArrowException) as error:
                raise OSError(f"cannot read {unit.path} (row group {unit.index}): {error}") from error
            low, high = max(start, unit_start) - unit_start, min(stop, unit_stop) - unit_start
            yield {name: matrix(table.column(name))[low:high] for name in COLUMNS}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        consumer, skip = worker, 0
        if self.resume_batches:
            # Resuming: worker w takes over the stream whose turn is w-th from now, so the
            # loader's turn-taking continues the interrupted order exactly.
            per_consumer = [batches_in(rows, self.batch_size, self.drop_last) for rows in self.worker_rows(workers)]
            taken, following = batches_already_taken(per_consumer, self.resume_batches)
            consumer = (following + worker) % workers
            skip = taken[consumer]
            self.resume_batches = 0  # taken: the next pass in this process reads the whole epoch
        start, stop = self.consumer_rows(consumer, workers)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, consumer])
        return self._skip(self._batches(start, stop, rng), skip, consumer)

    def _skip(self, batches: Iterator[dict[str, np.ndarray]], skip: int,
              consumer: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches after the first ``skip``, each with its own ``seed`` (see :meth:`batch_seed`)."""
        for index, batch in enumerate(batches):
            if index >= skip:
                yield {name: torch.from_numpy(values) for name, values in batch.items()} | {
                    "seed": torch.tensor(self.batch_seed(consumer, index))
                }

    def batch_seed(self, consumer: int, index: int) -> int:
        """A seed that names one batch of one epoch: a collator that draws from it (the masking)
        corrupts that batch the same way in every run, resumed or not."""
        return int(np.random.SeedSequence([self.seed, self.epoch, self.rank, consumer, index]).generate_state(1)[0])

    def _batches(self, start: int, stop: int, rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
        pending: list[dict[str, np.ndarray]] = []
        held = 0
        for chunk in self.read_rows(start, stop):
            pending.append(chunk)
            held += len(chunk["tokens"])
            if held >= self.shuffle_buffer + self.batch_size:
                pool = _concatenate(pending, rng if self.shuffle else None)
                keep = held - (held - self.shuffle_buffer) // self.batch_size * self.batch_size
                emit = held - keep
                for low in range(0, emit, self.batch_size):
                    yield {name: values[low : low + self.batch_size] for name, values in pool.items()}
                pending = [{name: values[emit:] for name, values in pool.items()}]
                held = keep
        if held:
            pool = _concatenate(pending, rng if self.shuffle else None)
            for low in range(0, held, self.batch_size):
                batch = {name: values[low : low + self.batch_size] for name, values in pool.items()}
                if len(batch["tokens"]) == self.batch_size or not self.drop_last:
                    yield batch


def _concatenate(chunks: list[dict[str, np.ndarray]], rng: Optional[np.random.Generator]) -> dict[str, np.ndarray]:
    pool = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}
    if rng is not None:
        order = rng.permutation(len(pool["tokens"]))
        pool = {name: values[order] for name, values in pool.items()}
    return {name: np.ascontiguousarray(values, dtype=np.int64) for name, values in pool.items()}
