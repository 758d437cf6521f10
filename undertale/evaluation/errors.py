"""How an evaluation refuses its command: one line, exit code 2 (kept free of heavy imports)."""

from __future__ import annotations


class EvaluationError(ValueError):
    """A mistake in the evaluation's command or a run that cannot be evaluated, in one line. Exit code 2."""

    exit_code = 2
