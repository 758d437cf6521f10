"""A search index on disk, and the identity of the model whose vectors it holds.

An index is a directory::

    index.json          format, the model (hash of weights + tokenizer + pooling/windows, its path, width),
                        the binaries (path, sha256, first row, function count), the row count
    vectors.npy         float32 (rows x width), unit length, read memory-mapped
    functions.parquet   one row per vector: binary, sha256, name, address, size, instructions, disassembly
    faiss.index         the approximate index, written by the first search of a large index (optional)

Appending rewrites ``vectors.npy`` and ``functions.parquet`` to temporary files and replaces them, then
``index.json`` (the last file written: an index whose ``index.json`` counts the rows is complete).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from undertale.runtime.errors import UsageError

FORMAT = "undertale-search-index"
VERSION = 1
INDEX_FILE = "index.json"
VECTORS_FILE = "vectors.npy"
TABLE_FILE = "functions.parquet"
FAISS_FILE = "faiss.index"
ELF_MAGIC = b"\x7fELF"
AR_MAGIC = b"!<arch>\n"


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_binary(path: str | os.PathLike) -> None:
    """Raise :class:`UsageError` unless ``path`` is a readable ELF file (or an ``ar`` archive of them)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    if not (head.startswith(ELF_MAGIC) or head == AR_MAGIC):
        raise UsageError(f"{path} is not an ELF file (nor an ar archive of ELF objects)")


def model_hash(encoder) -> str:
    """sha256 of a :class:`~undertale.inference.embedding.FunctionEncoder`'s weights (encoder and projection),
    tokenizer, pooling and windows: the same for a run and the model ``export.py`` wrote from it."""
    digest = hashlib.sha256()
    modules = [("encoder", encoder.encoder)] + ([("projection", encoder.projection)] if encoder.projection else [])
    for prefix, module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            array = tensor.detach().cpu().float().contiguous().numpy()
            digest.update(f"{prefix}.{name}:{tuple(array.shape)}".encode())
            digest.update(array.tobytes())
    digest.update(encoder.tokenizer.to_str().encode())
    digest.update(f"pooling={encoder.pooling};windows={encoder.which_windows}".encode())
    return digest.hexdigest()


def load_encoder(model: str | os.PathLike, batch_size: int = 64, device=None):
    """The :class:`~undertale.inference.embedding.FunctionEncoder` of a run directory or an ``export.py`` directory."""
    from undertale.inference.embedding import FunctionEncoder

    path = Path(model).expanduser()
    if not path.is_dir():
        raise UsageError(f"model={model} is not a directory (give a training run or an export.py directory)")
    if (path / "model.safetensors").is_file():
        return FunctionEncoder.from_pretrained(path, batch_size=batch_size, device=device)
    return FunctionEncoder.from_run(path, batch_size=batch_size, device=device)


def describe_model(model: dict) -> str:
    return f"{model['path']} ({model['hash'][:12]})"


@dataclass
class SearchIndex:
    """An index directory, opened read-only (:meth:`open`) or about to be written (:meth:`create`)."""

    path: Path
    meta: dict

    @classmethod
    def exists(cls, path: str | os.PathLike) -> bool:
        return (Path(path) / INDEX_FILE).is_file()

    @classmethod
    def open(cls, path: str | os.PathLike) -> "SearchIndex":
        """Raises :class:`UsageError` for a path that is not an index."""
        directory = Path(path).expanduser()
        hint = "build one with python index.py binaries=[...] model=<run or export dir> output=<dir>"
        if not (directory / INDEX_FILE).is_file():
            raise UsageError(f"{directory} is not a search index (it has no {INDEX_FILE}); {hint}")
        try:
            meta = json.loads((directory / INDEX_FILE).read_text())
        except (OSError, ValueError) as error:
            raise UsageError(f"{directory / INDEX_FILE} is not a search index ({error})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise UsageError(f"{directory / INDEX_FILE} is not a search index (no format {FORMAT!r}); {hint}")
        for name in (VECTORS_FILE, TABLE_FILE):
            if meta.get("count", 0) and not (directory / name).is_file():
                raise UsageError(f"search index {directory} is incomplete: {name} is missing")
        return cls(directory, meta)

    @property
    def model(self) -> dict:
        return self.meta["model"]

    @property
    def count(self) -> int:
        return int(self.meta.get("count", 0))

    @property
    def binaries(self) -> list[dict]:
        return self.meta.get("binaries", [])

    def vectors(self) -> np.ndarray:
        """The vectors, memory-mapped read-only (rows x width float32)."""
        if not self.count:
            return np.zeros((0, int(self.model.get("width", 1))), dtype=np.float32)
        vectors = np.load(self.path / VECTORS_FILE, mmap_mode="r")
        if vectors.shape[0] != self.count or vectors.dtype != np.float32:
            raise UsageError(f"search index {self.path} is inconsistent: {VECTORS_FILE} has {vectors.shape[0]} "
                             f"rows of {vectors.dtype}, {INDEX_FILE} counts {self.count}")
        return vectors

    def table(self, columns: Optional[list[str]] = None):
        import pyarrow.parquet as pq

        return pq.read_table(self.path / TABLE_FILE, columns=columns)

    def append(self, vectors: np.ndarray, table, binaries: list[dict], block: int = 1 << 16) -> None:
        """Write ``vectors`` (unit rows) and their ``table`` after the rows already there; ``index.json`` last."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from numpy.lib.format import open_memmap

        self.path.mkdir(parents=True, exist_ok=True)
        old = self.vectors()
        total = old.shape[0] + vectors.shape[0]
        temporary = self.path / f".{VECTORS_FILE}.tmp"
        out = open_memmap(temporary, mode="w+", dtype=np.float32, shape=(total, vectors.shape[1]))
        for start in range(0, old.shape[0], block):  # copied in blocks: memory stays bounded
            stop = min(start + block, old.shape[0])
            out[start:stop] = old[start:stop]
        out[old.shape[0]:] = vectors
        out.flush()
        del out, old
        table_temporary = self.path / f".{TABLE_FILE}.tmp"
        tables = ([self.table()] if self.count else []) + [table]
        pq.write_table(pa.concat_tables(tables), table_temporary)
        os.replace(temporary, self.path / VECTORS_FILE)
        os.replace(table_temporary, self.path / TABLE_FILE)
        (self.path / FAISS_FILE).unlink(missing_ok=True)  # stale: rebuilt by the next large search
        self.meta["binaries"] = self.binaries + binaries
        self.meta["count"] = total
        self.meta["dimensions"] = int(vectors.shape[1])
        meta_temporary = self.path / f".{INDEX_FILE}.tmp"
        meta_temporary.write_text(json.dumps(self.meta, indent=2))
        os.replace(meta_temporary, self.path / INDEX_FILE)

    @classmethod
    def create(cls, path: str | os.PathLike, model: dict) -> "SearchIndex":
        """A new, empty index (nothing on disk until :meth:`append`)."""
        return cls(Path(path).expanduser(), {"format": FORMAT, "version": VERSION, "model": model, "count": 0,
                                             "binaries": []})

    def binary(self, spec: str) -> Optional[dict]:
        """The indexed binary named by ``spec``: its sha256 when it is a file here, else its path or basename."""
        if os.path.isfile(spec):
            digest = sha256_of(spec)
            for entry in self.binaries:
                if entry["sha256"] == digest:
                    return entry
            return None
        real = os.path.realpath(spec)
        by_path = [entry for entry in self.binaries if entry["path"] in (spec, real)]
        by_name = [entry for entry in self.binaries if os.path.basename(entry["path"]) == spec]
        found = by_path or by_name
        if len(found) > 1:
            raise UsageError(f"{spec} names {len(found)} indexed binaries ({', '.join(e['path'] for e in found[:3])}); "
                             "give its full path")
        return found[0] if found else None
