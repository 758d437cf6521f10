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
cache: the others wait for it (saying so) and then reuse what it built. Each
entry records its files' sizes and SHA256; one that is not whole is named in a
warning and built again, and temporary files of interrupted writes are removed
(:mod:`undertale.data.cache`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import pyarrow.parquet as pq

from undertale.data.cache import LOCK, cache_lock  # noqa: F401  (where callers have always found them)
from undertale.data.cache import (Verified, checked_shards, checked_tokenizer, record_entry, record_tokenizer,
                                  remove_temporaries, repair_corpus)
from undertale.data.corpus.build import CorpusOptions, build_corpus
from undertale.data.encode import TEXT_COLUMN, TOKENIZED_FORMAT, tokenize_corpus
from undertale.data.packing import PACKING_FORMAT, pack_directory
from undertale.data.parquet import open_parquet, parquet_files
from undertale.settings.data import DEFAULT_MERGES
from undertale.data.tokenizer import load_tokenizer, train_tokenizer
from undertale.runtime.errors import UsageError, first_line

COMPLETE = "complete.json"
PACKED = "packing.json"
# Bump when a tokenizer trained from the same corpus and settings would differ: cached tokenizers are retrained.
TOKENIZER_FORMAT = 2

@dataclass(frozen=True)
class PreparedData:
    """Where the tokenized shards and the tokenizer are."""

    tokenized: Path
    tokenizer: Path
    corpus: Optional[Path]


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
        UsageError: (a ValueError) for data that cannot be prepared, in one line: an input path or ``directory``
            that does not exist, a ``directory`` without parquet files, inputs without functions, a tokenizer file
            that cannot be read; :class:`~undertale.runtime.errors.OutputError` for a cache that cannot be written.
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
    with cache_lock(cache, say=progress):  # a run's other ranks (no progress) wait for its first in silence
        removed = remove_temporaries(cache)
        if removed:
            print(f"cache: removed {len(removed)} temporary file(s) of interrupted writes "
                  f"({sum(size for _, size in removed):,} bytes): {', '.join(str(path) for path, _ in removed[:3])}"
                  f"{' ...' if len(removed) > 3 else ''}", file=sys.stderr)
        verified = Verified(cache)
        try:
            prepared = _prepare(source, cache, paths, directory, tokenizer, sequence_length, merges,
                                tokenizer_functions, corpus_options or CorpusOptions(), workers, packing, progress,
                                scheduler, packages, pins, mirror, suite, allow_missing, dask, verified)
        except UsageError:
            raise
        except (ValueError, FileNotFoundError) as error:  # the data's own mistakes, named by the step that met them
            raise UsageError(first_line(error, 1000)) from error
        finally:
            verified.save()
    return prepared


def _prepare(source: str, cache: Path, paths: Optional[Sequence[str]], directory: Optional[str],
             tokenizer: Optional[str], sequence_length: int, merges: int, tokenizer_functions: int,
             corpus_options: CorpusOptions, workers: Optional[int], packing: bool, progress: bool,
             scheduler: Optional[str], packages: Optional[str], pins: Optional[list], mirror: Optional[str], suite: str,
             allow_missing: bool, dask: tuple[Optional[str], Optional[int]], verified: Verified) -> PreparedData:
    """:func:`prepare`'s steps, under the cache lock."""
    shards = Path(directory).expanduser() if source == "parquet" else None
    if shards is not None and is_tokenized(shards):
        if not tokenizer:
            raise ValueError(f"{shards} is already tokenized: set data.tokenizer to the tokenizer.json it was made with")
        load_tokenizer(tokenizer)
        prepared = PreparedData(shards, Path(tokenizer), None)
    else:
        if pins is not None:
            corpus, corpus_id = _debian_corpus(cache, pins, packages, corpus_options, workers, mirror, suite,
                                               allow_missing, progress, verified)
        elif shards is None:
            corpus, corpus_id = _corpus(cache, paths, corpus_options, workers, progress, scheduler, verified)
        else:
            corpus, corpus_id = shards, _files_digest(shards)
        if tokenizer:
            tokenizer_path = Path(tokenizer).expanduser()
        else:
            tokenizer_path = _trained_tokenizer(
                cache, corpus, corpus_id, merges, sequence_length, tokenizer_functions, progress, verified
            )
        tokenized = _tokenized(cache, corpus, corpus_id, tokenizer_path, sequence_length, progress, dask, verified)
        prepared = PreparedData(tokenized, tokenizer_path, corpus)
    return _packed(prepared, cache, progress, dask, verified) if packing else prepared


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
    scheduler: Optional[str] = None, verified: Optional[Verified] = None,
) -> tuple[Path, str]:
    """The corpus of ``paths`` (built, reused, or built again when not whole) and its key."""
    corpus = cache / "corpus" / _digest(sorted(paths or []), options.__dict__)
    repair_corpus(cache, corpus, verified or Verified(cache))
    manifest = build_corpus(corpus, paths, options, workers=workers, progress=progress, scheduler=scheduler)
    return corpus, manifest["key"][:16]


def _debian_corpus(
    cache: Path, pins: list, packages: str, options: CorpusOptions, workers: Optional[int], mirror: Optional[str],
    suite: str, allow_missing: bool, progress: bool, verified: Optional[Verified] = None,
) -> tuple[Path, str]:
    """The corpus of pinned Debian packages (built, reused, or built again when not whole; the ``.deb`` files
    under ``cache/debs``) and its key."""
    from undertale.data.corpus.debian import build_debian_corpus, debian_key

    corpus = cache / "corpus" / f"debian-{debian_key(pins, options)[:16]}"
    repair_corpus(cache, corpus, verified or Verified(cache))
    manifest = build_debian_corpus(corpus, pins, options, workers=workers, mirror=mirror, suite=suite, cache_dir=cache,
                                   allow_missing=allow_missing, progress=progress, source_file=packages)
    return corpus, manifest["key"][:16]


def _trained_tokenizer(
    cache: Path, corpus: Path, corpus_id: str, merges: int, sequence_length: int, functions: int, progress: bool,
    verified: Optional[Verified] = None,
) -> Path:
    """A tokenizer trained on ``corpus`` (or reused when whole), per :data:`TOKENIZER_FORMAT`."""
    verified = verified or Verified(cache)
    name = f"{corpus_id}-{merges}-{sequence_length}-{functions}-v{TOKENIZER_FORMAT}"
    path = cache / "tokenizers" / f"{name}.json"
    if checked_tokenizer(cache, path, load_tokenizer, verified):
        return path
    started = time.perf_counter()
    model = train_tokenizer(training_texts(corpus, functions), merges, sequence_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    model.save(str(temporary))
    os.replace(temporary, path)
    record_tokenizer(path, verified)
    if progress:
        print(f"tokenizer: {model.get_vocab_size():,} tokens, trained in {time.perf_counter() - started:.1f} s -> {path}")
    return path


def _tokenized(
    cache: Path, corpus: Path, corpus_id: str, tokenizer: Path, sequence_length: int, progress: bool,
    dask: tuple[Optional[str], Optional[int]] = (None, None), verified: Optional[Verified] = None,
) -> Path:
    """The corpus tokenized (reused when whole; its damaged shards tokenized again), per tokenizer and
    :data:`~undertale.data.encode.TOKENIZED_FORMAT`."""
    verified = verified or Verified(cache)
    model = load_tokenizer(tokenizer, sequence_length)
    tokenizer_id = hashlib.sha256(model.to_str().encode()).hexdigest()[:16]
    tokenized = cache / "tokenized" / f"{corpus_id}-{tokenizer_id}-v{TOKENIZED_FORMAT}"
    if not checked_shards(cache, tokenized, COMPLETE, verified):
        with _runner(dask) as runner:
            counts = tokenize_corpus(corpus, model, tokenized, progress=progress, runner=runner)
        record_entry(tokenized, COMPLETE, counts | {"tokenizer": str(tokenizer)}, verified)
        if progress:
            print(
                f"tokenize: {counts['rows']:,} functions, {counts['tokens']:,} tokens in {counts['seconds']:.1f} s "
                f"({counts['tokens'] / max(counts['seconds'], 1e-9):,.0f} tokens/s) -> {tokenized}"
            )
    return tokenized


def _packed(prepared: PreparedData, cache: Path, progress: bool,
            dask: tuple[Optional[str], Optional[int]] = (None, None),
            verified: Optional[Verified] = None) -> PreparedData:
    """The same data with several functions packed into each row, built once per content of the tokenized
    shards (shards of a user's rewritten in place are packed again) and per
    :data:`~undertale.data.packing.PACKING_FORMAT`; reused when whole (its damaged shards packed again)."""
    verified = verified or Verified(cache)
    tokenized = prepared.tokenized
    # a cached tokenization is named by its content (corpus, tokenizer, format): the same name on any machine;
    # shards a user gave are keyed by their files, since they may be rewritten in place
    own = tokenized.resolve().parent == (cache / "tokenized").resolve()
    packed = cache / "packed" / _digest(PACKING_FORMAT, tokenized.name if own else _files_digest(tokenized))
    if not checked_shards(cache, packed, PACKED, verified):
        with _runner(dask) as runner:
            counts = pack_directory(prepared.tokenized, packed, progress=progress, runner=runner)
        record_entry(packed, PACKED, counts, verified)
        if progress:
            print(
                f"pack: {counts['functions']:,} functions into {counts['rows']:,} rows "
                f"({counts['density']:.0%} of positions are real tokens) -> {packed}"
            )
    return PreparedData(packed, prepared.tokenizer, prepared.corpus)
