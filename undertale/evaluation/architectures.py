"""Masked-LM evaluation per instruction set: the same table for the x86-64 and the AArch64 functions of a split.

A corpus of several instruction sets (a Debian list with arm64 packages) is evaluated as a whole, then once
per ``architecture`` (the corpus column read from each ELF header): the split's rows of that architecture
are copied into shards of their own and evaluated as the whole was (same masking seed, same baselines).
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow.compute as pc
import pyarrow.parquet as pq

from undertale.settings.pairs import architecture_name


def architectures_of(files: Sequence[Path]) -> list[str]:
    """The instruction sets of the rows of ``files`` (sorted; empty for shards without the column)."""
    names: set[str] = set()
    for path in files:
        handle = pq.ParquetFile(path)
        if "architecture" not in handle.schema_arrow.names:
            return []
        names |= set(pc.unique(handle.read(columns=["architecture"])["architecture"]).to_pylist())
    return sorted(names)


@contextmanager
def files_by_architecture(files: Sequence[Path]) -> Iterator[dict[str, list[Path]]]:
    """Per instruction set (by its users' name: ``x86-64``, ``aarch64``, ``i386``), shards holding only its rows.

    Yields nothing to split (an empty dict) when the files hold one architecture; the shards are removed on exit.
    """
    names = architectures_of(files)
    if len(names) < 2:
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix="undertale-architectures-") as temporary:
        split: dict[str, list[Path]] = {}
        for name in names:
            (Path(temporary) / name).mkdir()
        for index, path in enumerate(files):  # each shard read once, cut by architecture
            table = pq.read_table(path)
            for name in names:
                rows = table.filter(pc.equal(table["architecture"], name))
                if rows.num_rows:
                    target = Path(temporary) / name / f"shard-{index:05d}.parquet"
                    pq.write_table(rows, target)
                    split.setdefault(architecture_name(name), []).append(target)
        yield dict(sorted(split.items()))


def architecture_table(result: dict) -> str:
    """Accuracy overall and per class, one column per instruction set (``result["architectures"]``)."""
    by_architecture = result["architectures"]
    names = list(by_architecture)
    first = by_architecture[names[0]]
    rows = [("accuracy", *names), ("overall", *(_accuracy(by_architecture[name]["overall"]) for name in names))]
    for key, entry in first["classes"].items():
        rows.append((entry["name"], *(_accuracy(by_architecture[name]["classes"][key]) for name in names)))
    rows.append(("targets", *(f"{by_architecture[name]['overall']['count']:,}" for name in names)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in
                                                             zip(row[1:], widths[1:])]) for row in rows)


def _accuracy(entry: dict) -> str:
    return "-" if entry["accuracy"] is None else f"{entry['accuracy']:.4f}"
