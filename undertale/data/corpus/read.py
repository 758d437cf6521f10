"""One file's functions as corpus rows: found, deduplicated by content and disassembled; never raises for bad input.

Used by the process pool of :mod:`undertale.data.corpus.build` and by the Dask tasks of
:mod:`undertale.data.corpus.distributed` alike. Reading a file is bounded by
:class:`~undertale.settings.data.FileLimits` (see :mod:`undertale.data.corpus.limits`): a file over a
limit is a :class:`FileResult` with the reason as its ``error``, like any other skipped file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, Optional

import pyarrow as pa
from elftools.common.exceptions import ELFError

from undertale.data.corpus.disassembly import disassemble_many
from undertale.data.corpus.elf import UnsupportedFile, data_functions
from undertale.data.corpus.limits import RESOURCE_REASONS, FileGuard, LimitExceeded, over_memory
from undertale.settings.data import FileLimits

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
    over_limit: list[str] = field(default_factory=list)  # ids of functions over max_function_instructions
    error: Optional[str] = None

    def pieces(self, rows: int = 4096) -> Iterator["FileResult | list[dict]"]:
        """This result without its rows, then its rows ``rows`` at a time: a worker sends a large file's
        rows in pieces rather than as one pickle as large as all of them (see :meth:`assemble`)."""
        yield replace(self, rows=[])
        for start in range(0, len(self.rows), rows):
            yield self.rows[start : start + rows]

    @staticmethod
    def assemble(pieces: Iterable["FileResult | list[dict]"]) -> list["FileResult"]:
        """The results whose :meth:`pieces` follow one another in ``pieces``."""
        results: list[FileResult] = []
        for piece in pieces:
            if isinstance(piece, FileResult):
                results.append(piece)
            else:
                results[-1].rows.extend(piece)
        return results


def function_id(code: bytes) -> str:
    """Content hash of a function's bytes (the deduplication key)."""
    return hashlib.blake2b(code, digest_size=12).hexdigest()


def read_file(path: str, min_instructions: int = 1, seen: Optional[set[str]] = None,
              limits: Optional[FileLimits] = None) -> FileResult:
    """Decode every function of one file into corpus rows; never raises for bad input.

    Functions whose content hash is already in ``seen`` are counted as
    duplicates and not decoded again (``seen`` is updated). The ids of functions
    with fewer than ``min_instructions`` are listed in ``filtered``, so that the
    build counts their repeats as duplicates whichever worker decodes them.
    The file is read whole and decoded as :func:`read_bytes` (``source`` is its path),
    within ``limits`` (default: :class:`~undertale.settings.data.FileLimits`' defaults).
    """
    guard = FileGuard(limits)
    try:
        guard.check_size(os.path.getsize(path), "the file")
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        return FileResult(path, error=f"corrupt or unreadable ELF: {type(error).__name__}: {error}")
    except LimitExceeded as error:
        return FileResult(path, error=str(error))
    return read_bytes(data, path, min_instructions, seen, guard=guard)


def read_bytes(data: bytes, source_name: str, min_instructions: int = 1, seen: Optional[set[str]] = None,
               limits: Optional[FileLimits] = None, guard: Optional[FileGuard] = None) -> FileResult:
    """:func:`read_file` of a file's content already in memory (e.g. a member of a ``.deb``).

    ``source_name`` names the file in the rows' ``source`` column and in ``FileResult.path``. ``guard``
    (default: a new one for ``limits``) watches this file's time and memory.

    A file over a limit gives no rows; its ``error`` is the reason (``over time limit: ...``). One over
    the time or memory limit has no ``sha256`` either: what happens to it depends on the machine, so it
    is no input of the corpus. The ids of a skipped file are left out of ``seen`` again.
    """
    guard = guard or FileGuard(limits)
    result = FileResult(source_name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    added: list[str] = []  # ids this file put into seen
    try:
        for member, architecture, functions in data_functions(data, guard.section_bytes, guard.check):
            source = f"{source_name}({member})" if member else source_name
            kept = []
            for function in functions:
                identity = function_id(function.code)
                if seen is not None:
                    if identity in seen:
                        result.duplicates += 1
                        continue
                    seen.add(identity)
                    added.append(identity)
                kept.append((identity, function))
            guard.check()
            decoded = disassemble_many([(function.code, function.address) for _, function in kept], architecture,
                                       guard.function_instructions, guard.check)
            for (identity, function), disassembly in zip(kept, decoded):
                if disassembly.over_limit:
                    result.over_limit.append(identity)
                    continue
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
    except LimitExceeded as error:
        result.error = str(error)
    except MemoryError:  # a worker's hard memory limit (see undertale.data.corpus.supervise)
        result.error = over_memory(guard.limits, "an allocation failed at the hard limit of twice that")
    except (ELFError, ValueError, KeyError, IndexError, OSError, EOFError, AssertionError, OverflowError) as error:
        result.error = f"corrupt or unreadable ELF: {type(error).__name__}: {error}"
    except Exception as error:  # pyelftools raises many kinds on hostile input; keep going
        result.error = f"failed to read: {type(error).__name__}: {error}"
    if result.error is not None:
        if seen is not None:
            seen.difference_update(added)
        skipped = FileResult(source_name, sha256=result.sha256, size=result.size, error=result.error)
        if skipped.error.split(":")[0] in RESOURCE_REASONS:
            skipped.sha256 = None
        return skipped
    return result
