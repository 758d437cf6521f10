"""Runtime: the run directory's layout, the environment a run records, and the errors every command reports.

The lowest layer: it imports nothing else of undertale (see ``docs/design.md``).
"""
