"""``index.py``: every function of some ELF files embedded into a search index (new, or appended to)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from undertale.runtime.errors import UsageError, first_line, report_usage_error
from undertale.search.store import SearchIndex, check_binary, describe_model, load_encoder, model_hash

COLUMNS = ("binary", "sha256", "name", "address", "size", "instructions", "disassembly")


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def model_identity(encoder, path: str | os.PathLike) -> dict:
    """What an index records of its model: hash, path, width, pooling, windows."""
    width = encoder.embed(["ret"]).shape[1]
    return {"hash": model_hash(encoder), "path": str(Path(path).expanduser().resolve()), "width": int(width),
            "pooling": encoder.pooling, "windows": encoder.which_windows}


def read_binary(path: str) -> tuple[list[dict], str]:
    """The functions (corpus rows) of one ELF file and its sha256; :class:`UsageError` when it cannot be read."""
    from undertale.data.corpus.read import read_file

    check_binary(path)
    result = read_file(path)
    if result.error:
        raise UsageError(f"cannot read {path}: {result.error}")
    return result.rows, result.sha256


def embed_rows(encoder, rows: list[dict], path: str, sha256: str, progress: bool = False):
    """Unit vectors and the table (``COLUMNS``) of one binary's functions."""
    import pyarrow as pa

    vectors = unit(encoder.embed([row["disassembly"] for row in rows], progress=progress)) if rows else \
        np.zeros((0, 1), dtype=np.float32)
    table = pa.table({
        "binary": pa.array([path] * len(rows), pa.string()),
        "sha256": pa.array([sha256] * len(rows), pa.string()),
        "name": pa.array([row["name"] for row in rows], pa.string()),
        "address": pa.array([row["address"] for row in rows], pa.uint64()),
        "size": pa.array([row["size"] for row in rows], pa.int64()),
        "instructions": pa.array([row["instructions"] for row in rows], pa.int64()),
        "disassembly": pa.array([row["disassembly"] for row in rows], pa.string()),
    })
    return vectors, table


def index_command(cfg) -> int:
    """Run ``index.py``; the exit code (2, after one ``error:`` line, for a mistake in the arguments)."""
    try:
        return build_index(cfg.binaries, cfg.model, cfg.output, batch_size=int(cfg.get("batch_size") or 64),
                           device=cfg.get("device"))
    except UsageError as error:
        return report_usage_error(error)


def build_index(binaries, model: Optional[str], output: Optional[str], batch_size: int = 64,
                device: Optional[str] = None, progress: bool = True) -> int:
    """Embed the functions of ``binaries`` with ``model`` into the index ``output`` (created or appended to).

    Every check (each binary is ELF, the index is one, its model is this model) comes before anything is written.
    """
    from undertale.data.corpus.inputs import expand_inputs

    if not binaries:
        raise UsageError("binaries=[file,directory,glob,...] is required")
    if not model:
        raise UsageError("model=<training run or export.py directory> is required")
    if not output:
        raise UsageError("output=<index directory> is required")
    paths = [binaries] if isinstance(binaries, str) else list(binaries)
    try:
        files = expand_inputs(paths)
    except FileNotFoundError as error:
        raise UsageError(first_line(error)) from None
    named = {os.path.realpath(path) for path in paths if os.path.isfile(path)}
    chosen = []
    for path in files:
        try:
            check_binary(path)
            chosen.append(path)
        except UsageError:
            if path in named:  # a file named on the command line must be one
                raise
            print(f"warning: skipped {path}: not an ELF file", file=sys.stderr)
    output_path = Path(output).expanduser()
    if output_path.exists() and not SearchIndex.exists(output_path) and (
            not output_path.is_dir() or any(output_path.iterdir())):
        raise UsageError(f"output={output_path} exists and is not a search index; give a new directory or an index")
    existing = SearchIndex.open(output_path) if SearchIndex.exists(output_path) else None
    import torch

    try:
        encoder = load_encoder(model, batch_size=batch_size, device=torch.device(device) if device else None)
    except UsageError:
        raise
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        raise UsageError(first_line(error)) from None
    identity = model_identity(encoder, model)
    if existing is not None and existing.model["hash"] != identity["hash"]:
        raise UsageError(f"index {output_path} was built with model {describe_model(existing.model)}, not "
                         f"{describe_model(identity)}; use another output= for this model")
    index = existing or SearchIndex.create(output_path, identity)
    known = {entry["sha256"] for entry in index.binaries}
    vectors, tables, entries = [], [], []
    started = time.perf_counter()
    start = index.count
    for path in chosen:
        rows, digest = read_binary(path)
        if digest in known:
            print(f"skipped {path}: already indexed (sha256 {digest[:12]})", file=sys.stderr)
            continue
        known.add(digest)
        if not rows:
            print(f"warning: skipped {path}: no functions found", file=sys.stderr)
            continue
        embedded, table = embed_rows(encoder, rows, path, digest, progress=progress)
        vectors.append(embedded)
        tables.append(table)
        entries.append({"path": path, "sha256": digest, "start": start, "functions": len(rows)})
        start += len(rows)
        print(f"index: {path}: {len(rows):,} functions", file=sys.stderr)
    if not entries:
        print(f"index: nothing new; {index.path} holds {index.count:,} functions of {len(index.binaries)} binaries")
        return 0
    import pyarrow as pa

    added = int(sum(len(v) for v in vectors))
    index.append(np.concatenate(vectors), pa.concat_tables(tables), entries)
    seconds = time.perf_counter() - started
    print(f"index: +{added:,} functions of {len(entries)} binaries in {seconds:.1f} s "
          f"({added / max(seconds, 1e-9):,.0f} functions/s) -> {index.path} "
          f"({index.count:,} functions, {index.meta['dimensions']} dimensions, model {describe_model(index.model)})")
    return 0
