"""The ``data`` settings of ``task=maskedlm``: where functions come from, how they are prepared, how they are loaded.

:class:`DataSettings` holds each setting's default and checks; :class:`undertale.data.config.DataConfig`
(the ``_target_`` of the ``data`` group) adds preparing and loading the data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

SOURCES = ("system", "binaries", "parquet", "debian")
DEBIAN_SUITE = "bookworm"
CACHE_ENVIRONMENT = "UNDERTALE_CACHE"
# byte-pair budget for numbers when a tokenizer is trained (whole tokens come on top)
DEFAULT_MERGES = 4096
MEBIBYTE = 1 << 20


def default_cache_dir() -> Path:
    """``$UNDERTALE_CACHE``, else ``~/.cache/undertale``."""
    return Path(os.environ.get(CACHE_ENVIRONMENT) or "~/.cache/undertale").expanduser()


@dataclass(frozen=True)
class FileLimits:
    """What one input file may cost a corpus build; a file over a limit is skipped and counted by reason.

    The defaults keep any input under 100 MB within about 1 GB of memory and 60 s (the largest
    ordinary files, ``cc1`` or ``libLLVM``, take 15 to 40 processor seconds and 0.2 to 0.6 GB).

    Arguments:
        max_file_seconds: processor seconds the worker may spend on one file (``over time limit``).
            Processor time rather than wall-clock time, so that a busy machine does not skip a file an
            idle one keeps; a worker still on one file after ``3 x max_file_seconds + 30`` s of wall-clock
            time (stuck, or starved) is killed and the file skipped the same way.
        max_file_memory_mb: MiB of memory one file may add to its worker (``over memory limit``); a file
            larger than this is not read.
        max_section_mb: MiB of any one section read from a file, after decompression (compressed
            sections are checked before they are unpacked: ``over section size limit``).
        max_function_instructions: instructions (and undecodable bytes) decoded per function; a
            function that has more is dropped and counted (``functions_over_limit``), the file kept.

    Raises:
        ValueError: naming the limit, for one that is not a positive number.
    """

    max_file_seconds: float = 60.0
    max_file_memory_mb: int = 768
    max_section_mb: int = 256
    max_function_instructions: int = 250_000

    def __post_init__(self) -> None:
        seconds = self.max_file_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
            raise ValueError(f"max_file_seconds must be a positive number of seconds, got {seconds!r}")
        for name in ("max_file_memory_mb", "max_section_mb", "max_function_instructions"):
            _check_integer(name, getattr(self, name), 1)

    @property
    def memory_bytes(self) -> int:
        return self.max_file_memory_mb * MEBIBYTE

    @property
    def section_bytes(self) -> int:
        return self.max_section_mb * MEBIBYTE

    @property
    def hang_seconds(self) -> float:
        """Wall-clock seconds after which a worker still on one file is killed (it is stuck or starved)."""
        return 3 * self.max_file_seconds + 30


@dataclass(frozen=True)
class DataSettings:
    """Data source, preparation and loader settings (the ``data`` group of ``task=maskedlm``).

    Arguments:
        source: ``system`` (this machine's binaries, or ``paths`` to narrow them), ``binaries``
            (``paths`` required), ``parquet`` (``directory`` required: disassembly shards, or
            already tokenized shards together with ``tokenizer``) or ``debian`` (``packages`` required:
            pinned Debian binary packages, downloaded and cached by hash).
        paths: ELF files, directories or globs.
        directory: a folder of parquet shards with ``train/`` and ``validation/``.
        packages: for ``debian``: a package list file (``name=version`` or ``name:arch=version`` lines;
            see docs/corpus.md), required.
        mirror: for ``debian``: the Debian mirror URL (None: /etc/apt's, else https://deb.debian.org/debian).
        suite: for ``debian``: the suite whose ``Packages`` index resolves the pins.
        allow_missing: for ``debian``: build without the packages that fail (listed in the manifest)
            instead of stopping.
        tokenizer: an existing ``tokenizer.json``; None trains one on the corpus (cached).
        merges: byte-pair budget for numbers when training a tokenizer.
        tokenizer_functions: functions sampled to train the tokenizer.
        max_functions: cap on the corpus (None: every function, about 1M on a Debian machine).
        validation_fraction: share of binaries held out, in [0, 1).
        workers: disassembly processes (None: all cores), or Dask workers with ``scheduler: local``.
        scheduler: disassemble, tokenize and pack on Dask (one task per file or shard): ``local`` (a
            ``LocalCluster``), a scheduler address (``tcp://host:8786``) or a scheduler file (``*.json``);
            None: this machine's processes. The shards are the same either way.
        cache_dir: where corpus, tokenizer and tokenized shards are cached (None: ``$UNDERTALE_CACHE``,
            else ``~/.cache/undertale``).
        seed: corpus split and shuffling seed.
        packing: several functions per row, so no step computes on padding.
        batch_size: rows per batch, per rank.
        num_workers: loader processes per rank.
        shuffle_buffer: rows held for shuffling.
        pin_memory: pin host memory (None: when a GPU is present).
        max_file_seconds, max_file_memory_mb, max_section_mb, max_function_instructions: what one input
            file may cost the corpus build (see :class:`FileLimits`); a file over a limit is skipped and
            counted in the corpus manifest.

    Raises:
        ValueError: naming the setting, for an unknown source, a missing ``paths``/``directory``,
            or a count or fraction out of range.
    """

    source: str = "system"
    paths: Optional[Sequence[str]] = None
    directory: Optional[str] = None
    packages: Optional[str] = None
    mirror: Optional[str] = None
    suite: str = DEBIAN_SUITE
    allow_missing: bool = False
    tokenizer: Optional[str] = None
    merges: int = DEFAULT_MERGES
    tokenizer_functions: int = 50_000
    max_functions: Optional[int] = 50_000
    validation_fraction: float = 0.05
    workers: Optional[int] = None
    scheduler: Optional[str] = None
    cache_dir: Optional[str] = None
    seed: int = 0
    packing: bool = True
    batch_size: int = 32
    num_workers: int = 2
    shuffle_buffer: int = 8192
    pin_memory: Optional[bool] = None
    max_file_seconds: float = FileLimits.max_file_seconds
    max_file_memory_mb: int = FileLimits.max_file_memory_mb
    max_section_mb: int = FileLimits.max_section_mb
    max_function_instructions: int = FileLimits.max_function_instructions

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.source == "binaries" and not self.paths:
            raise ValueError(
                "paths is required for data=binaries: data.paths=[file,directory,glob,...] "
                "(data=system reads this machine's binaries)"
            )
        if self.source == "parquet" and not self.directory:
            raise ValueError("directory is required for data=parquet: data.directory=<folder of parquet shards>")
        if self.source == "debian" and not self.packages:
            raise ValueError("packages is required for data=debian: data.packages=<package list file> "
                             "(name=version lines; corpora/debian-bookworm-small.txt is one)")
        for name in ("packages", "mirror"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if self.mirror is not None and not self.mirror.startswith(("http://", "https://")):
            raise ValueError(f"mirror must be an http:// or https:// URL, got {self.mirror!r}")
        if not isinstance(self.suite, str) or not self.suite.strip() or "/" in self.suite:
            raise ValueError(f"suite must be a Debian suite name such as bookworm, got {self.suite!r}")
        if isinstance(self.paths, str):
            object.__setattr__(self, "paths", [self.paths])
        for name, low in (("merges", 0), ("tokenizer_functions", 1), ("batch_size", 1), ("num_workers", 0),
                          ("shuffle_buffer", 1), ("seed", 0)):
            _check_integer(name, getattr(self, name), low)
        for name in ("max_functions", "workers"):
            if getattr(self, name) is not None:
                _check_integer(name, getattr(self, name), 1)
        if self.scheduler is not None and (not isinstance(self.scheduler, str) or not self.scheduler.strip()):
            raise ValueError(f"scheduler must be local, a Dask address or a scheduler file, got {self.scheduler!r}")
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ValueError(f"validation_fraction must be within [0, 1), got {fraction!r}")
        for name in ("packing", "pin_memory", "allow_missing"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
        self.limits  # checks them

    @property
    def limits(self) -> FileLimits:
        """The corpus build's per-file limits."""
        return FileLimits(self.max_file_seconds, self.max_file_memory_mb, self.max_section_mb,
                          self.max_function_instructions)

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()


def _check_integer(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
