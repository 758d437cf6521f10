"""One file's functions as corpus rows: found, deduplicated by content and disassembled; never raises for bad input.

Used by the process pool of :mod:`undertale.data.corpus.build` and by the Dask tasks of
:mod:`undertale.data.corpus.distributed` alike.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa
from elftools.common.exceptions import ELFError

from undertale.data.corpus.disassembly import disassemble_many
from undertale.data.corpus.elf import UnsupportedFile, data_functions

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("name", pa.string()),
        ("architecture", pa.string()),
        ("address", pa.uint64()),
        ("size", pa.int64()),
        ("instructions", pa.int64()),
        ("skipped_bytes", pa.int64()),
        ("disassembly", pa.string()),
    ]
)


@dataclass
class FileResult:
    """What one worker found in one file."""

    path: str
    rows: list[dict] = field(default_factory=list)
    sha256: Optional[str] = None  # of the file's content (None when it could not be read)
    size: int = 0
    instructions: int = 0
    skipped_bytes: int = 0
    duplicates: int = 0
    filtered: list[str] = field(default_factory=list)  # ids decoded to fewer than min_instructions
    error: Optional[str] = None


def function_id(code: bytes) -> str:
    """Content hash of a function's bytes (the deduplication key)."""
    return hashlib.blake2b(code, digest_size=12).hexdigest()


def read_file(path: str, min_instructions: int = 1, seen: Optional[set[str]] = None) -> FileResult:
    """Decode every function of one file into corpus rows; never raises for bad input.

    Functions whose content hash is already in ``seen`` are counted as
    duplicates and not decoded again (``seen`` is updated). The ids of functions
    with fewer than ``min_instructions`` are listed in ``filtered``, so that the
    build counts their repeats as duplicates whichever worker decodes them.
    The file is read whole and decoded as :func:`read_bytes` (``source`` is its path).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        return FileResult(path, error=f"corrupt or unreadable ELF: {type(error).__name__}: {error}")
    return read_bytes(data, path, min_instructions, seen)


def read_bytes(data: bytes, source_name: str, min_instructions: int = 1, seen: Optional[set[str]] = None) -> FileResult:
    """:func:`read_file` of a file's content already in memory (e.g. a member of a ``.deb``).

    ``source_name`` names the file in the rows' ``source`` column and in ``FileResult.path``.
    """
    result = FileResult(source_name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    try:
        for member, architecture, functions in data_functions(data):
            source = f"{source_name}({member})" if member else source_name
            kept = []
            for function in functions:
                identity = function_id(function.code)
                if seen is not None:
                    if identity in seen:
                        result.duplicates += 1
                        continue
                    seen.add(identity)
                kept.append((identity, function))
            decoded = disassemble_many([(function.code, function.address) for _, function in kept], architecture)
            for (identity, function), disassembly in zip(kept, decoded):
                result.instructions += disassembly.instructions
                if disassembly.instructions < min_instructions:
                    result.filtered.append(identity)
                    continue
                result.skipped_bytes += disassembly.skipped_bytes
                result.rows.append(
                    {
                        "id": identity,
                        "source": source,
                        "name": function.name,
                        "architecture": architecture,
                        "address": function.address,
                        "size": len(function.code),
                        "instructions": disassembly.instructions,
                        "skipped_bytes": disassembly.skipped_bytes,
                        "disassembly": disassembly.text,
                    }
                )
    except UnsupportedFile as reason:
        result.error = str(reason)
    except (ELFError, ValueError, KeyError, IndexError, OSError, EOFError, AssertionError) as error:
        result.error = f"corrupt or unreadable ELF: {type(error).__name__}: {error}"
    except Exception as error:  # pyelftools raises many kinds on hostile input; keep going
        result.error = f"failed to read: {type(error).__name__}: {error}"
    return result
