"""``search.py``: ``query=`` (top-k matches) or ``diff=`` (one-to-one matching of two binaries) on an index."""

from __future__ import annotations

from pathlib import Path

from undertale.runtime.errors import UsageError, first_line
from undertale.runtime.outputs import check_writable, run_command
from undertale.search.diff import diff, diff_table
from undertale.search.query import query, query_table, write_json
from undertale.search.store import SearchIndex


def search_command(cfg) -> int:
    """Run ``search.py`` (``query=`` or ``diff=``); the exit code (2 after one ``error:`` line: a mistake in the
    command, an ``output=`` that cannot be written (checked before the search), a disk that fills)."""
    return run_command(_search, cfg, output=cfg.get("output"))


def _search(cfg) -> int:
    if not cfg.get("index"):
        raise UsageError("index=<index directory> is required (build one with python index.py)")
    if bool(cfg.get("query")) == bool(cfg.get("diff")):
        raise UsageError("give either query=<binary>[:<function or 0xaddress>] or diff=<binary A>,<binary B>")
    output = cfg.get("output")
    if output and (Path(output).expanduser().is_dir()):
        raise UsageError(f"output={output} is a directory; give a .json file")
    if output:
        check_writable(output, "output", hint="give output=<file.json> in a writable folder")
    index = SearchIndex.open(cfg.index)
    scoring = cfg.get("scoring") or "model"
    try:
        if cfg.get("query"):
            result = query(index, str(cfg.query), k=int(cfg.get("k") or 10), scoring=scoring,
                           faiss_above=int(cfg.get("faiss_above") or 100_000), nprobe=int(cfg.get("nprobe") or 64))
            text = query_table(result)
        else:
            spec = cfg.diff
            parts = list(spec) if not isinstance(spec, str) else spec.split(",")
            if len(parts) != 2:
                raise UsageError(f"diff= takes two binaries separated by a comma, got {spec!r}")
            result = diff(index, str(parts[0]).strip(), str(parts[1]).strip(), threshold=float(cfg.get("threshold", 0.8)),
                          identical=float(cfg.get("identical", 0.999)), scoring=scoring,
                          matching=cfg.get("matching") or "hungarian")
            text = diff_table(result, limit=int(cfg.get("show") or 50))
    except UsageError:
        raise
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        raise UsageError(first_line(error)) from None
    print(text)
    if output:
        write_json(output, result)
        print(f"\n-> {output}")
    return 0
