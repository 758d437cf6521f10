"""How a command stops short, and the exit code of each.

:class:`UsageError` is the one expected failure of every command (``train.py``, ``evaluate.py``,
``embed.py``, ``infer.py``, ``export.py``, ``index.py``, ``search.py``, ``python -m undertale.data``,
``python -m undertale.report``): a mistake in the command, an input it cannot use, or an output it cannot
write (:class:`OutputError`: a read-only directory, a full disk). Each command's entry catches it in one
place and prints it with :func:`report_usage_error`: one line ``error: <message>`` on stderr, exit code 2,
no traceback.

Kept free of heavy imports: the command line is checked with these before torch and Lightning load.
"""

from __future__ import annotations

import sys


class UsageError(ValueError):
    """A mistake in a command, or an input it cannot use, in one line saying what to do instead. Exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A config value that cannot run, in one line naming its key (a :class:`UsageError`)."""


class RunError(UsageError):
    """Settings that cannot run together, with what to do instead (a :class:`UsageError`)."""


class OutputError(UsageError):
    """An output a command cannot write, in one line naming it: a directory without write permission, a read-only
    filesystem, a full disk (a :class:`UsageError`; see :mod:`undertale.runtime.outputs`)."""


class Diverged(RuntimeError):
    """Training stopped on a non-finite loss or gradient. Exit code 1."""

    exit_code = 1


class WorkerLost(RuntimeError):
    """A worker process of a data build died or failed (named with its pid, its file and its exit code or signal):
    the build cannot finish, and writes no manifest. Exit code 1."""

    exit_code = 1


class Preempted(SystemExit):
    """Training stopped on a signal (SIGTERM, SIGUSR1, Ctrl-C), after saving a checkpoint when it could. Exit code
    128 + the signal.

    Not an error: a ``SystemExit`` whose ``code`` is the exit code, so that no entry reports it as one (its
    raiser prints the notice, :attr:`message`) and a sweep stops with it as the job would.
    """

    def __init__(self, signum: int, message: str):
        super().__init__(128 + int(signum))
        self.signum = signum
        self.exit_code = 128 + int(signum)
        self.message = message

    def __str__(self) -> str:
        return self.message


STOPS = (UsageError, Diverged, WorkerLost)


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when empty), at most ``limit`` characters."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def report_usage_error(error: UsageError | str) -> int:
    """Print ``error: <message>`` (its first line) on stderr; the exit code (2)."""
    print(f"error: {first_line(error, 2000)}", file=sys.stderr)
    return getattr(error, "exit_code", 2)
