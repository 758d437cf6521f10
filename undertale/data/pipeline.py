"""From a data source to tokenized shards and a tokenizer, each step cached.

Sources:

- ``system`` and ``binaries``: ELF paths are disassembled into a corpus
  (``system`` reads this machine's binaries when no paths are given;
  ``binaries`` needs paths);
- ``parquet``: an existing directory of shards, either disassembly (a
  ``disassembly`` column) or already tokenized (``tokens`` and ``mask``);
- ``debian``: pinned Debian binary packages (a package list file), downloaded
  into ``cache_dir/debs/<sha256>.deb`` and disassembled into a corpus
  (:mod:`undertale.data.corpus.debian`).

The corpus, the tokenizer, the tokenized shards and the packed shards live
under ``cache_dir`` and are reused when their inputs (and the format version of
the code that builds them) have not changed. One process at a time prepares a
cache: the others wait for it and then reuse what it built.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import pyarrow.parquet as pq

from undertale.data.corpus.build import CorpusOptions, build_corpus
from undertale.data.encode import TEXT_COLUMN, TOKENIZED_FORMAT, tokenize_corpus
from undertale.data.packing import PACKING_FORMAT, pack_directory
from undertale.data.parquet import open_parquet, parquet_files
from undertale.settings.data import DEFAULT_MERGES
from undertale.data.tokenizer import load_tokenizer, train_tokenizer

COMPLETE = "complete.json"
LOCK = ".prepare.lock"
# Bump when a tokenizer trained from the same corpus and settings would differ: cached tokenizers are retrained.
TOKENIZER_FORMAT = 2

_held = threading.local()  # lock files this thread holds, so that cache_lock nests


@dataclass(frozen=True)
class PreparedData:
    """Where the tokenized shards and the tokenizer are."""

    tokenized: Path
    tokenizer: Path
    corpus: Optional[Path]


@contextmanager
def cache_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold ``directory/.prepare.lock`` exclusively (waiting for it), so that processes started together
    (torchrun, SLURM) never build the same cache twice. Nested use in one thread does not wait on itself.
    """
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    path = (directory / LOCK).resolve()
    held = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:16]


def _files_digest(directory: Path) -> str:
    """A key of the shards under ``directory``: each one's absolute path, size and modification time."""
    files = parquet_files(directory.resolve())
    return _digest([(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files])


def is_tokenized(directory: Path) -> bool:
    """True when the shards under ``directory`` already hold ``tokens`` and ``mask``."""
    names = pq.ParquetFile(parquet_files(directory)[0]).schema_arrow.names
    return "tokens" in names and "mask" in names


def training_texts(corpus: Path, limit: int) -> list[str]:
    """Up to ``limit`` function texts from the corpus's train split, for tokenizer training."""
    root = corpus / "train" if (corpus / "train").is_dir() else corpus
    texts: list[str] = []
    for path in parquet_files(root):
        handle = open_parquet(path, (TEXT_COLUMN,))
        for batch in handle.iter_batches(batch_size=8192, columns=[TEXT_COLUMN]):
            texts.extend(batch.column(0).to_pylist())
            if len(texts) >= limit:
                return texts[:limit]
    return texts


def prepare(
    source: str,
    cache_dir: str | os.PathLike,
    paths: Optional[Sequence[str]] = None,
    directory: Optional[str] = None,
    tokenizer: Optional[str] = None,
    sequence_length: int = 512,
    merges: int = DEFAULT_MERGES,
    tokenizer_functions: int = 50_000,
    corpus_options: Optional[CorpusOptions] = None,
    workers: Optional[int] = None,
    packing: bool = False,
    progress: bool = True,
    scheduler: Optional[str] = None,
    packages: Optional[str] = None,
    mirror: Optional[str] = None,
    suite: str = "bookworm",
    allow_missing: bool = False,
) -> PreparedData:
    """Build (or reuse) corpus, tokenizer and tokenized shards for one data source.

    Arguments:
        source: ``system`` (this machine's binaries, or ``paths``), ``binaries``, ``parquet`` or ``debian``.
        cache_dir: where built artefacts are kept.
        paths: ELF files/directories/globs (the system directories when empty).
        directory: the shard directory for ``parquet``.
        tokenizer: an existing ``tokenizer.json``; trained on the corpus when None.
        sequence_length: fixed token length.
        merges: number byte-pair budget of a trained tokenizer.
        tokenizer_functions: functions sampled to train the tokenizer.
        corpus_options: seed, split and limits of the corpus build.
        workers: processes for disassembly.
        packing: pack several functions into each row (see :mod:`undertale.data.packing`).
        progress: show progress bars.
        scheduler: run disassembly, tokenization and packing as Dask tasks (one per file or shard):
            ``local``, a scheduler address or a scheduler file; None: this machine's processes.
        packages: the package list file of ``debian``.
        mirror, suite: where ``debian`` resolves and downloads its packages (mirror None: /etc/apt's).
        allow_missing: ``debian`` builds without the packages that fail instead of stopping.

    Raises:
        ValueError: for an unknown source, ``binaries`` without ``paths``, ``parquet`` without ``directory``,
            or tokenized shards without a tokenizer.
        FileNotFoundError: when ``directory`` is missing or holds no parquet file.
    """
    if source == "binaries" and not paths:
        raise ValueError(
            f"data=binaries needs data.paths=[file,directory,glob,...] (got paths={paths!r}); "
            "data=system reads this machine's binaries"
        )
    if source == "parquet" and not directory:
        raise ValueError("data source 'parquet' needs data.directory (a folder of parquet shards)")
    if source == "debian" and not packages:
        raise ValueError("data source 'debian' needs data.packages (a package list file)")
    if source not in ("system", "binaries", "parquet", "debian"):
        raise ValueError(f"unknown data source {source!r}; choose 'system', 'binaries', 'parquet' or 'debian'")
    pins = None
    if source == "debian":
        from undertale.data.corpus.debian import parse_list

        pins = parse_list(packages)  # a syntax error stops here, before any work
    cache = Path(cache_dir).expanduser()
    dask = (scheduler, workers)  # each step that has work to do connects (a cached step starts no cluster)
    with cache_lock(cache):
        shards = Path(directory).expanduser() if source == "parquet" else None
        if shards is not None and is_tokenized(shards):
            if not tokenizer:
                raise ValueError(f"{shards} is already tokenized: set data.tokenizer to the tokenizer.json it was made with")
            load_tokenizer(tokenizer)
            prepared = PreparedData(shards, Path(tokenizer), None)
        else:
            if pins is not None:
                corpus, corpus_id = _debian_corpus(cache, pins, packages, corpus_options or CorpusOptions(), workers,
                                                   mirror, suite, allow_missing, progress)
            elif shards is None:
                corpus, corpus_id = _corpus(cache, paths, corpus_options or CorpusOptions(), workers, progress, scheduler)
            else:
                corpus, corpus_id = shards, _files_digest(shards)
            if tokenizer:
                tokenizer_path = Path(tokenizer).expanduser()
            else:
                tokenizer_path = _trained_tokenizer(
                    cache, corpus, corpus_id, merges, sequence_length, tokenizer_functions, progress
                )
            tokenized = _tokenized(cache, corpus, corpus_id, tokenizer_path, sequence_length, progress, dask)
            prepared = PreparedData(tokenized, tokenizer_path, corpus)
        return _packed(prepared, cache, progress, dask) if packing else prepared


@contextmanager
def _runner(dask: tuple[Optional[str], Optional[int]]) -> Iterator[Optional[Any]]:
    """A Dask client for ``(scheduler, workers)`` (closed afterwards), or None without a scheduler."""
    scheduler, workers = dask
    if not scheduler:
        yield None
        return
    from undertale.data.corpus.distributed import DaskReader

    runner = DaskReader(scheduler, workers)
    try:
        yield runner
    finally:
        runner.close()


def _corpus(
    cache: Path, paths: Optional[Sequence[str]], options: CorpusOptions, workers: Optional[int], progress: bool,
    scheduler: Optional[str] = None,
) -> tuple[Path, str]:
    """The corpus of ``paths`` (built or reused) and its key."""
    corpus = cache / "corpus" / _digest(sorted(paths or []), options.__dict__)
    build_corpus(corpus, paths, options, workers=workers, progress=progress, scheduler=scheduler)
    return corpus, json.loads((corpus / "manifest.json").read_text())["key"][:16]


def _debian_corpus(
    cache: Path, pins: list, packages: str, options: CorpusOptions, workers: Optional[int], mirror: Optional[str],
    suite: str, allow_missing: bool, progress: bool,
) -> tuple[Path, str]:
    """The corpus of pinned Debian packages (built or reused; the ``.deb`` files under ``cache/debs``) and its key."""
    from undertale.data.corpus.debian import build_debian_corpus, debian_key

    corpus = cache / "corpus" / f"debian-{debian_key(pins, options)[:16]}"
    manifest = build_debian_corpus(corpus, pins, options, workers=workers, mirror=mirror, suite=suite, cache_dir=cache,
                                   allow_missing=allow_missing, progress=progress, source_file=packages)
    return corpus, manifest["key"][:16]


def _trained_tokenizer(
    cache: Path, corpus: Path, corpus_id: str, merges: int, sequence_length: int, functions: int, progress: bool
) -> Path:
    """A tokenizer trained on ``corpus`` (or reused), per :data:`TOKENIZER_FORMAT`."""
    name = f"{corpus_id}-{merges}-{sequence_length}-{functions}-v{TOKENIZER_FORMAT}"
    path = cache / "tokenizers" / f"{name}.json"
    if path.is_file():
        return path
    started = time.perf_counter()
    model = train_tokenizer(training_texts(corpus, functions), merges, sequence_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    model.save(str(temporary))
    os.replace(temporary, path)
    if progress:
        print(f"tokenizer: {model.get_vocab_size():,} tokens, trained in {time.perf_counter() - started:.1f} s -> {path}")
    return path


def _tokenized(
    cache: Path, corpus: Path, corpus_id: str, tokenizer: Path, sequence_length: int, progress: bool,
    dask: tuple[Optional[str], Optional[int]] = (None, None),
) -> Path:
    """The corpus tokenized (or reused), per tokenizer and :data:`~undertale.data.encode.TOKENIZED_FORMAT`."""
    model = load_tokenizer(tokenizer, sequence_length)
    tokenizer_id = hashlib.sha256(model.to_str().encode()).hexdigest()[:16]
    tokenized = cache / "tokenized" / f"{corpus_id}-{tokenizer_id}-v{TOKENIZED_FORMAT}"
    if not (tokenized / COMPLETE).is_file():
        with _runner(dask) as runner:
            counts = tokenize_corpus(corpus, model, tokenized, progress=progress, runner=runner)
        (tokenized / COMPLETE).write_text(json.dumps(counts | {"tokenizer": str(tokenizer)}))
        if progress:
            print(
                f"tokenize: {counts['rows']:,} functions, {counts['tokens']:,} tokens in {counts['seconds']:.1f} s "
                f"({counts['tokens'] / max(counts['seconds'], 1e-9):,.0f} tokens/s) -> {tokenized}"
            )
    return tokenized


def _packed(prepared: PreparedData, cache: Path, progress: bool,
            dask: tuple[Optional[str], Optional[int]] = (None, None)) -> PreparedData:
    """The same data with several functions packed into each row, built once per content of the tokenized
    shards (shards of a user's rewritten in place are packed again) and per
    :data:`~undertale.data.packing.PACKING_FORMAT`."""
    tokenized = prepared.tokenized
    # a cached tokenization is named by its content (corpus, tokenizer, format): the same name on any machine;
    # shards a user gave are keyed by their files, since they may be rewritten in place
    own = tokenized.resolve().parent == (cache / "tokenized").resolve()
    packed = cache / "packed" / _digest(PACKING_FORMAT, tokenized.name if own else _files_digest(tokenized))
    if not (packed / "packing.json").is_file():
        with _runner(dask) as runner:
            counts = pack_directory(prepared.tokenized, packed, progress=progress, runner=runner)
        if progress:
            print(
                f"pack: {counts['functions']:,} functions into {counts['rows']:,} rows "
                f"({counts['density']:.0%} of positions are real tokens) -> {packed}"
            )
    return PreparedData(packed, prepared.tokenizer, prepared.corpus)
