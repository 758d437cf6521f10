"""The name a command was called by, for its usage and error lines."""

from __future__ import annotations

import sys

INSTALLED = "undertale "  # undertale.cli names each subcommand so: "undertale data", "undertale report", ...


def program_name(module_form: str) -> str:
    """``undertale <command>`` when run through the installed command, else ``module_form``
    (e.g. ``python -m undertale.data``)."""
    return sys.argv[0] if sys.argv and sys.argv[0].startswith(INSTALLED) else module_form
