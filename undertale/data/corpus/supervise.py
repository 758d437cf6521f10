"""A process pool whose every worker is watched: a worker that dies stops the build at once, naming it.

``multiprocessing.Pool`` loses the job of a worker that dies (the kernel's out-of-memory killer, ``kill
-9``) and waits for it forever, and tears itself down with SIGTERM, which a handler inherited from the
parent may ignore (submitit's logs ``Bypassing signal SIGTERM`` and carries on). :class:`SupervisedPool`
gives each worker one job at a time over its own pipe, so it always knows which file a worker holds:

- a worker that exits while it holds a job, or unasked while idle, raises :class:`WorkerLost` in the
  parent within a fraction of a second: one line naming the worker's pid, the file and its exit code or
  signal. The build stops; it writes no manifest.
- a worker that stays on one item (a file) longer than :attr:`FileLimits.hang_seconds
  <undertale.settings.data.FileLimits.hang_seconds>` of wall-clock time is killed, and the job's
  ``on_timeout`` says what that file becomes (a skipped file) or which job to run instead.
- workers reset the signal handlers they inherit (SIGTERM and SIGHUP to the default, SIGINT, SIGUSR1
  and SIGUSR2 ignored: the parent decides), die with the parent (Linux ``PR_SET_PDEATHSIG``), and are
  stopped with SIGKILL, which no handler can ignore.
- a worker's address space is capped at what it started with plus twice ``max_file_memory_mb``
  (``RLIMIT_AS``): one runaway allocation fails with ``MemoryError`` inside the worker (the file is
  skipped) instead of waking the out-of-memory killer. A worker that has grown by half the limit over
  its jobs is replaced after its job, so what one file leaves behind does not count against the next.

Results come back in job order, each one sent in pieces (``split`` in the worker, ``join`` in the parent)
so that no worker holds a pickle as large as a large file's rows.
"""

from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import platform
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Iterator, Optional

from undertale.data.corpus.limits import resident_bytes
from undertale.runtime.errors import WorkerLost
from undertale.settings.data import FileLimits

PENDING = object()  # what a job iterator yields when no job is ready yet (the pool asks again shortly)
_END = object()
_POLL_SECONDS = 0.25
_PR_SET_PDEATHSIG = 1
_DEFAULT = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_IGNORED = (signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


@dataclass(frozen=True)
class Retry:
    """What ``on_timeout`` returns to run another job in place of the one whose worker was killed."""

    job: Any


def signal_description(code: int) -> str:
    """``killed by signal 9 (SIGKILL)`` or ``exited with code 1``, from a ``Process.exitcode``."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        hint = "; the out-of-memory killer or kill -9" if -code == signal.SIGKILL else ""
        return f"was killed by signal {-code} ({name}{hint})"
    return f"exited with code {code}"


# --- in the worker ------------------------------------------------------------------------------------

_CONNECTION: Optional[Connection] = None


def working_on(item: str) -> None:
    """Tell the parent which item (e.g. a file inside a package) this worker reads now: its time limit
    starts again, and a failure names it. Does nothing outside a pool worker."""
    if _CONNECTION is not None:
        _CONNECTION.send(("item", None, item))


def _reset_signals() -> None:
    for number in _DEFAULT:
        signal.signal(number, signal.SIG_DFL)
    for number in _IGNORED:
        signal.signal(number, signal.SIG_IGN)


def _die_with_parent(parent: int) -> None:
    if platform.system() == "Linux":
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _address_space() -> Optional[int]:
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _cap_memory(extra: int) -> None:
    """Cap this process's address space at its present size plus ``extra`` bytes (where it can be read)."""
    try:
        import resource
    except ImportError:
        return
    size = _address_space()
    if size is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft == resource.RLIM_INFINITY or soft > cap:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        except (ValueError, OSError):
            pass


def _serve(connection: Connection, parent: int, function: Callable, initializer: Optional[Callable],
           split: Optional[Callable], memory: int) -> None:
    """A worker: reads ``(index, job)`` messages, answers ``piece`` messages then ``done`` (or ``failed``)."""
    global _CONNECTION
    _reset_signals()
    _die_with_parent(parent)
    _cap_memory(2 * memory)
    if initializer is not None:
        initializer()
    _CONNECTION = connection
    started = resident_bytes()
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, job = message
        try:
            result = function(job)
            for piece in (split(result) if split is not None else (result,)):
                connection.send(("piece", index, piece))
            del result
            now = resident_bytes()
            leaving = started is not None and now is not None and now - started > memory // 2
            connection.send(("done", index, leaving))
        except (EOFError, OSError):
            return
        except BaseException as error:  # a bug: the parent names it, with where it happened
            where = traceback.extract_tb(error.__traceback__)[-1]
            detail = f"{type(error).__name__}: {error} ({os.path.basename(where.filename)}:{where.lineno})"
            try:
                connection.send(("failed", index, detail))
            finally:
                os._exit(1)
        if leaving:  # grown by half the memory limit over its jobs: the parent starts a fresh worker
            return


# --- in the parent ------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, process: multiprocessing.process.BaseProcess, connection: Connection):
        self.process = process
        self.connection = connection
        self.index: Optional[int] = None  # the job it holds
        self.item = ""  # what it reads now (the job, or an item it named)
        self.since = 0.0  # when it started on that item (monotonic)
        self.pieces: list = []
        self.leaving = False  # it said, with its last result, that it leaves (grown too much: recycled)

    @property
    def pid(self) -> int:
        return self.process.pid


class SupervisedPool:
    """``function(job)`` of each job on worker processes, results in job order; see the module's docstring.

    Arguments:
        function: called in a worker with one job; a top-level function (it is pickled with ``spawn``).
        workers: worker processes.
        limits: the per-file limits (the wall-clock stop and the memory cap come from them).
        initializer: called once in each worker before its first job.
        describe: a job's name in messages (its file).
        split, join: a result as pieces in the worker, and the pieces back into the result in the parent
            (default: the result as one piece).
        on_timeout: ``(job, item, seconds)`` of a job whose worker was killed after ``limits.hang_seconds``
            on ``item``: its result, or :class:`Retry` to run another job in its place (default: stop the
            build with :class:`WorkerLost`).
        name: what a worker is called in messages.
        window: jobs handed out ahead of the first result not yet returned (default: 4 per worker + 4).
        hang_seconds: wall-clock seconds on one item before a worker is stopped (default:
            ``limits.hang_seconds``).
    """

    def __init__(self, function: Callable[[Any], Any], workers: int, limits: Optional[FileLimits] = None,
                 initializer: Optional[Callable[[], None]] = None, describe: Callable[[Any], str] = str,
                 split: Optional[Callable[[Any], Iterable]] = None, join: Optional[Callable[[list], Any]] = None,
                 on_timeout: Optional[Callable[[Any, str, float], Any]] = None, name: str = "corpus worker",
                 window: Optional[int] = None, hang_seconds: Optional[float] = None):
        self.function, self.initializer, self.describe = function, initializer, describe
        self.split, self.join, self.on_timeout, self.name = split, join, on_timeout, name
        self.limits = limits or FileLimits()
        self.hang_seconds = hang_seconds or self.limits.hang_seconds
        self.size = max(1, workers)
        self.window = window or 4 * self.size + 4
        self.context = multiprocessing.get_context("fork" if platform.system() == "Linux" else "spawn")
        self.workers: list[_Worker] = []
        self.replaced = collections.Counter()  # why workers were replaced: "recycled", "timed out"

    def __enter__(self) -> "SupervisedPool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _start(self) -> _Worker:
        parent_end, child_end = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=_serve, name=self.name, daemon=True,
            args=(child_end, os.getpid(), self.function, self.initializer, self.split, self.limits.memory_bytes),
        )
        process.start()
        child_end.close()
        worker = _Worker(process, parent_end)
        self.workers.append(worker)
        return worker

    def _stop(self, worker: _Worker) -> None:
        if worker.process.exitcode is None:
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except (ProcessLookupError, OSError):
                pass
        worker.process.join(timeout=5)
        worker.connection.close()
        if worker in self.workers:
            self.workers.remove(worker)

    def close(self) -> None:
        """Stop every worker (SIGKILL: nothing a worker inherited can ignore it) and reap it."""
        for worker in list(self.workers):
            self._stop(worker)

    def _lost(self, worker: _Worker, jobs: dict[int, Any], failure: Optional[str] = None) -> WorkerLost:
        worker.process.join(timeout=1)
        if failure is None:
            happened = signal_description(worker.process.exitcode)
        else:
            happened = f"failed ({failure})"
        if worker.index is None:
            where = "while idle"
        else:
            job = self.describe(jobs[worker.index])
            where = f"while reading {job}" + (f" ({worker.item})" if worker.item and worker.item != job else "")
        return WorkerLost(f"{self.name} pid {worker.pid} {happened} {where}; the build stopped "
                          "(no manifest written): rerun to build again")

    def imap(self, jobs: Iterable[Any]) -> Iterator[Any]:
        """``function(job)`` of each job, in job order. Closing the iterator stops the workers.

        ``jobs`` may yield :data:`PENDING` when no job is ready yet.

        Raises:
            WorkerLost: a worker died, or a job failed in it, or timed out without ``on_timeout``.
        """
        source = iter(jobs)
        held: dict[int, Any] = {}  # index -> job, until its result is returned
        retries: collections.deque = collections.deque()
        results: dict[int, Any] = {}
        assigned, returned, exhausted = 0, 0, False
        try:
            while True:
                while returned in results:
                    held.pop(returned, None)
                    yield results.pop(returned)
                    returned += 1
                busy = [worker for worker in self.workers if worker.index is not None]
                if exhausted and not busy and not retries and returned == assigned:
                    return
                # hand out jobs to idle workers (starting workers up to the pool's size)
                while True:
                    idle = next((worker for worker in self.workers if worker.index is None and not worker.leaving), None)
                    if idle is None and len(self.workers) < self.size and (retries or not exhausted):
                        idle = self._start()
                    if idle is None:
                        break
                    if retries:
                        index, job = retries.popleft()
                    elif not exhausted and assigned < returned + self.window:
                        job = next(source, _END)
                        if job is _END:
                            exhausted = True
                            break
                        if job is PENDING:
                            break
                        index, assigned = assigned, assigned + 1
                        held[index] = job
                    else:
                        break
                    idle.index, idle.item, idle.since, idle.pieces = index, self.describe(job), time.monotonic(), []
                    try:
                        idle.connection.send((index, job))
                    except OSError:  # it died just now: _wait sees its exit and names it with this job
                        pass
                self._wait(held, results, retries)
        finally:
            self.close()

    def _wait(self, held: dict[int, Any], results: dict[int, Any], retries: collections.deque) -> None:
        """Wait a moment for messages and exits; handle them, and the workers past their time."""
        by_connection = {worker.connection: worker for worker in self.workers}
        by_sentinel = {worker.process.sentinel: worker for worker in self.workers}
        ready = wait([*by_connection, *by_sentinel], timeout=_POLL_SECONDS) if self.workers else []
        for handle in ready:
            worker = by_connection.get(handle)
            if worker is not None and worker in self.workers:
                self._receive(worker, held, results)
        for handle in ready:
            worker = by_sentinel.get(handle)
            if worker is None or worker not in self.workers:
                continue
            while worker.connection.poll(0):  # what it sent before it exited
                if not self._receive(worker, held, results):
                    break
            if worker in self.workers:
                if not worker.leaving or worker.index is not None:
                    raise self._lost(worker, held)
                self._stop(worker)
                self.replaced["recycled"] += 1
        now = time.monotonic()
        for worker in [worker for worker in self.workers if worker.index is not None]:
            if now - worker.since <= self.hang_seconds:
                continue
            index, item = worker.index, worker.item
            self._stop(worker)
            self.replaced["timed out"] += 1
            if self.on_timeout is None:
                raise WorkerLost(f"{self.name} pid {worker.pid} was stopped after {now - worker.since:.0f} s of "
                                 f"wall-clock time on {item}; the build stopped (no manifest written)")
            outcome = self.on_timeout(held[index], item, now - worker.since)
            if isinstance(outcome, Retry):
                held[index] = outcome.job
                retries.append((index, outcome.job))
            else:
                results[index] = outcome

    def _receive(self, worker: _Worker, held: dict[int, Any], results: dict[int, Any]) -> bool:
        """Handle the messages waiting from ``worker``; False when its pipe closed (it exited)."""
        while True:
            try:
                kind, index, payload = worker.connection.recv()
            except (EOFError, OSError):
                return False
            if kind == "item":
                worker.item, worker.since = payload, time.monotonic()
            elif kind == "piece":
                worker.pieces.append(payload)
            elif kind == "done":
                pieces, worker.pieces = worker.pieces, []
                results[index] = self.join(pieces) if self.join is not None else pieces[0]
                worker.index, worker.item, worker.leaving = None, "", bool(payload)
            elif kind == "failed":
                raise self._lost(worker, held, payload)
            try:
                if not worker.connection.poll(0):
                    return True
            except (EOFError, OSError):
                return False
