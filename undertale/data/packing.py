"""Pack several functions into each fixed-length row, so no step computes on padding.

A packed row holds whole functions one after another; its ``mask`` numbers
them ``1, 2, ...`` (0 is padding). The encoder attends only within a function
and restarts instruction/argument indices at each one, so a packed row gives
the same outputs as its functions would alone.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from pathlib import Path

from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from undertale.data.parquet import ROW_GROUP_ROWS, fixed_list, matrix, parquet_files

MAX_SEGMENTS = 127  # segment ids are stored as int8
# Bump when pack_directory writes different rows for the same tokenized shards: cached packs are rebuilt.
PACKING_FORMAT = 1


def assign_bins(lengths: np.ndarray, capacity: int, max_segments: int = MAX_SEGMENTS) -> tuple[np.ndarray, np.ndarray, int]:
    """Best-fit-decreasing assignment of items to bins of ``capacity``.

    Returns each item's bin, its offset within the bin, and the number of bins.
    """
    order = np.argsort(-lengths, kind="stable")
    bins = np.empty(len(lengths), dtype=np.int64)
    offsets = np.empty(len(lengths), dtype=np.int64)
    fill: list[int] = []
    count: list[int] = []
    # open bins sorted by free space: (free, bin)
    free: list[tuple[int, int]] = []
    for item in order:
        length = int(lengths[item])
        position = bisect.bisect_left(free, (length, -1))
        if position < len(free):
            _, chosen = free.pop(position)
        else:
            chosen = len(fill)
            fill.append(0)
            count.append(0)
        bins[item], offsets[item] = chosen, fill[chosen]
        fill[chosen] += length
        count[chosen] += 1
        if capacity - fill[chosen] > 0 and count[chosen] < max_segments:
            bisect.insort(free, (capacity - fill[chosen], chosen))
    return bins, offsets, len(fill)


def pack_rows(tokens: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pack padded rows (rows x L, real tokens first) into fewer rows; returns (tokens, segment mask)."""
    capacity = tokens.shape[1]
    lengths = np.minimum(lengths, capacity).astype(np.int64)
    keep = lengths > 0
    tokens, lengths = tokens[keep], lengths[keep]
    bins, offsets, count = assign_bins(lengths, capacity)
    packed = np.zeros((count, capacity), dtype=tokens.dtype)
    segments = np.zeros((count, capacity), dtype=np.int8)
    # segment number of each item within its bin, in offset order
    order = np.lexsort((offsets, bins))
    first_of_bin = np.r_[0, np.flatnonzero(np.diff(bins[order])) + 1]
    rank = np.arange(len(order)) - np.repeat(first_of_bin, np.diff(np.r_[first_of_bin, len(order)]))
    segment_ids = np.empty(len(order), dtype=np.int8)
    segment_ids[order] = rank + 1
    # scatter every real token to (bin, offset + position)
    item = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(item)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    packed[bins[item], offsets[item] + position] = tokens[item, position]
    segments[bins[item], offsets[item] + position] = segment_ids[item]
    return packed, segments


def pack_shard(path: str, target: str) -> dict:
    """Pack one tokenized shard into ``target`` (reused when it exists); counts of functions, rows, tokens, width.

    Arguments are plain strings so that the call can run as a Dask task.
    """
    table = pq.read_table(path, columns=["tokens", "length"])
    tokens, lengths = matrix(table.column("tokens")), table.column("length").to_numpy()
    counts = {"functions": len(lengths), "tokens": int(np.minimum(lengths, tokens.shape[1]).sum()),
              "width": tokens.shape[1]}
    target_path = Path(target)
    if target_path.is_file():
        return counts | {"rows": pq.read_metadata(target_path).num_rows}
    packed, segments = pack_rows(tokens, lengths)
    target_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = target_path.with_suffix(".parquet.tmp")
    packed_table = pa.table(
        {"tokens": fixed_list(packed), "mask": fixed_list(segments),
         "length": pa.array((segments != 0).sum(axis=1, dtype=np.int64))}
    )
    pq.write_table(packed_table, temporary, row_group_size=ROW_GROUP_ROWS, compression="zstd")
    os.replace(temporary, target_path)
    return counts | {"rows": len(packed)}


def pack_directory(source: str | os.PathLike, output: str | os.PathLike, progress: bool = True,
                   runner: Optional[Any] = None) -> dict:
    """Pack every tokenized shard under ``source`` into ``output`` (same relative paths).

    Shards are written under a temporary name and renamed when whole; existing ones are reused.

    Arguments:
        runner: a :class:`~undertale.data.corpus.distributed.DaskReader`: one Dask task per shard; None: in this process.

    Returns:
        Counts: functions, packed rows, real tokens and the density (real tokens / positions).

    Raises:
        FileNotFoundError: when ``source`` is missing or holds no parquet file.
    """
    source, output = Path(source), Path(output)
    totals = {"functions": 0, "rows": 0, "tokens": 0}
    started = time.perf_counter()
    jobs = [(str(path), str(output / path.relative_to(source))) for path in parquet_files(source)]
    results = runner.map(pack_shard, jobs) if runner is not None else (pack_shard(*job) for job in jobs)
    width = 1
    for counts in tqdm(results, total=len(jobs), unit="shard", desc="pack", disable=not progress, dynamic_ncols=True):
        for key in totals:
            totals[key] += counts[key]
        width = counts["width"]
    totals["density"] = totals["tokens"] / max(1, totals["rows"] * width)
    totals["seconds"] = round(time.perf_counter() - started, 2)
    (output / "packing.json").write_text(json.dumps(totals))
    return totals
