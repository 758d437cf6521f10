"""The one error the report raises for bad input: its message is the whole story, in one line."""


class ReportError(Exception):
    """Input the report cannot use (no runs, an incomplete run directory, mixed code versions, ...)."""
