"""Where a command writes: checked before it works, and a write that fails named in one line.

Every command that writes checks its outputs with :func:`check_writable` before any work (a run
directory, an output file or directory, the data cache): a directory without write permission, a
read-only filesystem, a path below a file or a disk with no space left is one
:class:`~undertale.runtime.errors.OutputError`, not a traceback once the work is done. A write that
fails later (the disk fills during the work) is found in the exception's chain by :func:`write_failure`
and named with its path: ``disk full writing <path> (<n> free on <filesystem>)``.

Kept free of heavy imports: the checks run before torch and Lightning load.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from undertale.runtime.errors import OutputError, UsageError, first_line, report_usage_error

# a write refused for want of room: the disk or a quota is full, or the file would pass a size limit
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# a write refused by permissions or the filesystem
REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)
PROBE_PREFIX = ".undertale-write-check-"
A_WRITABLE_CACHE = "set paths.cache_dir=<a writable directory> (or UNDERTALE_CACHE)"


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:,.1f} TiB"  # pragma: no cover


def free_bytes(path: str | os.PathLike) -> Optional[int]:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path`` (its nearest existing
    ancestor), or None when it cannot be told."""
    try:
        stats = os.statvfs(_existing_ancestor(Path(path)))
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the filesystem holding ``path`` (its nearest existing ancestor)."""
    path = _existing_ancestor(Path(path)).resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def no_room_message(number: int, path: str | os.PathLike, what: str = "") -> str:
    """One line for a write of ``path`` refused for want of room (``number``: one of :data:`NO_ROOM`):
    ``disk full writing <what> <path> (<free> free on <mount point>); free space there or write elsewhere``,
    or the quota or file size limit it met."""
    writing = f"writing {what + ' ' if what else ''}{path}"
    if number == errno.EFBIG:
        return (f"file too large {writing}: it passes the file size limit (ulimit -f) or the filesystem's largest "
                "file; raise the limit or write elsewhere")
    if number == errno.EDQUOT:
        return f"disk quota exceeded {writing} (on {mount_point(path)}); free space in your quota or write elsewhere"
    free = free_bytes(path)
    left = f"{_size(free)} free on {mount_point(path)}" if free is not None else "no space left"
    return f"disk full {writing} ({left}); free space there or write elsewhere"


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path.expanduser()))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, what: str = "output", directory: bool = False,
                   hint: str = "") -> Path:
    """Check that a command can write ``path`` before it does any work; ``path`` itself is not created.

    A file is written (as every command writes: a temporary file beside it, renamed) when its nearest existing
    folder takes a new file; a directory, when it or its nearest existing ancestor does. The folder is tried by
    creating and removing a file in it, so a read-only mount, an ACL or a root-squashed share is found as well
    as a missing permission. A filesystem with no space left at all is refused too.

    Arguments:
        path: the file or directory the command will write.
        what: what it is, for the message (``output``, ``run directory``, ``data cache``, ...).
        directory: ``path`` is a directory (else a file).
        hint: what to do instead, appended to the message (default: choose another ``path``).

    Returns:
        ``path``, expanded.

    Raises:
        OutputError: one line naming ``path`` and why it cannot be written.
    """
    path = Path(path).expanduser()
    instead = f"; {hint}" if hint else f"; choose another {what}"
    if path.exists():
        if directory and not path.is_dir():
            raise OutputError(f"{what} {path} is a file, not a directory{instead}")
        if not directory and path.is_dir():
            raise OutputError(f"{what} {path} is a directory; give a file name{instead}")
        if not directory and not os.access(path, os.W_OK):
            raise OutputError(f"{what} {path} is not writable (permission denied){instead}")
    folder = path if directory and path.is_dir() else _existing_ancestor(path.parent)
    if not folder.is_dir():
        raise OutputError(f"{what} {path} cannot be created: {folder} is a file, not a directory{instead}")
    try:
        handle, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
    except OSError as error:
        raise OutputError(f"{what} {path} is not writable: {_reason(error, folder)}{instead}") from None
    os.close(handle)
    os.unlink(probe)
    if free_bytes(folder) == 0:
        raise OutputError(f"{what} {path} is on a full disk (0 bytes free on {mount_point(folder)}); "
                          f"free space there{instead.replace('; ', ' or ', 1)}")
    return path


def check_cache_writable(directory: str | os.PathLike) -> Path:
    """The data cache can be written (its lock, new entries), before any work: :func:`check_writable` naming
    where else a cache can be kept."""
    return check_writable(directory, "data cache", directory=True, hint=A_WRITABLE_CACHE)


def _reason(error: OSError, folder: Path) -> str:
    if error.errno == errno.EROFS:
        return f"{folder} is on a read-only filesystem"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"{folder} does not allow writing (permission denied)"
    if error.errno in NO_ROOM:
        return f"{folder} is on a full disk"
    return f"{folder} does not take new files ({error.strerror or error})"


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it was raised from or during (``__cause__``, else ``__context__``), outermost first."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def write_failure(error: BaseException, output: Optional[str | os.PathLike] = None) -> Optional[OutputError]:
    """The one-line :class:`OutputError` for a write that failed somewhere in ``error``'s chain, or None.

    The first :class:`OutputError` of the chain (its writer named the file), else an ``OSError`` of a full disk
    (:data:`NO_ROOM`) or of a refused write (:data:`REFUSED`), named by its file, else by ``output`` (what the
    command was writing), else by the message of the error that was raised from it.
    """
    chain = list(causes(error))
    named = next((item for item in chain if isinstance(item, OutputError)), None)
    if named is not None:
        return named
    for item in chain:
        if not isinstance(item, OSError) or item.errno not in NO_ROOM + REFUSED:
            continue
        path = item.filename or output
        if item.errno in NO_ROOM:
            if path:
                return OutputError(no_room_message(item.errno, path))
            return OutputError(f"disk full: {first_line(error)}; free space or write elsewhere")
        if path and item.errno == errno.EROFS:
            return OutputError(f"cannot write {path}: read-only filesystem; choose a writable place")
        if path:
            return OutputError(f"permission denied: {path}")
    return None


def expected_failure(error: BaseException, output: Optional[str | os.PathLike] = None) -> Optional[UsageError]:
    """What a command reports for ``error`` in one line, or None for anything else (a bug keeps its traceback).

    A :class:`UsageError` is itself, unless it was raised from a full disk, which is named so; any other error is
    a write that failed somewhere in its chain (:func:`write_failure`; ``output``: what the command writes, named
    when the failed write names no file) or None.
    """
    if isinstance(error, UsageError) and not isinstance(error, OutputError):
        full = any(isinstance(item, OSError) and item.errno in NO_ROOM for item in causes(error))
        return write_failure(error, output) if full else error
    return write_failure(error, output)


def run_command(function: Callable[..., Any], *arguments: Any, output: Optional[str | os.PathLike] = None) -> int:
    """A command's work, its expected failures (:func:`expected_failure`) as one ``error:`` line and exit code 2;
    the exit code ``function`` returns (None: 0).

    Arguments:
        output: the file or directory the command writes, named by a full disk's error that names no file.
    """
    try:
        code = function(*arguments)
    except Exception as error:
        stop = expected_failure(error, output)
        if stop is None:
            raise
        return report_usage_error(stop)
    return 0 if code is None else code


# --- temporary files named by their writer ----------------------------------------------------------

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:@(?P<host>[^/]*))?\.tmp$")


def temporary_path(path: str | os.PathLike) -> Path:
    """Where a writer puts ``path`` before renaming it into place: ``.<name>.<pid>@<host>.tmp`` beside it, so
    that :func:`remove_stale_temporaries` can tell when its writer is gone."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}@{socket.gethostname()}.tmp")


def writer_is_gone(pid: int, host: Optional[str]) -> bool:
    """True when the process ``pid`` of this machine has ended (a writer on another machine is never judged)."""
    if host is not None and host != socket.gethostname():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_stale_temporaries(directory: str | os.PathLike) -> list[tuple[Path, int]]:
    """Remove the temporary files of :func:`temporary_path` in ``directory`` whose writer is gone (killed or
    stopped halfway through a write); each removed file and its size."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        if writer_is_gone(int(match["pid"]), match["host"]):
            try:
                size = entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append((Path(entry.path), size))
    return removed
