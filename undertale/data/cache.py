"""The data cache's own care: one process at a time, entries checked against what their manifests record, a
corrupt entry rebuilt, temporary files of interrupted writes removed.

Each entry records the size and SHA256 of its files where it marks itself complete: a corpus in its
``manifest.json`` (``shard_files``), a tokenizer in ``tokenizers/<name>.manifest.json`` beside it, tokenized
and packed shards in their ``complete.json`` and ``packing.json`` (``files``). Before an entry is reused,
:func:`file_problem` compares each file with its record: a size that differs is found at once; the checksum
is read again only when the file's modification time is not the one seen at its last check (kept in
``.verified.json``), so an unchanged cache costs one ``stat`` per file. A corrupt entry is named in one
``warning:`` line and removed (a tokenized or packed entry: only its bad shards), and the step that builds it
builds it again.

Everything here runs under :func:`cache_lock`: no other writer is at work in the cache meanwhile, so a
``*.tmp`` file found there was left by a write that was stopped, and :func:`remove_temporaries` removes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pyarrow.parquet as pq

from undertale.data.archive import file_sha256
from undertale.runtime.outputs import check_cache_writable

LOCK = ".prepare.lock"
VERIFIED = ".verified.json"
# the cache's folders of entries built under the lock (debs/ keeps resumable .part downloads: never swept)
ENTRY_FOLDERS = ("corpus", "tokenizers", "tokenized", "packed")
TEMPORARY_SUFFIX = ".tmp"
# how often a process waiting for the lock says so again (seconds)
WAIT_REPORT_SECONDS = 60.0

_held = threading.local()  # lock files this thread holds, so that cache_lock nests


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# --- one process at a time ---------------------------------------------------------------------------


def lock_holder(path: Path) -> str:
    """``PID n`` (``on host`` when another machine's) of the process holding the lock file ``path``, as it wrote
    itself there; ``another process`` when it has not (yet)."""
    try:
        fields = path.read_text().split()
    except OSError:
        fields = []
    if not fields or not fields[0].isdigit():
        return "another process"
    host = fields[1] if len(fields) > 1 else None
    return f"PID {fields[0]}" + (f" on {host}" if host and host != socket.gethostname() else "")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


@contextmanager
def cache_lock(directory: str | os.PathLike, report_every: Optional[float] = None, poll: float = 0.2,
               say: bool = True) -> Iterator[None]:
    """Hold ``directory/.prepare.lock`` exclusively (waiting for it), so that processes started together
    (torchrun, SLURM) never build the same cache twice. Nested use in one thread does not wait on itself.

    The holder writes its PID (and host) into the lock file. A process that has to wait says so on stderr,
    ``waiting for the cache lock held by PID n (<lock file>)``, then again every ``report_every`` seconds
    (None: :data:`WAIT_REPORT_SECONDS`; ``say`` False: it waits silently, as the other ranks of a run whose first
    rank reports).

    Raises:
        OutputError: when ``directory`` cannot be written (a read-only cache).
    """
    directory = check_cache_writable(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = (directory / LOCK).resolve()
    held = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    with open(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+") as handle:
        _acquire(handle, path, (report_every or WAIT_REPORT_SECONDS) if say else None, poll)
        handle.truncate(0)
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        handle.flush()
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)
            handle.seek(0)
            handle.truncate(0)
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(handle: Any, path: Path, report_every: Optional[float], poll: float) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    if report_every is None:
        fcntl.flock(handle, fcntl.LOCK_EX)
        return
    started = time.monotonic()
    holder = lock_holder(path)
    for _ in range(5):  # a holder that has just taken the lock writes its PID a moment later
        if holder != "another process":
            break
        time.sleep(min(poll, 0.1))
        holder = lock_holder(path)
    print(f"waiting for the cache lock held by {holder} ({path}): it is preparing data in this cache; this run "
          "goes on when it is done", file=sys.stderr, flush=True)
    reported = started
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        if now - reported >= report_every:
            print(f"still waiting for the cache lock held by {lock_holder(path)} ({path}), "
                  f"{_minutes(now - started)} so far", file=sys.stderr, flush=True)
            reported = now
        time.sleep(poll)


# --- temporary files of interrupted writes ---------------------------------------------------------------


def remove_temporaries(cache: Path) -> list[tuple[Path, int]]:
    """Remove every ``*.tmp`` file or folder under the cache's entry folders; each one removed and its size.

    Call it holding :func:`cache_lock`: every write into those folders happens under the lock, so what is
    found there was left by a writer that was stopped (killed, out of memory, out of disk).
    """
    removed = []
    for folder in ENTRY_FOLDERS:
        root = cache / folder
        if not root.is_dir():
            continue
        for parent, folders, files in os.walk(root):
            for name in [name for name in folders if name.endswith(TEMPORARY_SUFFIX)]:
                path = Path(parent) / name
                size = sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
                shutil.rmtree(path, ignore_errors=True)
                folders.remove(name)
                removed.append((path, size))
            for name in files:
                if name.endswith(TEMPORARY_SUFFIX):
                    path = Path(parent) / name
                    try:
                        size = path.stat().st_size
                        path.unlink()
                    except OSError:
                        continue
                    removed.append((path, size))
    return removed


# --- what each entry records, and the check against it -----------------------------------------------------


def file_record(path: Path) -> dict:
    """``{"size": bytes, "sha256": hex}`` of one file."""
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def files_record(directory: Path, names: Optional[list[str]] = None) -> dict[str, dict]:
    """:func:`file_record` of each parquet shard under ``directory`` (or of ``names``), by relative path."""
    if names is None:
        names = sorted(str(path.relative_to(directory)) for path in directory.rglob("*.parquet"))
    return {name: file_record(directory / name) for name in names}


def read_json(path: Path) -> tuple[Optional[dict], Optional[str]]:
    """A JSON object file and None, or None and why it cannot be read (missing: both None)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as error:
        return None, f"{path.name} cannot be read ({error})"
    try:
        value = json.loads(text)
    except ValueError as error:
        return None, f"{path.name} is not whole JSON ({error})"
    if not isinstance(value, dict):
        return None, f"{path.name} does not hold a JSON object"
    return value, None


def write_json(path: Path, value: dict) -> None:
    """``path`` written whole (a temporary file renamed into place)."""
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    temporary.write_text(json.dumps(value, indent=2))
    os.replace(temporary, path)


class Verified:
    """``.verified.json`` of a cache: each file's size and modification time when its checksum last matched
    its record, so that an unchanged file is not read again. Used under :func:`cache_lock` only."""

    def __init__(self, cache: Path):
        self.path = cache / VERIFIED
        self.stamps, _ = read_json(self.path)
        self.stamps = self.stamps or {}
        self.changed = False

    def key(self, path: Path) -> str:
        return str(path.relative_to(self.path.parent))

    def matches(self, path: Path, stat: os.stat_result) -> bool:
        return self.stamps.get(self.key(path)) == [stat.st_size, stat.st_mtime_ns]

    def stamp(self, path: Path, stat: Optional[os.stat_result] = None) -> None:
        stat = stat or path.stat()
        self.stamps[self.key(path)] = [stat.st_size, stat.st_mtime_ns]
        self.changed = True

    def forget(self, prefix: Path) -> None:
        key = self.key(prefix)
        for name in [name for name in self.stamps if name == key or name.startswith(key + os.sep)]:
            del self.stamps[name]
            self.changed = True

    def save(self) -> None:
        if self.changed:
            write_json(self.path, self.stamps)
            self.changed = False


def file_problem(path: Path, record: Any, verified: Verified) -> Optional[str]:
    """Why ``path`` is not the file its ``record`` (``size``, ``sha256``) describes, or None when it is."""
    if not isinstance(record, dict) or "size" not in record:
        return None  # nothing recorded to compare with
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "is missing"
    if stat.st_size != record["size"]:
        return f"is {stat.st_size:,} bytes, its manifest records {record['size']:,}"
    if "sha256" not in record or verified.matches(path, stat):
        return None
    if file_sha256(path) != record["sha256"]:
        return "does not have the SHA256 its manifest records"
    verified.stamp(path, stat)
    return None


def files_problem(directory: Path, records: dict, verified: Verified) -> list[tuple[str, str]]:
    """``(relative path, problem)`` of each recorded file under ``directory`` that is not as recorded."""
    problems = []
    for name, record in sorted(records.items()):
        problem = file_problem(directory / name, record, verified)
        if problem is not None:
            problems.append((name, problem))
    return problems


def unreadable_shards(directory: Path) -> list[tuple[str, str]]:
    """Parquet shards under ``directory`` whose footer cannot be read (cut short), with why."""
    problems = []
    for path in sorted(directory.rglob("*.parquet")):
        try:
            pq.read_metadata(path)
        except Exception as error:  # pyarrow raises several kinds for a file that is not whole
            problems.append((str(path.relative_to(directory)), f"is not whole parquet ({str(error).splitlines()[0]})"))
    return problems


def _named(entry: Path, cache: Path, problems: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{name} {problem}" for name, problem in problems[:3])
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    return f"cache entry {entry.relative_to(cache)} in {cache} is corrupt ({shown}{more})"


# --- each kind of entry ------------------------------------------------------------------------------------


def repair_corpus(cache: Path, corpus: Path, verified: Verified, manifest_name: str = "manifest.json") -> None:
    """A corpus entry whose ``manifest.json`` cannot be read or whose shards are not the ones it records is
    named in one warning and removed (the corpus build starts it again)."""
    if not corpus.is_dir():
        return
    manifest, problem = read_json(corpus / manifest_name)
    problems = [(manifest_name, problem.split(" ", 1)[1])] if problem else []
    if manifest is not None:
        problems = files_problem(corpus, manifest.get("shard_files") or {}, verified)
        named = {name for name, _ in problems}
        for split, shards in (manifest.get("shards") or {}).items():
            problems += [(f"{split}/{shard}", "is missing") for shard in shards
                         if f"{split}/{shard}" not in named and not (corpus / split / shard).is_file()]
    if problems:
        warn(f"{_named(corpus, cache, problems)}; rebuilding it")
        shutil.rmtree(corpus)
        verified.forget(corpus)


def checked_tokenizer(cache: Path, path: Path, load: Callable[[Path], Any], verified: Verified) -> bool:
    """Whether the cached tokenizer ``path`` is whole; one that is not is named in one warning and removed.

    Its record is ``<name>.manifest.json`` beside it; a tokenizer cached before records were kept is read
    (``load``) and, when whole, recorded now.
    """
    record_path = tokenizer_record_path(path)
    if not path.is_file():
        record_path.unlink(missing_ok=True)
        return False
    record, problem = read_json(record_path)
    if record is not None:
        problem = file_problem(path, record, verified)
        problem = None if problem is None else f"it {problem}"
    elif problem is None:  # no record yet: read it
        try:
            load(path)
        except Exception as error:  # tokenizers raises its own kinds for a file cut short
            problem = f"it cannot be read: {str(error).splitlines()[0]}"
        else:
            record_tokenizer(path, verified)
            return True
    if problem is None:
        return True
    warn(f"cache entry {path.relative_to(cache)} in {cache} is corrupt ({problem}); rebuilding it")
    path.unlink(missing_ok=True)
    record_path.unlink(missing_ok=True)
    verified.forget(path)
    return False


def tokenizer_record_path(path: Path) -> Path:
    return path.with_name(path.name[: -len(".json")] + ".manifest.json")


def record_tokenizer(path: Path, verified: Verified) -> None:
    """Write the tokenizer's record (size, SHA256) beside it."""
    write_json(tokenizer_record_path(path), {"file": path.name} | file_record(path))
    verified.stamp(path)


def checked_shards(cache: Path, entry: Path, marker: str, verified: Verified) -> bool:
    """Whether a tokenized or packed entry is complete and whole: its ``marker`` (``complete.json``,
    ``packing.json``) readable and every shard it records as recorded.

    The bad shards of a complete entry (with the marker) are named in one warning and removed, so that the
    step builds only them again; an incomplete entry loses the shards that are cut short. An entry marked
    complete before records were kept is read through (every shard's parquet footer) and recorded now.
    """
    if not entry.is_dir():
        return False
    complete, problem = read_json(entry / marker)
    if complete is None:
        problems = ([(marker, problem.split(" ", 1)[1])] if problem else []) + unreadable_shards(entry)
    elif isinstance(complete.get("files"), dict):
        problems = files_problem(entry, complete["files"], verified)
    else:
        problems = unreadable_shards(entry)
        if not problems:
            record_entry(entry, marker, complete, verified)
            return True
    if not problems:
        return complete is not None
    warn(f"{_named(entry, cache, problems)}; rebuilding it")
    for name, _ in problems:
        (entry / name).unlink(missing_ok=True)
        verified.forget(entry / name)
    (entry / marker).unlink(missing_ok=True)
    return False


def record_entry(entry: Path, marker: str, contents: dict, verified: Verified) -> None:
    """Write ``marker`` with ``contents`` and the record (size, SHA256) of every shard of the entry."""
    files = files_record(entry)
    write_json(entry / marker, contents | {"files": files})
    for name in files:
        verified.stamp(entry / name)
