"""How a training job can stop short, and the exit code of each (see ``train.py``).

Kept free of heavy imports: the command line is checked with these before
torch and Lightning load.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot run, in one line naming its key. Exit code 2."""

    exit_code = 2


class ResumeError(ValueError):
    """A resume that cannot continue the run it names, with what to do instead. Exit code 2."""

    exit_code = 2


class RunError(ValueError):
    """Settings that cannot run together, with what to do instead. Exit code 2."""

    exit_code = 2


class Diverged(RuntimeError):
    """Training stopped on a non-finite loss or gradient. Exit code 1."""

    exit_code = 1


class Preempted(RuntimeError):
    """Training stopped on a preemption signal after saving a checkpoint. Exit code 128 + the signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


STOPS = (ConfigError, ResumeError, RunError, Diverged, Preempted)
