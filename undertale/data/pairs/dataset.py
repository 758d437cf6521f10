"""Batches of function pairs for contrastive fine-tuning, and the validation search set.

Training: each epoch the groups (source functions) are put in a seeded order
and cut into batches of ``K``; so a group is in at most one batch of the
epoch, across every rank and loader worker, and never twice in a batch. A
fraction of the batches (``neighbours``) may instead be runs of consecutive
groups in name order (functions of one source file, mostly): harder in-batch
negatives, such as the near-identical functions a library repeats. For
each group ``V`` variants (levels, or compilers; 2 by default) are drawn at
random, all different as far as the group has them. A batch is ``V`` blocks
of ``K`` functions (block ``v`` holds each group's ``v``-th variant), packed
into rows (see :func:`pack_functions`); ``variant`` (``V``, ``K``) says which
variant of its group each one is, so that a repeated variant is not taken for
a pair.

Validation: every pair of the validation split at ``validation_levels``
(query, partner), both sides embedded; the module ranks them in pools.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from undertale.data.datamodule import EpochDataModule
from undertale.data.pairs.build import read_pairs
from undertale.data.tokenizer import PAD, load_tokenizer
from undertale.data.workers import PreemptibleLoader


def pack_functions(functions: Sequence[Sequence[int]], length: int, pad_id: int, packing: bool = True) -> dict:
    """Rows of token ids for a list of functions, each cut into windows of ``length``.

    Returns numpy arrays ``tokens``, ``mask`` (0: padding, else the segment's number within its row: each
    window attends only within itself), ``owner`` (the function of each position, -1 for padding) and
    ``entry`` (True where a position is in its function's first window), all (rows, length), and
    ``functions`` (their count). With ``packing``, windows share rows (first fit, longest first); without
    it, each window has a row of its own.
    """
    windows = [(index, ids[start:start + length], start == 0) for index, ids in enumerate(functions)
               for start in range(0, max(len(ids), 1), length)]
    windows = [(index, ids if len(ids) else [pad_id], first) for index, ids, first in windows]
    rows: list[list[tuple[int, Sequence[int], bool]]] = []
    free: list[int] = []
    if packing:
        for window in sorted(windows, key=lambda window: -len(window[1])):
            row = next((r for r, space in enumerate(free) if space >= len(window[1])), None)
            if row is None:
                rows.append([])
                free.append(length)
                row = len(rows) - 1
            rows[row].append(window)
            free[row] -= len(window[1])
    else:
        rows = [[window] for window in windows]
    tokens = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    owner = np.full((len(rows), length), -1, dtype=np.int64)
    entry = np.zeros((len(rows), length), dtype=bool)
    for r, row in enumerate(rows):
        position = 0
        for segment, (index, ids, first) in enumerate(row, start=1):
            tokens[r, position:position + len(ids)] = ids
            mask[r, position:position + len(ids)] = segment
            owner[r, position:position + len(ids)] = index
            entry[r, position:position + len(ids)] = first
            position += len(ids)
    return {"tokens": tokens, "mask": mask, "owner": owner, "entry": entry, "functions": len(functions)}


def _tensors(batch: dict) -> dict:
    return {key: torch.from_numpy(value) if isinstance(value, np.ndarray) else torch.tensor(value)
            for key, value in batch.items()}


def _consumer() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class GroupPairsDataset(IterableDataset):
    """Training batches: ``K`` distinct groups, ``V`` variants of each (two different ones at least).

    Arguments:
        variants: per group, the token ids of each of its variants (at least two).
        groups_per_batch: ``K``.
        length: the model's sequence length (window size).
        pad_id: id of ``[PAD]``.
        packing: pack windows into rows.
        seed: the epoch is added to it.
        neighbours: the fraction of batches made of consecutive groups (``variants`` in group-name order).
        rank, world_size: this DDP rank; ranks take every ``world_size``-th batch.
        variants_per_group: ``V`` (>= 2). A group with fewer variants repeats some of them.
    """

    def __init__(self, variants: Sequence[Sequence[Sequence[int]]], groups_per_batch: int, length: int, pad_id: int,
                 packing: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1, neighbours: float = 0.0,
                 variants_per_group: int = 2):
        if variants_per_group < 2:
            raise ValueError(f"variants_per_group must be >= 2, got {variants_per_group}")
        self.variants = variants
        self.groups_per_batch = groups_per_batch
        self.length = length
        self.pad_id = pad_id
        self.packing = packing
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.neighbours = neighbours
        self.variants_per_group = variants_per_group
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, batches: int) -> None:
        """Skip the first ``batches`` batches of this rank in the coming pass (a run resumed mid-epoch)."""
        self.skip = batches

    def __len__(self) -> int:
        return len(self.variants) // self.groups_per_batch // self.world_size

    def batch_groups(self) -> np.ndarray:
        """This epoch's batches of this rank: (batches, K) group indices."""
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.variants))
        size, total = self.groups_per_batch, len(self) * self.world_size
        if not self.neighbours:
            return order[:total * size].reshape(total, size)[self.rank::self.world_size]
        offset = int(rng.integers(size))  # runs start at another place each epoch
        runs = np.arange(offset, offset + (len(self.variants) - offset) // size * size).reshape(-1, size)
        wanted = min(int(round(self.neighbours * total)), len(runs))
        neighbours = runs[np.sort(rng.choice(len(runs), size=wanted, replace=False))]
        taken = np.zeros(len(self.variants), dtype=bool)
        taken[neighbours.ravel()] = True
        rest = order[~taken[order]][:(total - wanted) * size].reshape(-1, size)
        batches = np.concatenate([neighbours, rest])
        return batches[rng.permutation(total)][self.rank::self.world_size]

    def make_batch(self, groups: np.ndarray, index: int) -> dict:
        """``V`` variants of each group, drawn with a seed of their own (the same on a resumed run)."""
        rng = np.random.default_rng((self.seed, self.epoch, self.rank, index))
        views = self.variants_per_group
        chosen = np.empty((views, len(groups)), dtype=np.int64)
        for column, group in enumerate(groups):
            count = len(self.variants[group])
            distinct = rng.choice(count, size=min(views, count), replace=False)
            if len(distinct) < views:  # a group with fewer variants than V: repeat some (they pair with no loss)
                distinct = np.concatenate([distinct, rng.choice(distinct, size=views - len(distinct))])
            chosen[:, column] = distinct
        functions = [self.variants[group][variant] for row in chosen for group, variant in zip(groups, row)]
        return {**pack_functions(functions, self.length, self.pad_id, self.packing), "variant": chosen}

    def __iter__(self) -> Iterator[dict]:
        # read the skip now: the loader clears it as soon as the pass has started (workers hold a copy)
        return self._batches(self.skip)

    def _batches(self, skip: int) -> Iterator[dict]:
        worker, workers = _consumer()
        for index, groups in enumerate(self.batch_groups()):
            if index % workers == worker and index >= skip:
                yield _tensors(self.make_batch(groups, index))


class ValidationPairsDataset(IterableDataset):
    """Both sides of every validation pair, ``batch_size`` functions a batch, split across ranks.

    Arguments:
        queries, partners: token ids of pair ``p``'s query and partner.
        batch_size: functions per batch.
        length, pad_id, packing: as for :func:`pack_functions`.
        rank, world_size: ranks take every ``world_size``-th function.
    """

    def __init__(self, queries: Sequence[Sequence[int]], partners: Sequence[Sequence[int]], batch_size: int,
                 length: int, pad_id: int, packing: bool = True, rank: int = 0, world_size: int = 1):
        items = [(pair, side) for pair in range(len(queries)) for side in (0, 1)]
        self.items = items[rank::world_size]
        self.sides = (queries, partners)
        self.batch_size = batch_size
        self.length = length
        self.pad_id = pad_id
        self.packing = packing

    def __len__(self) -> int:
        return math.ceil(len(self.items) / self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        worker, workers = _consumer()
        for index, start in enumerate(range(0, len(self.items), self.batch_size)):
            if index % workers != worker:
                continue
            chosen = self.items[start:start + self.batch_size]
            batch = pack_functions([self.sides[side][pair] for pair, side in chosen], self.length, self.pad_id,
                                   self.packing)
            batch |= {"pair": np.array([pair for pair, _ in chosen]), "side": np.array([side for _, side in chosen])}
            yield _tensors(batch)


def _encoder(tokenizer_path: str) -> Tokenizer:
    tokenizer = load_tokenizer(tokenizer_path)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class PairsDataModule(EpochDataModule):
    """Train and validation loaders over a pairs dataset (see :class:`~undertale.data.pairs.config.PairsDataConfig`).

    Raises:
        ValueError: at setup, naming the directory and split, when there is nothing to train or validate on.
    """

    def __init__(self, directory: str, tokenizer: str, sequence_length: int, groups_per_batch: int = 64,
                 levels: Sequence[str] = ("O0", "O1", "O2", "O3"), validation_levels: Sequence[str] = ("O0", "O3"),
                 compilers: Optional[Sequence[str]] = None, min_instructions: int = 5, max_tokens: int = 512,
                 packing: bool = True, num_workers: int = 0, seed: int = 0, pin_memory: Optional[bool] = None,
                 neighbour_batches: float = 0.0, variants_per_group: int = 2,
                 architectures: Optional[Sequence[str]] = None,
                 validation_architectures: Optional[Sequence[str]] = None):
        super().__init__()
        self.directory = Path(directory)
        self.tokenizer_path = tokenizer
        self.length = sequence_length
        self.groups_per_batch = groups_per_batch
        self.levels = tuple(levels)
        self.validation_levels = tuple(validation_levels)
        self.compilers = tuple(compilers) if compilers else None
        self.architectures = tuple(architectures) if architectures else None
        self.validation_architectures = tuple(validation_architectures) if validation_architectures else None
        self.min_instructions = min_instructions
        self.max_tokens = max_tokens
        self.packing = packing
        self.num_workers = num_workers
        self.seed = seed
        self.neighbour_batches = neighbour_batches
        self.variants_per_group = variants_per_group
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_dataset: Optional[GroupPairsDataset] = None
        self.val_dataset: Optional[ValidationPairsDataset] = None
        self._validation_texts: Optional[tuple[list[str], list[str]]] = None

    def _rows(self, split: str) -> list[dict]:
        columns = ["group", "level", "compiler", "architecture", "instructions", "disassembly"]
        rows = read_pairs(self.directory, split, columns=columns).to_pylist()
        return [row for row in rows if row["instructions"] >= self.min_instructions
                and (self.compilers is None or row["compiler"] in self.compilers)]

    def _training_rows(self) -> list[dict]:
        return [row for row in self._rows("train") if row["level"] in self.levels
                and (self.architectures is None or row["architecture"] in self.architectures)]

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        encodings = _encoder(self.tokenizer_path).encode_batch(texts)
        return [encoding.ids[:self.max_tokens] for encoding in encodings]

    def training_groups(self) -> list[list[list[int]]]:
        """Per group with at least two variants at ``levels`` (and ``architectures``), the token ids of each variant."""
        rows = self._training_rows()
        ids = self._tokenize([row["disassembly"] for row in rows])
        groups: dict[str, list[list[int]]] = {}
        for row, tokens in zip(rows, ids):
            groups.setdefault(row["group"], []).append(tokens)
        return [variants for _, variants in sorted(groups.items()) if len(variants) >= 2]

    def validation_pairs(self) -> tuple[list[list[int]], list[list[int]]]:
        """Query and partner token ids of every validation group present at both ``validation_levels``.

        With ``validation_architectures``, the query side is the first architecture at the first level and the
        partner side the second at the second; else both sides are of one compiler (every compiler's pairs).
        """
        crossing = self.validation_architectures is not None
        query, partner = zip(self.validation_architectures, self.validation_levels) if crossing else self.validation_levels
        sides: dict = {query: {}, partner: {}}
        for row in self._rows("validation"):
            side = (row["architecture"], row["level"]) if crossing else row["level"]
            if side in sides:
                key = row["group"] if crossing else f"{row['compiler']}\0{row['group']}"
                sides[side].setdefault(key, row["disassembly"])
        keys = sorted(sides[query].keys() & sides[partner].keys())
        self._validation_texts = ([sides[query][key] for key in keys], [sides[partner][key] for key in keys])
        ids = self._tokenize(self._validation_texts[0] + self._validation_texts[1])
        return ids[:len(keys)], ids[len(keys):]

    def validation_sides(self) -> list[str]:
        """The query and partner settings as users name them: ``O0``, or ``x86-64 -O2``."""
        if self.validation_architectures is None:
            return list(self.validation_levels)
        return [f"{architecture} -{level}" for architecture, level in zip(self.validation_architectures,
                                                                            self.validation_levels)]

    def validation_texts(self) -> tuple[list[str], list[str]]:
        """The query and partner texts of the validation pairs, in pair order (for baselines)."""
        if self._validation_texts is None:
            self.validation_pairs()
        return self._validation_texts

    def setup(self, stage: Optional[str] = None) -> None:
        rank, world = self.rank()
        pad_id = _encoder(self.tokenizer_path).token_to_id(PAD)
        if stage in (None, "fit") and self.train_dataset is None:
            groups = self.training_groups()
            needed = self.groups_per_batch * world
            if len(groups) < needed:
                raise ValueError(
                    f"{self.directory / 'train'}: {len(groups)} groups with two variants at {', '.join(self.levels)} "
                    f"make no batch of {self.groups_per_batch} groups for each of {world} rank(s); "
                    "lower data.batch_size or use more projects"
                )
            self.train_dataset = GroupPairsDataset(groups, self.groups_per_batch, self.length, pad_id, self.packing,
                                                   self.seed, rank, world, self.neighbour_batches,
                                                   self.variants_per_group)
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            queries, partners = self.validation_pairs()
            if len(queries) < 2:
                raise ValueError(
                    f"{self.directory / 'validation'}: {len(queries)} function(s) present at both "
                    f"{' and '.join(self.validation_sides())}; validation needs at least 2 pairs (rebuild the pairs "
                    "with more validation projects, or change data.validation_levels / data.validation_architectures)"
                )
            self.val_dataset = ValidationPairsDataset(queries, partners, 2 * self.groups_per_batch, self.length,
                                                      pad_id, self.packing, rank, world)

    def _options(self) -> dict:
        return {"batch_size": None, "num_workers": self.num_workers, "pin_memory": self.pin_memory,
                "persistent_workers": False, "prefetch_factor": 4 if self.num_workers else None}

    def train_dataloader(self) -> DataLoader:
        return self.epoch_loader(self.train_dataset, **self._options())

    def val_dataloader(self) -> DataLoader:
        return PreemptibleLoader(self.val_dataset, **self._options())
