"""Loaders whose workers outlive a preemption signal sent to the whole job.

A cluster delivers SIGTERM (and SIGUSR1 ahead of a time limit) to every process of a job, and
``timeout`` to its whole process group. A DataLoader worker killed by it makes the loader raise
"DataLoader worker ... exited unexpectedly" in the training process, which then dies before its
preemption handler saves a checkpoint at the end of the step. :class:`PreemptibleLoader`'s workers
let the first such signal pass, and a second one (the loader shutting them down, or the scheduler
insisting) ends them. The signals stay blocked while the workers start, so that none arrives before
a worker has its handler.
"""

from __future__ import annotations

import signal
import threading

from torch.utils.data import DataLoader

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def _let_the_first_pass(signum: int, frame) -> None:
    signal.signal(signum, signal.SIG_DFL)  # the next one ends the worker


def survive_first_preemption_signal(worker_id: int) -> None:
    """``worker_init_fn``: the first SIGTERM / SIGUSR1 is the training process's to handle."""
    for signum in PREEMPTION_SIGNALS:
        signal.signal(signum, _let_the_first_pass)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PREEMPTION_SIGNALS)


class PreemptibleLoader(DataLoader):
    """A DataLoader whose workers let the training process save on preemption (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("worker_init_fn", survive_first_preemption_signal)
        super().__init__(*args, **kwargs)

    def _get_iterator(self):
        if self.num_workers == 0 or threading.current_thread() is not threading.main_thread():
            return super()._get_iterator()
        # the workers inherit this mask and unblock once their handler is set; the training process's
        # own signals wait here until the workers have started
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, PREEMPTION_SIGNALS)
        try:
            return super()._get_iterator()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
