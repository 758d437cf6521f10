"""``python -m undertale.report <run or sweep dir>... [--output DIR] [--objective M] [--mode max|min] [--allow-mixed]``

Tables and figures from finished runs and sweeps, read offline; see ``docs/report.md``.
Exit codes: 0 written, 2 bad input (one line on stderr), 1 the output could not be written.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Optional

from undertale.runtime.errors import UsageError, report_usage_error
from undertale.runtime.program import program_name


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see python -m undertale.report --help)", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    command = _Parser(prog=program_name("python -m undertale.report"), description=(
        "Write results.md, results.csv and figures (PNG) from training runs and sweeps, read offline."))
    command.add_argument("paths", nargs="+", metavar="DIR",
                         help="run directories, sweep (multirun) directories, or folders holding them")
    command.add_argument("--output", metavar="DIR", help="where to write (default: the first DIR)")
    command.add_argument("--objective", metavar="METRIC",
                         help="the metric that ranks the jobs (default: val/accuracy, the best value logged)")
    command.add_argument("--mode", choices=("max", "min"),
                         help="whether the objective is better high or low (default: min for losses, else max)")
    command.add_argument("--allow-mixed", action="store_true",
                         help="compare runs of different code versions (git commit or dirty flag)")
    return command


def main(argv: Optional[list[str]] = None) -> int:
    arguments = parser().parse_args(argv)
    from undertale.report.build import make_report  # matplotlib and W&B load after the command line was checked

    try:
        report = make_report(arguments.paths, arguments.output, arguments.objective, arguments.mode,
                             arguments.allow_mixed)
    except UsageError as error:
        return report_usage_error(error)
    except OSError as error:
        print(f"error: cannot write the report: {error}", file=sys.stderr)
        return 1
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
