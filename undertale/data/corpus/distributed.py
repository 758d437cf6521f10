"""Corpus builds on Dask: each file's disassembly (:func:`~undertale.data.corpus.read.read_file`) as a task.

    python -m undertale.data corpus OUT PATHS --scheduler local --workers 8    # a LocalCluster of 8 processes
    python -m undertale.data corpus OUT PATHS --scheduler tcp://host:8786      # a running scheduler
    python -m undertale.data corpus OUT PATHS --scheduler ~/scheduler.json     # a scheduler file

Results are read back in file order, so shards, deduplication, split and
manifest are those of the process-pool build. Dask workers keep no ``seen``
set (tasks may run in any order), so they decode every function, and the build
drops the repeats as it reads the results. Workers need ``undertale``
installed and read the input paths themselves: on a cluster, a shared filesystem.
See ``docs/cluster.md`` for a ``dask-jobqueue`` ``SLURMCluster``.

Each file is read within the per-file limits (:class:`~undertale.settings.data.FileLimits`, checked inside
the task). The build never waits forever: a worker that leaves is named on stderr (Dask runs its tasks
again elsewhere); a task whose workers keep dying (Dask's ``KilledWorker``) stops the build with one line
naming the file and the last worker; no worker at all for :data:`NO_WORKER_SECONDS` stops it too; and a
file with no result long after its time limit (a stuck task) is cancelled and skipped as over time.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Optional

from undertale.data.corpus.limits import OVER_TIME
from undertale.data.corpus.read import FileResult, read_file
from undertale.runtime.errors import WorkerLost
from undertale.settings.data import FileLimits

LOCAL = "local"
NO_WORKER_SECONDS = 600.0  # how long a build waits with no Dask worker at all (cluster jobs may still be queued)
_POLL_SECONDS = 1.0


class SchedulerError(ValueError):
    """The Dask scheduler cannot be used: Dask missing, or the scheduler unreachable."""


def _dask() -> Any:
    try:
        import distributed
    except ImportError:
        raise SchedulerError("a Dask scheduler needs dask.distributed: pip install -e '.[cluster]'") from None
    return distributed


class DaskReader:
    """A Dask client (and, for ``local``, its ``LocalCluster``) that decodes files as tasks.

    Arguments:
        scheduler: ``local``, a scheduler address (``tcp://host:8786``) or a scheduler file (``*.json``).
        workers: with ``local``, the worker processes (one thread each); ignored otherwise.

    Raises:
        SchedulerError: Dask is not installed, or the scheduler cannot be reached.
    """

    def __init__(self, scheduler: str, workers: Optional[int] = None):
        distributed = _dask()
        self.cluster = None
        try:
            if scheduler == LOCAL:
                self.cluster = distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                )
                self.client = distributed.Client(self.cluster)
            elif scheduler.endswith(".json"):
                self.client = distributed.Client(scheduler_file=os.path.expanduser(scheduler))
            else:  # waits up to distributed.comm.timeouts.connect (30 s) for the scheduler
                self.client = distributed.Client(scheduler)
        except (OSError, TimeoutError, ValueError, RuntimeError) as error:
            self.close()
            hint = ""
            if scheduler == LOCAL and isinstance(error, RuntimeError):  # its worker processes failed to start
                hint = " (a script that starts a local cluster needs `if __name__ == '__main__':`)"
            raise SchedulerError(f"cannot use the Dask scheduler {scheduler!r}: {error}{hint}") from None
        self.scheduler = scheduler
        self.workers = self.threads()
        self._window = (0.0, 0)  # (when, tasks in flight allowed)
        self._known = set(self.client.nthreads())  # worker addresses seen last
        self._empty_since: Optional[float] = None

    def threads(self) -> int:
        """Worker threads the scheduler has now (workers may join later, e.g. from queued cluster jobs)."""
        return sum(self.client.nthreads().values())

    def window(self) -> int:
        """Tasks kept in flight: twice the worker threads, at least 8 (asked of the scheduler once a second)."""
        when, size = self._window
        if time.monotonic() - when > 1.0:
            self._window = (time.monotonic(), max(8, 2 * self.threads()))
        return self._window[1]

    def read(self, jobs: Iterable[tuple[str, int]], limits: Optional[FileLimits] = None) -> Iterator[FileResult]:
        """``read_file(path, min_instructions)`` of each job within ``limits``, yielded in job order.

        A file with no result ``2 x limits.hang_seconds`` after it became the next one due is cancelled and
        skipped as over the time limit.
        """
        limits = limits or FileLimits()

        def stuck(job: tuple[str, int], seconds: float) -> FileResult:
            return FileResult(job[0], error=f"{OVER_TIME}: no result after {seconds:.0f} s of wall-clock time "
                                            "(2 x (3 x max_file_seconds + 30 s)); its Dask task was cancelled")

        return self.map(functools.partial(read_file, limits=limits), jobs, describe=lambda job: job[0],
                        deadline=2 * limits.hang_seconds, on_timeout=stuck)

    def map(self, function: Callable[..., Any], jobs: Iterable[tuple], describe: Callable[[tuple], str] = str,
            deadline: Optional[float] = None, on_timeout: Optional[Callable[[tuple, float], Any]] = None
            ) -> Iterator[Any]:
        """``function(*job)`` of each job as a Dask task, results yielded in job order.

        At most twice the worker threads (at least 8) are in flight, so results never pile up;
        closing the iterator cancels the tasks still pending. With ``deadline`` and ``on_timeout``, a job
        with no result ``deadline`` seconds after it became the next one due is cancelled and
        ``on_timeout(job, seconds)`` is its result.

        Raises:
            WorkerLost: a task's workers kept dying (``KilledWorker``), or no worker for
                :data:`NO_WORKER_SECONDS`; one line naming the job (``describe``) and the worker.
        """
        pending: deque = deque()
        jobs = iter(jobs)
        try:
            while True:
                while len(pending) < self.window():
                    job = next(jobs, None)
                    if job is None:
                        break
                    pending.append((self.client.submit(function, *job, pure=False), job))
                if not pending:
                    return
                future, job = pending.popleft()
                yield self._result(future, job, describe, deadline, on_timeout)
                future.release()
        finally:
            if pending:
                self.client.cancel([future for future, _ in pending])

    def _result(self, future: Any, job: tuple, describe: Callable[[tuple], str], deadline: Optional[float],
                on_timeout: Optional[Callable[[tuple, float], Any]]) -> Any:
        """The result of ``future``, watching the workers while it is not there."""
        killed = _dask().KilledWorker
        began = time.monotonic()
        while True:
            try:
                return future.result(timeout=_POLL_SECONDS)
            except TimeoutError:
                pass
            except killed as error:
                last = getattr(error, "last_worker", None)
                address = getattr(last, "address", last)
                allowed = getattr(error, "allowed_failures", None)
                raise WorkerLost(f"Dask workers died {f'more than {allowed} times ' if allowed is not None else ''}"
                                 f"running the task of {describe(job)} (the last: {address}); the build stopped "
                                 "(no manifest written)") from None
            waited = time.monotonic() - began
            self._watch(describe(job))
            if deadline is not None and on_timeout is not None and waited > deadline:
                future.cancel()
                return on_timeout(job, waited)

    def _watch(self, item: str) -> None:
        """Name each worker that left; stop after :data:`NO_WORKER_SECONDS` without any."""
        try:
            workers = set(self.client.nthreads())
        except (OSError, TimeoutError):
            workers = set()
        for address in sorted(self._known - workers):
            print(f"warning: Dask worker {address} left while waiting for {item}; Dask runs its tasks again "
                  "on another worker", file=sys.stderr, flush=True)
        self._known = workers
        now = time.monotonic()
        if workers:
            self._empty_since = None
            return
        self._empty_since = self._empty_since or now
        if now - self._empty_since > NO_WORKER_SECONDS:
            raise WorkerLost(f"no Dask worker for {NO_WORKER_SECONDS:.0f} s (scheduler {self.scheduler}) while "
                             f"waiting for {item}; the build stopped (no manifest written)")

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
