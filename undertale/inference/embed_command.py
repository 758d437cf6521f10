"""``embed.py``: functions from binaries or parquet shards in, a parquet file of vectors out."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from undertale.runtime.errors import UsageError, first_line, report_usage_error


def functions_of_binaries(paths: list[str]) -> list[dict]:
    """Every function of the ELF files under ``paths`` (no deduplication), skipped files named on stderr."""
    from tqdm.auto import tqdm

    from undertale.data.corpus.inputs import expand_inputs
    from undertale.data.corpus.read import read_file

    rows = []
    for path in tqdm(expand_inputs(paths), unit="file", desc="disassemble", dynamic_ncols=True):
        result = read_file(path)
        if result.error:
            print(f"warning: skipped {path}: {result.error}", file=sys.stderr)
        rows.extend(result.rows)
    return rows


def functions_of_corpus(directory: str) -> list[dict]:
    from undertale.data.parquet import parquet_files

    import pyarrow.parquet as pq

    columns = ("source", "name", "address", "size", "instructions", "disassembly")
    rows = []
    for path in parquet_files(directory):
        table = pq.read_table(path)
        missing = [column for column in ("disassembly",) if column not in table.column_names]
        if missing:
            raise UsageError(f"{path} has no {missing[0]} column; give a corpus or pairs directory")
        rows.extend(table.select([c for c in columns if c in table.column_names]).to_pylist())
    return rows


def embed_command(cfg: DictConfig) -> int:
    """Run ``embed.py``; the exit code (2, after one ``error:`` line, for a mistake in the arguments)."""
    try:
        return _embed(cfg)
    except UsageError as error:
        return report_usage_error(error)


def _embed(cfg: DictConfig) -> int:
    if not cfg.run:
        raise UsageError("run=<run directory> is required (a training run with a checkpoint and tokenizer.json)")
    if not cfg.output:
        raise UsageError("output=<file.parquet> is required")
    if bool(cfg.binaries) == bool(cfg.corpus):
        raise UsageError("give either binaries=[file,directory,glob,...] or corpus=<parquet folder>, not both and not neither")
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from undertale.data.parquet import fixed_list
    from undertale.inference.embedding import FunctionEncoder

    try:
        device = torch.device(cfg.device) if cfg.device else None
        encoder = FunctionEncoder.from_run(cfg.run, pooling=cfg.pooling, batch_size=cfg.batch_size, device=device,
                                           windows=cfg.windows)
        paths = [cfg.binaries] if isinstance(cfg.binaries, str) else list(cfg.binaries or [])
        rows = functions_of_binaries(paths) if paths else functions_of_corpus(cfg.corpus)
    except UsageError:
        raise
    except (FileNotFoundError, ValueError, RuntimeError) as error:  # e.g. a bad device name
        raise UsageError(first_line(error)) from None
    if not rows:
        raise UsageError(f"no functions found in {paths or cfg.corpus}")
    started = time.perf_counter()
    vectors = encoder.embed([row["disassembly"] for row in rows], progress=True)
    keep = [column for column in ("source", "name", "address", "size", "instructions") if column in rows[0]]
    table = pa.table({column: [row[column] for row in rows] for column in keep})
    table = table.append_column("vector", fixed_list(np.ascontiguousarray(vectors, dtype=np.float32)))
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, output)
    print(f"embed: {len(rows):,} functions, {vectors.shape[1]} dimensions ({encoder.pooling} pooling, "
          f"windows={encoder.which_windows}"
          f"{', the projection head of a fine-tuned run' if encoder.projection is not None else ''}) in "
          f"{time.perf_counter() - started:.1f} s on {encoder.device} -> {output}")
    return 0
