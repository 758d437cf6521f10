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
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Optional

from undertale.data.corpus.read import FileResult, read_file

LOCAL = "local"


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
        self.workers = self.threads()
        self._window = (0.0, 0)  # (when, tasks in flight allowed)

    def threads(self) -> int:
        """Worker threads the scheduler has now (workers may join later, e.g. from queued cluster jobs)."""
        return sum(self.client.nthreads().values())

    def window(self) -> int:
        """Tasks kept in flight: twice the worker threads, at least 8 (asked of the scheduler once a second)."""
        when, size = self._window
        if time.monotonic() - when > 1.0:
            self._window = (time.monotonic(), max(8, 2 * self.threads()))
        return self._window[1]

    def read(self, jobs: Iterable[tuple[str, int]]) -> Iterator[FileResult]:
        """``read_file(path, min_instructions)`` of each job, yielded in job order."""
        return self.map(read_file, jobs)

    def map(self, function: Callable[..., Any], jobs: Iterable[tuple]) -> Iterator[Any]:
        """``function(*job)`` of each job as a Dask task, results yielded in job order.

        At most twice the worker threads (at least 8) are in flight, so results never pile up;
        closing the iterator cancels the tasks still pending.
        """
        pending: deque = deque()
        jobs = iter(jobs)
        try:
            while True:
                while len(pending) < self.window():
                    job = next(jobs, None)
                    if job is None:
                        break
                    pending.append(self.client.submit(function, *job, pure=False))
                if not pending:
                    return
                future = pending.popleft()
                yield future.result()
                future.release()
        finally:
            if pending:
                self.client.cancel(list(pending))

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
