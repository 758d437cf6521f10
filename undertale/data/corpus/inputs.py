"""Which files a corpus reads: files, directories and globs, or this machine's own binaries."""

from __future__ import annotations

import glob
import os
from typing import Sequence

SYSTEM_DIRECTORIES = (
    "/usr/bin",
    "/usr/sbin",
    "/usr/libexec",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/i386-linux-gnu",
    "/bin",
    "/sbin",
)


def expand_inputs(paths: Sequence[str]) -> list[str]:
    """Files named by ``paths`` (files, directories searched recursively, globs), resolved and deduplicated.

    Raises:
        FileNotFoundError: when a path or glob matches nothing.
    """
    found: dict[str, None] = {}
    for path in paths:
        matches = glob.glob(path) if glob.has_magic(path) else [path]
        if not matches or not all(os.path.exists(match) for match in matches):
            raise FileNotFoundError(f"input path {path!r} does not exist")
        for match in matches:
            if os.path.isdir(match):
                for root, _, names in os.walk(match):
                    for name in sorted(names):
                        _add_file(found, os.path.join(root, name))
            else:
                _add_file(found, match)
    return sorted(found)


def _add_file(found: dict[str, None], path: str) -> None:
    real = os.path.realpath(path)
    if os.path.isfile(real) and os.path.getsize(real) > 0:
        found.setdefault(real, None)


def system_inputs() -> list[str]:
    """The machine's own binaries: the system directories that exist here."""
    return expand_inputs([path for path in SYSTEM_DIRECTORIES if os.path.isdir(path)])
