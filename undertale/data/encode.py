"""Tokenize corpus shards: ``disassembly`` text in, fixed-length ``tokens`` and ``mask`` out."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from .tokenizer import PAD, sequence_length_of

TEXT_COLUMN = "disassembly"
ROW_GROUP_ROWS = 2048


def parquet_files(directory: str | os.PathLike) -> list[Path]:
    """Every ``*.parquet`` file under ``directory`` (recursively), sorted.

    Raises:
        FileNotFoundError: when the directory is missing or holds no parquet file.
    """
    directory = Path(directory)
    if directory.is_file() and directory.suffix == ".parquet":
        return [directory]
    if not directory.is_dir():
        raise FileNotFoundError(f"data directory {directory} does not exist")
    files = sorted(directory.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files under {directory}")
    return files


def open_parquet(path: Path, required: tuple[str, ...]) -> pq.ParquetFile:
    """Open a parquet file and check that it has the ``required`` columns.

    Raises:
        ValueError: naming the file when it is corrupt or lacks a column.
    """
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{path}: not a readable parquet file ({error})") from error
    missing = [column for column in required if column not in handle.schema_arrow.names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {handle.schema_arrow.names}")
    return handle


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


def fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """A (rows, length) array as an arrow fixed-size-list column, without a per-row copy."""
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def matrix(column: pa.ChunkedArray | pa.FixedSizeListArray) -> np.ndarray:
    """A fixed-size-list arrow column as a (rows, length) numpy array: the inverse of :func:`fixed_list`."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.values.to_numpy(zero_copy_only=False).reshape(-1, array.type.list_size)


def tokenize_corpus(
    corpus: str | os.PathLike,
    tokenizer: Tokenizer,
    output: str | os.PathLike,
    batch_rows: int = 8192,
    progress: bool = True,
) -> dict:
    """Write a tokenized copy of every corpus shard under ``output`` (same relative paths).

    Each output shard keeps the source columns and adds ``tokens``, ``mask``
    and ``length`` (real tokens). Shards are written under a temporary name
    and renamed when whole; an existing output shard is reused.

    Returns:
        Counts: rows, tokens (non-padding) and seconds.
    """
    corpus, output = Path(corpus), Path(output)
    files = parquet_files(corpus)
    rows = real_tokens = 0
    started = time.perf_counter()
    bar = tqdm(total=len(files), unit="shard", desc="tokenize", disable=not progress, dynamic_ncols=True)
    for path in files:
        target = output / path.relative_to(corpus) if corpus.is_dir() else output / path.name
        bar.update()
        if target.is_file():
            metadata = pq.read_metadata(target)
            rows += metadata.num_rows
            continue
        handle = open_parquet(path, (TEXT_COLUMN,))
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(".parquet.tmp")
        writer = None
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
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(rows=f"{rows:,}", tokens_per_s=f"{real_tokens / elapsed:,.0f}")
        finally:
            if writer is not None:
                writer.close()
        if writer is not None:
            os.replace(temporary, target)
    bar.close()
    return {"rows": rows, "tokens": real_tokens, "seconds": time.perf_counter() - started}


def tokenized_files(directory: str | os.PathLike, split: Optional[str] = None) -> list[Path]:
    """Tokenized shards of one split (``train``/``validation``) or, with None, all of them."""
    root = Path(directory)
    if split is not None and (root / split).is_dir():
        root = root / split
    return parquet_files(root)
