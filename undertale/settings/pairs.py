"""The ``data`` settings of ``task=similarity``: which pairs dataset, which variants pair, how batches are made.

:class:`PairsDataSettings` holds each setting's default and checks; :class:`undertale.data.pairs.config.PairsDataConfig`
(the ``_target_`` of ``data=pairs``) adds reading the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from undertale.settings.checks import check_fraction

# the optimisation levels a pairs dataset may be built at
LEVELS = ("O0", "O1", "O2", "O3", "Os")
# instruction sets by the names users give them -> the ``architecture`` column (read from each ELF header)
ARCHITECTURES = {"x86-64": "x86-64", "x86_64": "x86-64", "amd64": "x86-64", "aarch64": "aarch64", "arm64": "aarch64",
                 "i386": "x86", "i686": "x86", "x86": "x86"}


def architecture_column(name: str) -> str:
    """The ``architecture`` column value of an instruction set named ``x86-64``, ``aarch64``/``arm64`` or ``i386``.

    Raises:
        ValueError: for another name, listing the known ones.
    """
    key = str(name).strip().lower()
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; architectures are x86-64, aarch64, i386")
    return ARCHITECTURES[key]


def architecture_name(column: str) -> str:
    """An ``architecture`` column value as users name the instruction set (``x86`` is shown as ``i386``)."""
    return "i386" if column == "x86" else column


@dataclass(frozen=True)
class PairsDataSettings:
    """Pairs for contrastive fine-tuning (the ``data`` group of ``task=similarity``) (``python -m undertale.data pairs`` builds them).

    Arguments:
        pairs: the pairs directory (``train/`` to fine-tune on, ``validation/`` to monitor).
        tokenizer: a ``tokenizer.json``; None: the pretrained run's (required without ``pretrained``).
        levels: the levels a training pair is drawn from: two different ones of each group, at random.
        validation_levels: query level and partner level of the validation search (``val/mrr``); the same level
            twice when ``validation_architectures`` are two different ones.
        compilers: compilers to use (None: every compiler of the build).
        architectures: instruction sets whose variants train (``[x86-64, aarch64]``; None: every one of the
            build): a training pair is two different variants of a function among these architectures and levels.
        validation_architectures: query and partner instruction set of the validation search
            (``[x86-64, aarch64]``: x86-64 queries among AArch64 candidates); None: both sides on each compiler.
        batch_size: groups per batch and rank (each gives ``variants_per_group`` functions).
        variants_per_group: variants of each group in a batch (2: a pair). More: every two of a group's variants
            make a pair, and the loss is the mean InfoNCE over all their queries (4 with four levels: -O0 meets -O3 in
            every group of every batch). A group with fewer variants repeats some, without loss on a repeat.
        min_instructions: functions shorter than this at any level are left out (as in the benchmark).
        max_tokens: a function's first tokens kept (cut into windows of the model's sequence length).
        packing: several windows per row, so no step computes on padding.
        num_workers: loader processes per rank (the pairs are held in memory: 0 is usually fastest).
        neighbour_batches: the fraction of batches made of neighbouring functions (consecutive in name order,
            mostly of one source file): harder in-batch negatives than random groups.
        seed: which groups meet in a batch, and which levels pair (the epoch is added to it).
        pin_memory: pin host memory (None: when a GPU is present).

    Raises:
        ValueError: naming the setting that is missing or out of range.
    """

    pairs: Optional[str] = None
    tokenizer: Optional[str] = None
    levels: Sequence[str] = ("O0", "O1", "O2", "O3")
    validation_levels: Sequence[str] = ("O0", "O3")
    compilers: Optional[Sequence[str]] = None
    architectures: Optional[Sequence[str]] = None
    validation_architectures: Optional[Sequence[str]] = None
    batch_size: int = 64
    min_instructions: int = 5
    max_tokens: int = 512
    packing: bool = True
    num_workers: int = 0
    seed: int = 0
    pin_memory: Optional[bool] = None
    neighbour_batches: float = 0.0
    variants_per_group: int = 2

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ValueError("pairs is required: data.pairs=<pairs directory> (build one with "
                             "python -m undertale.data pairs OUTPUT SOURCES...)")
        for name in ("levels", "validation_levels"):
            values = getattr(self, name)
            values = [values] if isinstance(values, str) else list(values)
            unknown = [level for level in values if level not in LEVELS]
            if unknown:
                raise ValueError(f"{name} holds {unknown[0]!r}; levels are {', '.join(LEVELS)}")
            object.__setattr__(self, name, tuple(values))
        if len(set(self.levels)) < 2:
            raise ValueError(f"levels needs at least two different levels to pair, got {list(self.levels)}")
        for name in ("architectures", "validation_architectures"):
            values = getattr(self, name)
            if values is not None:
                values = [values] if isinstance(values, str) else list(values)
                object.__setattr__(self, name, tuple(architecture_column(value) for value in values))
        if self.architectures is not None and not self.architectures:
            raise ValueError("architectures is empty; name at least one (or null: every architecture of the build)")
        crossing = self.validation_architectures is not None
        if crossing and len(self.validation_architectures) != 2:
            raise ValueError(f"validation_architectures must be two (query, partner), got "
                             f"{list(self.validation_architectures)}")
        sides = set(zip(self.validation_levels, self.validation_architectures or ("", "")))
        if len(self.validation_levels) != 2 or len(sides) != 2:
            raise ValueError(f"validation_levels must be two different levels (query, partner), "
                             f"got {list(self.validation_levels)}" + ("" if crossing else
                             " (the same level twice needs two different validation_architectures)"))
        if isinstance(self.compilers, str):
            object.__setattr__(self, "compilers", (self.compilers,))
        for name, low in (("batch_size", 2), ("variants_per_group", 2), ("min_instructions", 0), ("max_tokens", 1),
                          ("num_workers", 0), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        check_fraction("neighbour_batches", self.neighbour_batches)
        for name in ("packing", "pin_memory"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
