"""Parquet shards: finding and opening them, and the fixed-size-list columns that hold token matrices."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 2048


def parquet_files(directory: str | os.PathLike) -> list[Path]:
    """Every ``*.parquet`` file under ``directory`` (recursively), sorted; a parquet file is its own list.

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


def fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """A (rows, length) array as an arrow fixed-size-list column, without a per-row copy."""
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def matrix(column: pa.ChunkedArray | pa.FixedSizeListArray) -> np.ndarray:
    """A fixed-size-list arrow column as a (rows, length) numpy array: the inverse of :func:`fixed_list`."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.values.to_numpy(zero_copy_only=False).reshape(-1, array.type.list_size)
