"""Loaders whose workers outlive a stop signal sent to the whole job, and never outlive the training process.

A cluster delivers SIGTERM (and SIGUSR1 ahead of a time limit) to every process of a job, ``timeout``
to its whole process group, and a terminal's Ctrl-C (SIGINT) to its foreground process group. A
DataLoader worker ended by it makes the loader raise "DataLoader worker ... exited unexpectedly" in
the training process, which then dies before its handler saves a checkpoint at the end of the step.
:class:`PreemptibleLoader`'s workers let the first such signal pass; a second one (the scheduler
insisting, a second Ctrl-C) ends them. The signals stay blocked while the workers start, so that none
arrives before a worker has its handler.

Since a worker does not end on the first SIGTERM, the loader does not leave ending its workers to one:
when it shuts them down, a worker still there after torch's own shutdown is killed, and so is any worker
still there when the process exits (the exit handler of ``multiprocessing`` would otherwise wait for it
forever). A worker that raises, or dies (killed, e.g. by the out-of-memory killer), stops the loader where
it waits for data, as one :class:`LoaderFailed` line naming the worker, what it was reading and why, with
its workers already ended.
"""

from __future__ import annotations

import atexit
import multiprocessing.connection
import multiprocessing.util  # noqa: F401  (its exit handler is registered before ours: see the end of this module)
import os
import signal
import threading
import weakref
from typing import Optional

from torch.utils.data import DataLoader
from torch.utils.data import _utils as torch_loader_utils
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter
from torch._utils import ExceptionWrapper

from undertale.runtime.errors import UsageError

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
STOP_SIGNALS = PREEMPTION_SIGNALS + (signal.SIGINT,)  # the ones a worker lets pass once

# a killed worker: the likely cause and what to do instead
KILLED_HINT = "out of memory? lower data.num_workers or data.batch_size"


class LoaderFailed(UsageError):
    """A loader worker failed or died, in one line naming the worker, what it was reading and why.

    Exit code 2 when the data could not be read (a damaged or missing shard) or a worker was killed
    (e.g. by the out-of-memory killer); 1 when a worker raised anything else (a bug: its traceback is
    in :attr:`details` and the run's log).
    """

    def __init__(self, message: str, exit_code: int = 2, details: str = ""):
        super().__init__(message)
        self.exit_code = exit_code
        self.details = details


def _let_the_first_pass(signum: int, frame) -> None:
    # the next one ends the worker: Ctrl-C as Python does (torch's worker loop then exits quietly)
    signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)


def survive_first_preemption_signal(worker_id: int) -> None:
    """``worker_init_fn``: the first SIGTERM / SIGUSR1 / SIGINT is the training process's to handle."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _let_the_first_pass)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class PreemptibleLoader(DataLoader):
    """A DataLoader whose workers let the training process save on preemption (see the module docstring).

    Arguments:
        unreadable_hint: what to do when a worker cannot read its data (a damaged shard), appended to
            the :class:`LoaderFailed` line.
        *args, **kwargs: :class:`~torch.utils.data.DataLoader`'s.
    """

    def __init__(self, *args, unreadable_hint: str = "", **kwargs):
        kwargs.setdefault("worker_init_fn", survive_first_preemption_signal)
        super().__init__(*args, **kwargs)
        self.unreadable_hint = unreadable_hint

    def _get_iterator(self):
        if self.num_workers == 0:
            return super()._get_iterator()
        self.check_worker_number_rationality()
        if threading.current_thread() is not threading.main_thread():
            return _WorkersIterator(self)
        # the workers inherit this mask and unblock once their handler is set; the training process's
        # own signals wait here until the workers have started
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return _WorkersIterator(self)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


_LIVE: "weakref.WeakSet[_WorkersIterator]" = weakref.WeakSet()


class _WorkersIterator(_MultiProcessingDataLoaderIter):
    """torch's iterator over worker processes, which turns a worker's failure into :class:`LoaderFailed` and
    kills the workers that a shutdown leaves behind."""

    def __init__(self, loader: PreemptibleLoader):
        self._hint = getattr(loader, "unreadable_hint", "")
        self._owner = os.getpid()  # a worker forked later holds a copy of this iterator: it must not act on it
        super().__init__(loader)
        _LIVE.add(self)
        _deaths_found_where_the_loader_waits()

    def _process_data(self, data, worker_idx):
        if isinstance(data, ExceptionWrapper):
            failure = _raised(worker_idx, self._workers[worker_idx].pid, data, self._hint)
            self._shutdown_workers()
            raise failure
        return super()._process_data(data, worker_idx)

    def _next_data(self):
        try:
            return super()._next_data()
        except (RuntimeError, OSError, EOFError):  # "DataLoader worker ... exited unexpectedly", a connection reset
            failure = self.dead_worker(wait=1.0)  # a worker's connections close a moment before it is seen ended
            if failure is None:
                raise
            self.forget_workers()
            self._shutdown_workers()
            raise failure from None

    def dead_worker(self, wait: float = 0.0) -> Optional[LoaderFailed]:
        """The first worker that died (killed, or exited with a code other than 0), or None; ``wait``: seconds to
        wait for one of the workers to end first."""
        workers = getattr(self, "_workers", []) if os.getpid() == self._owner else []
        if wait and workers:
            ended = multiprocessing.connection.wait([worker.sentinel for worker in workers], timeout=wait)
            for worker in workers:  # its connections close a moment before its exit status can be read
                if worker.sentinel in ended:
                    worker.join(timeout=wait)
        for index, worker in enumerate(workers):
            code = worker.exitcode
            if code is None or code == 0:
                continue
            if code < 0:
                name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
                how = f"was killed by {name}" + (f" ({KILLED_HINT})" if -code == signal.SIGKILL else "")
            else:
                how = f"exited with code {code}"
            return LoaderFailed(f"loader worker {index} (pid {worker.pid}) {how}")
        return None

    def _shutdown_workers(self) -> None:
        try:
            super()._shutdown_workers()
        finally:
            self.kill_workers()

    def forget_workers(self) -> None:
        """Take the workers off torch's SIGCHLD watch: once one is found dead, and before they are killed."""
        if getattr(self, "_worker_pids_set", False) and os.getpid() == self._owner:
            torch_loader_utils.signal_handling._remove_worker_pids(id(self))
            self._worker_pids_set = False

    def kill_workers(self) -> None:
        """SIGKILL the workers still alive (they let a first SIGTERM pass); they hold nothing to save."""
        if os.getpid() != self._owner:
            return
        self.forget_workers()
        alive = [worker for worker in getattr(self, "_workers", ()) if worker.is_alive()]
        for worker in alive:
            worker.kill()
        for worker in alive:
            worker.join(timeout=5)


def _deaths_found_where_the_loader_waits() -> None:
    """Keep torch's SIGCHLD handler (set as the first loader starts its workers) from raising a worker's death
    wherever the training process happens to be, and again at every later child's end: a loader finds a dead
    worker itself, as it waits for data (:meth:`_WorkersIterator._next_data`, within torch's 5 s status check)."""
    handler = signal.getsignal(signal.SIGCHLD)
    if not callable(handler) or getattr(handler, "quiet", False):
        return

    def quiet(signum: int, frame) -> None:
        try:
            handler(signum, frame)
        except RuntimeError:  # "DataLoader worker (pid ...) is killed by signal"
            pass

    quiet.quiet = True
    signal.signal(signal.SIGCHLD, quiet)


def _raised(index: int, pid: int, wrapper: ExceptionWrapper, hint: str) -> LoaderFailed:
    """The one line for a worker's exception: its last line (type and message), the exit code by its type."""
    lines = [line for line in wrapper.exc_msg.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else wrapper.exc_type.__name__
    unreadable = issubclass(wrapper.exc_type, OSError)
    message = f"loader worker {index} (pid {pid}) failed: {last}"
    if unreadable and hint:
        message += f"; {hint}"
    return LoaderFailed(message, exit_code=2 if unreadable else 1, details=wrapper.exc_msg)


def loader_failure(error: BaseException) -> Optional[LoaderFailed]:
    """``error`` as a :class:`LoaderFailed` when a loader worker caused it, else None; the live loaders' workers
    are ended either way it is one.

    torch reports a worker's death from its SIGCHLD handler, as a RuntimeError raised wherever the training
    process was (a forward pass, a checkpoint write); the dead worker is found among the live loaders.
    """
    failure = error if isinstance(error, LoaderFailed) else None
    if failure is None and isinstance(error, RuntimeError) and "DataLoader worker" in str(error):
        failure = next((found for found in map(_WorkersIterator.dead_worker, list(_LIVE)) if found), None)
        failure = failure or LoaderFailed(f"a loader worker died: {str(error).strip().splitlines()[0]}")
    if failure is not None:
        end_workers()
    return failure


def end_workers() -> None:
    """Kill the workers of every live loader of this process (at exit, and after a loader failed)."""
    for iterator in list(_LIVE):
        iterator.kill_workers()


# Registered after multiprocessing's own exit handler (imported above), so it runs before it: that
# handler sends each live worker SIGTERM, which a worker lets pass once, and then waits for it to end.
atexit.register(end_workers)
