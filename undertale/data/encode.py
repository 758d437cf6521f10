"""Tokenize corpus shards: ``disassembly`` text in, fixed-length ``tokens`` and ``mask`` out."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from undertale.data.parquet import ROW_GROUP_ROWS, fixed_list, open_parquet, parquet_files
from undertale.data.tokenizer import PAD, sequence_length_of

TEXT_COLUMN = "disassembly"
BATCH_TOKENS = 1 << 22  # padded positions encoded at once (~4M: about 1 GB of tokenizer output)
# Bump when tokenize_corpus writes different rows for the same corpus and tokenizer: cached shards are rebuilt.
TOKENIZED_FORMAT = 1


def leading_words(text: str, count: int) -> str:
    """The first ``count`` space-separated words: every word is at least one token, so truncating to
    ``count`` tokens never needs more, and the tokenizer is spared the rest of long functions."""
    if text.count(" ") < count:
        return text
    return " ".join(text.split(" ", count)[:count])


def encode_texts(tokenizer: Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Encode texts in one parallel batch; returns (tokens int32, mask int8), both (rows, length)."""
    length = sequence_length_of(tokenizer)
    texts = [leading_words(text, length) for text in texts]
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # no offsets: faster
    tokens = np.array([encoding.ids for encoding in encode(texts)], dtype=np.int32).reshape(-1, length)
    mask = (tokens != tokenizer.token_to_id(PAD)).astype(np.int8)
    return tokens, mask


def tokenize_shard(path: str, target: str, tokenizer_json: str, batch_rows: int) -> tuple[int, int]:
    """Tokenize one corpus shard into ``target`` (written under a temporary name, renamed when whole).

    Arguments are plain strings so that the call can run as a Dask task. Returns (rows, real tokens).
    """
    tokenizer = Tokenizer.from_str(tokenizer_json)
    handle = open_parquet(Path(path), (TEXT_COLUMN,))
    target_path = Path(target)
    target_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = target_path.with_suffix(".parquet.tmp")
    writer, rows, real_tokens = None, 0, 0
    try:
        for batch in handle.iter_batches(batch_size=batch_rows):
            table = pa.Table.from_batches([batch])
            tokens, mask = encode_texts(tokenizer, table.column(TEXT_COLUMN).to_pylist())
            lengths = mask.sum(axis=1, dtype=np.int64)
            table = table.append_column("tokens", fixed_list(tokens))
            table = table.append_column("mask", fixed_list(mask))
            table = table.append_column("length", pa.array(lengths))
            if writer is None:
                writer = pq.ParquetWriter(temporary, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            rows += len(table)
            real_tokens += int(lengths.sum())
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        os.replace(temporary, target_path)
    return rows, real_tokens


def tokenize_corpus(
    corpus: str | os.PathLike,
    tokenizer: Tokenizer,
    output: str | os.PathLike,
    batch_rows: int = 8192,
    progress: bool = True,
    runner: Optional[Any] = None,
) -> dict:
    """Write a tokenized copy of every corpus shard under ``output`` (same relative paths).

    Each output shard keeps the source columns and adds ``tokens``, ``mask``
    and ``length`` (real tokens). Shards are written under a temporary name
    and renamed when whole; an existing output shard is reused.

    Arguments:
        runner: a :class:`~undertale.data.corpus.distributed.DaskReader`: one Dask task per shard; None: in this process.

    Returns:
        Counts: rows, tokens (non-padding) and seconds.
    """
    corpus, output = Path(corpus), Path(output)
    files = parquet_files(corpus)
    # at most BATCH_TOKENS padded positions per batch: memory stays flat at long sequence lengths
    batch_rows = max(1, min(batch_rows, BATCH_TOKENS // sequence_length_of(tokenizer)))
    rows = real_tokens = 0
    started = time.perf_counter()
    jobs = []
    for path in files:
        target = output / path.relative_to(corpus) if corpus.is_dir() else output / path.name
        if target.is_file():
            rows += pq.read_metadata(target).num_rows
        else:
            jobs.append((str(path), str(target), tokenizer.to_str(), batch_rows))
    results = runner.map(tokenize_shard, jobs) if runner is not None else (tokenize_shard(*job) for job in jobs)
    bar = tqdm(total=len(files), initial=len(files) - len(jobs), unit="shard", desc="tokenize", disable=not progress,
               dynamic_ncols=True)
    for shard_rows, shard_tokens in results:
        rows, real_tokens = rows + shard_rows, real_tokens + shard_tokens
        elapsed = max(time.perf_counter() - started, 1e-9)
        bar.update()
        bar.set_postfix(rows=f"{rows:,}", tokens_per_s=f"{real_tokens / elapsed:,.0f}")
    bar.close()
    return {"rows": rows, "tokens": real_tokens, "seconds": time.perf_counter() - started}


def tokenized_files(directory: str | os.PathLike, split: Optional[str] = None) -> list[Path]:
    """Tokenized shards of one split (``train``/``validation``) or, with None, all of them.

    Raises:
        FileNotFoundError: naming the directory and the split when ``split`` has no folder there,
            or when the folder holds no parquet file.
    """
    root = Path(directory)
    if split is None:
        return parquet_files(root)
    if not (root / split).is_dir():
        raise FileNotFoundError(
            f"{root} has no {split}/ folder: data directories need train/ and validation/ subfolders of parquet "
            "shards (as `python -m undertale.data corpus` writes them)"
        )
    return parquet_files(root / split)
