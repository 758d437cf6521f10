"""From a data source to tokenized shards and a tokenizer, each step cached.

Sources:

- ``binaries``: ELF paths (the system directories when none are given) are
  disassembled into a corpus;
- ``parquet``: an existing directory of shards, either disassembly (a
  ``disassembly`` column) or already tokenized (``tokens`` and ``mask``).

The corpus, the tokenizer and the tokenized shards live under ``cache_dir``
and are reused when their inputs have not changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pyarrow.parquet as pq

from .corpus import CorpusOptions, build_corpus
from .encode import TEXT_COLUMN, open_parquet, parquet_files, tokenize_corpus
from .packing import pack_directory
from .tokenizer import DEFAULT_MERGES, load_tokenizer, train_tokenizer

COMPLETE = "complete.json"


@dataclass(frozen=True)
class PreparedData:
    """Where the tokenized shards and the tokenizer are."""

    tokenized: Path
    tokenizer: Path
    corpus: Optional[Path]


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:16]


def _files_digest(directory: Path) -> str:
    return _digest([(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in parquet_files(directory)])


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
) -> PreparedData:
    """Build (or reuse) corpus, tokenizer and tokenized shards for one data source.

    Arguments:
        source: ``system`` (this machine's binaries, or ``paths``), ``binaries`` or ``parquet``.
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

    Raises:
        ValueError: for an unknown source, a missing directory, or tokenized shards without a tokenizer.
    """
    cache = Path(cache_dir).expanduser()
    if source in ("system", "binaries"):
        options = corpus_options or CorpusOptions()
        name = _digest(sorted(paths or []), options.__dict__)
        corpus = cache / "corpus" / name
        build_corpus(corpus, paths, options, workers=workers, progress=progress)
        corpus_id = json.loads((corpus / "manifest.json").read_text())["key"][:16]
    elif source == "parquet":
        if not directory:
            raise ValueError("data source 'parquet' needs data.directory (a folder of parquet shards)")
        corpus = Path(directory).expanduser()
        if is_tokenized(corpus):
            if not tokenizer:
                raise ValueError(f"{corpus} is already tokenized: set data.tokenizer to the tokenizer.json it was made with")
            load_tokenizer(tokenizer)
            return _packed(PreparedData(corpus, Path(tokenizer), None), cache, packing, progress)
        corpus_id = _files_digest(corpus)
    else:
        raise ValueError(f"unknown data source {source!r}; choose 'system', 'binaries' or 'parquet'")

    if tokenizer:
        tokenizer_path = Path(tokenizer).expanduser()
        model = load_tokenizer(tokenizer_path, sequence_length)
    else:
        tokenizer_path = cache / "tokenizers" / f"{corpus_id}-{merges}-{sequence_length}-{tokenizer_functions}.json"
        if tokenizer_path.is_file():
            model = load_tokenizer(tokenizer_path, sequence_length)
        else:
            started = time.perf_counter()
            model = train_tokenizer(training_texts(corpus, tokenizer_functions), merges, sequence_length)
            tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
            temporary = tokenizer_path.with_suffix(".json.tmp")
            model.save(str(temporary))
            os.replace(temporary, tokenizer_path)
            if progress:
                print(
                    f"tokenizer: {model.get_vocab_size():,} tokens, trained in "
                    f"{time.perf_counter() - started:.1f} s -> {tokenizer_path}"
                )
    tokenizer_id = hashlib.sha256(model.to_str().encode()).hexdigest()[:16]
    tokenized = cache / "tokenized" / f"{corpus_id}-{tokenizer_id}"
    if not (tokenized / COMPLETE).is_file():
        counts = tokenize_corpus(corpus, model, tokenized, progress=progress)
        (tokenized / COMPLETE).write_text(json.dumps(counts | {"tokenizer": str(tokenizer_path)}))
        if progress:
            print(
                f"tokenize: {counts['rows']:,} functions, {counts['tokens']:,} tokens in {counts['seconds']:.1f} s "
                f"({counts['tokens'] / max(counts['seconds'], 1e-9):,.0f} tokens/s) -> {tokenized}"
            )
    return _packed(PreparedData(tokenized, tokenizer_path, corpus), cache, packing, progress)


def _packed(prepared: PreparedData, cache: Path, packing: bool, progress: bool) -> PreparedData:
    """The same data with several functions packed into each row, built once."""
    if not packing:
        return prepared
    packed = cache / "packed" / _digest(str(prepared.tokenized.resolve()))
    if not (packed / "packing.json").is_file():
        counts = pack_directory(prepared.tokenized, packed, progress=progress)
        if progress:
            print(
                f"pack: {counts['functions']:,} functions into {counts['rows']:,} rows "
                f"({counts['density']:.0%} of positions are real tokens) -> {packed}"
            )
    return PreparedData(packed, prepared.tokenizer, prepared.corpus)
