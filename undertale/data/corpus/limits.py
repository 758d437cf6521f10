"""What reading one input may cost: checks that stop a hostile or runaway file and name the limit it passed.

:class:`~undertale.settings.data.FileLimits` says how much; :class:`FileGuard` watches one file being read
(processor time and memory, asked for between functions, a few hundred times a second at most) and
raises :class:`LimitExceeded`, whose message is the skip reason the manifest counts (``over time limit:
...``). The sizes that can be checked before any work (a section's unpacked size, a file's size,
instructions per function) are checked where they are read, so no single step can run away between two
checks. Process pool workers add hard limits of their own (:mod:`undertale.data.corpus.supervise`).
"""

from __future__ import annotations

import os
import time
from typing import Optional

from undertale.settings.data import MEBIBYTE, FileLimits

# reasons: the part of a skip reason before the first colon, as the manifest's skipped_reasons count them
OVER_TIME = "over time limit"
OVER_MEMORY = "over memory limit"
OVER_SECTION = "over section size limit"
OVERLAPPING = "overlapping functions"
# skips that depend on the machine (its speed, its memory) rather than on the file alone: such a file is
# not an input of the corpus (not in input_files nor in the fingerprint), so two builds that differ in
# them also differ in their fingerprint
RESOURCE_REASONS = (OVER_TIME, OVER_MEMORY)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MEMORY_EVERY = 0.02  # processor seconds between two memory readings


class LimitExceeded(Exception):
    """A file over one of its :class:`~undertale.settings.data.FileLimits`; the message is the skip reason."""

    @property
    def reason(self) -> str:
        return str(self).split(":")[0]


def resident_bytes() -> Optional[int]:
    """This process's resident memory (Linux ``/proc/self/statm``), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def over_time(limits: FileLimits) -> str:
    return f"{OVER_TIME}: more than {limits.max_file_seconds:g} processor seconds (max_file_seconds)"


def over_memory(limits: FileLimits, detail: str) -> str:
    return f"{OVER_MEMORY}: {detail} (max_file_memory_mb is {limits.max_file_memory_mb:,} MiB)"


class FileGuard:
    """The limits of one file being read: :meth:`check` between units of work raises :class:`LimitExceeded`.

    Time is this thread's processor time since the guard was made (a Dask worker runs tasks in threads);
    memory is the growth of the process's resident memory since then.
    """

    def __init__(self, limits: Optional[FileLimits] = None):
        self.limits = limits or FileLimits()
        self.started = time.thread_time()
        self.deadline = self.started + self.limits.max_file_seconds
        self.memory_at_start = resident_bytes()
        self.next_memory_check = self.started

    @property
    def section_bytes(self) -> int:
        return self.limits.section_bytes

    @property
    def function_instructions(self) -> int:
        return self.limits.max_function_instructions

    def check(self) -> None:
        """Raise :class:`LimitExceeded` when the file has taken too long or grown the process too much."""
        now = time.thread_time()
        if now > self.deadline:
            raise LimitExceeded(over_time(self.limits))
        if now >= self.next_memory_check and self.memory_at_start is not None:
            self.next_memory_check = now + _MEMORY_EVERY
            grown = (resident_bytes() or 0) - self.memory_at_start
            if grown > self.limits.memory_bytes:
                raise LimitExceeded(over_memory(self.limits, f"reading it grew the process by {grown / MEBIBYTE:,.0f} MiB"))

    def check_size(self, size: int, what: str) -> None:
        """Raise :class:`LimitExceeded` before reading ``size`` bytes that alone pass the memory limit."""
        if size > self.limits.memory_bytes:
            raise LimitExceeded(over_memory(self.limits, f"{what} is {size:,} bytes"))
