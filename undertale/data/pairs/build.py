"""Function pairs for binary code similarity: C sources compiled at several optimisation levels.

Each ``.c`` file of each project is compiled on its own (``-c``) once per
optimisation level and per compiler; the functions of the object files are read
and disassembled as the corpus does (:func:`undertale.data.corpus.read.read_file`).
The same source function at every level and compiler shares a ``group``, so a
group is a set of positives for function search across optimisation levels
(the jTrans / kTrans protocol). The split is by project, never by function.

Output layout::

    OUTPUT/train/shard-00000.parquet ...
    OUTPUT/validation/shard-00000.parquet ...
    OUTPUT/test/shard-00000.parquet ...     (a split without projects has no folder)
    OUTPUT/manifest.json                    written last: its presence marks a complete build

See ``docs/pairs.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from undertale import __version__
from undertale.data.corpus.read import SCHEMA as CORPUS_SCHEMA
from undertale.data.parquet import open_parquet
from undertale.data.pairs.compile import _build_jobs, _compile_all, _jobs, build_and_read
from undertale.data.pairs.targets import missing_hint, target, target_compilers
from undertale.settings.pairs import architecture_name
from undertale.data.pairs.discover import (DEFAULT_COMPILERS, DEFAULT_LEVELS, DEFAULT_SPLIT, SPLITS, Project,
                                           assign_splits, check_held_out, compiler_version, find_compilers,
                                           find_projects, parse_cflags, parse_levels, parse_split)

MANIFEST = "manifest.json"
# Bump when the rows a build produces change for the same inputs: existing outputs are rebuilt.
FORMAT_VERSION = 1
ROWS_PER_SHARD = 50_000
SCHEMA = pa.schema(
    list(CORPUS_SCHEMA)
    + [
        ("group", pa.string()),
        ("level", pa.string()),
        ("compiler", pa.string()),
        ("project", pa.string()),
        ("file", pa.string()),
    ]
)


def _watched_files(project: Project) -> list[Path]:
    """The files whose change invalidates a build: the ``.c`` files and the project's headers."""
    headers = project.root.rglob("*.h") if project.whole_directory else project.root.glob("*.h")
    return sorted({project.root / name for name in project.files} | {path for path in headers if path.is_file()})


def _fingerprint(projects: Sequence[Project], parameters: dict) -> str:
    digest = hashlib.sha256(json.dumps([__version__, FORMAT_VERSION, parameters], sort_keys=True).encode())
    for project in projects:
        digest.update(f"{project.name}\0{project.root}\0{','.join(project.files)}\n".encode())
        for path in _watched_files(project):
            status = path.stat()
            digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load_pairs_manifest(directory: str | os.PathLike) -> Optional[dict]:
    """The manifest of a complete pairs build in ``directory``, or None (missing, unreadable, shards gone)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for split, shards in manifest.get("shards", {}).items():
        if not all((Path(directory) / split / shard).is_file() for shard in shards):
            return None
    return manifest


def _deduplicate(rows: list[dict]) -> tuple[list[dict], int]:
    """Drop exact duplicates (same bytes) within one (group, level, compiler); never across levels."""
    seen, kept = set(), []
    for row in rows:
        key = (row["group"], row["level"], row["compiler"], row["id"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def _write_shards(directory: Path, rows: list[dict], rows_per_shard: int) -> list[str]:
    """Write ``rows`` as numbered zstd parquet shards, each under a temporary name renamed when whole."""
    directory.mkdir(parents=True, exist_ok=True)
    shards = []
    for start in range(0, len(rows), rows_per_shard):
        path = directory / f"shard-{len(shards):05d}.parquet"
        temporary = path.with_suffix(".parquet.tmp")
        table = pa.Table.from_pylist(rows[start : start + rows_per_shard], schema=SCHEMA)
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, path)
        shards.append(path.name)
    return shards


def _complete_groups(rows: Iterable[dict], combinations: int) -> set[str]:
    """Groups with a function at every (compiler, level) combination."""
    present: dict[str, set] = defaultdict(set)
    for row in rows:
        present[row["group"]].add((row["compiler"], row["level"]))
    return {group for group, found in present.items() if len(found) == combinations}


def _counts(by_split: dict[str, list[dict]], compilers: Sequence[str], levels: Sequence[str]) -> dict:
    """Functions and groups per split, level and compiler."""
    everything = [row for rows in by_split.values() for row in rows]
    counts = {
        "functions": len(everything),
        "groups": len({row["group"] for row in everything}),
        "complete_groups": len(_complete_groups(everything, len(compilers) * len(levels))),
        "complete_groups_by_compiler": {
            compiler: len(_complete_groups([row for row in everything if row["compiler"] == compiler], len(levels)))
            for compiler in compilers
        },
        "splits": {},
    }
    for split, rows in by_split.items():
        table = Counter((row["compiler"], row["level"]) for row in rows)
        counts["splits"][split] = {
            "projects": len({row["project"] for row in rows}),
            "functions": len(rows),
            "groups": len({row["group"] for row in rows}),
            "complete_groups": len(_complete_groups(rows, len(compilers) * len(levels))),
            "functions_by_compiler_level": {
                compiler: {level: table[compiler, level] for level in levels} for compiler in compilers
            },
        }
    return counts


def build_pairs(
    output: str | os.PathLike,
    sources: Sequence[str | os.PathLike],
    levels: str | Sequence[str] = DEFAULT_LEVELS,
    compilers: str | Sequence[str] = DEFAULT_COMPILERS,
    split: Optional[str | Sequence[float]] = None,
    seed: int = 0,
    workers: Optional[int] = None,
    cflags: str | Sequence[str] = (),
    progress: bool = True,
    keep_objects: Optional[str | os.PathLike] = None,
    rows_per_shard: int = ROWS_PER_SHARD,
    build: Optional[str] = None,
    held_out: Optional[dict[str, str | Sequence[str]]] = None,
    targets: Optional[str | Sequence[str]] = None,
) -> dict:
    """Compile C projects at several optimisation levels and write their functions as a pairs dataset.

    A complete build in ``output`` from the same sources, options and compilers is reused as is.

    Arguments:
        output: directory to write (``train/``, ``validation/``, ``test/``, ``manifest.json``).
        sources: project directories, or ``.c`` files (their parent directory is the project).
        levels: optimisation levels among ``O0 O1 O2 O3 Os``.
        compilers: compiler commands; those not on PATH are reported and skipped.
        split: train, validation and test fractions of the projects (default 0.7, 0.15, 0.15).
        seed: seed of the project split by fractions.
        workers: parallel compilations (default: all cores).
        cflags: extra compiler flags (before the ``-O`` level, which wins).
        progress: show a progress bar, warnings and a summary.
        keep_objects: directory that keeps the object files (default: a temporary one, removed).
        rows_per_shard: rows per parquet shard.
        build: instead of compiling each ``.c`` file with ``-c``, build each project (directory SOURCES) with
            this shell command, e.g. ``"make CC={cc} CFLAGS=-{level}"`` (``{cc}``, ``{level}`` filled in; ``CC`` and
            ``CFLAGS`` set too), in a copy of its tree per compiler and level, and read every ``.o`` it leaves.
        held_out: the split by name instead of by fractions: ``{"validation": names, "test": names}`` (a list or
            ``"a,b"``; either key may be left out, and that split is then empty); the named projects form those
            splits and every other project is in train, so that adding projects never moves a held-out one.
        targets: instruction sets instead of ``compilers`` (``"x86-64,aarch64,i386"``): each is built by the
            host's gcc or its Debian cross compiler (:mod:`undertale.data.pairs.targets`); a missing one is an
            error naming its package, and every function must come out in its target's architecture.

    Returns:
        The manifest (also written to ``output/manifest.json``).

    Raises:
        ValueError: for no sources or ``.c`` files, an unknown level, a bad split, no compiler on
            PATH, or when every compilation fails or yields no function.
    """
    levels = parse_levels(levels)
    if held_out is not None and split is not None:
        raise ValueError("--split (split=) divides projects by fractions and --validation-projects/--test-projects "
                         "(held_out=) name them: give one or the other")
    fractions = parse_split(DEFAULT_SPLIT if split is None else split)
    cflags = parse_cflags(cflags)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    projects = find_projects(sources)
    if held_out is not None:
        held_out = check_held_out(held_out, (project.name for project in projects))
    wanted_architectures: dict[str, str] = {}
    if targets is not None:
        chosen = target_compilers(targets)
        compilers = list(chosen.values())
        wanted_architectures = {command: target(name).architecture for name, command in chosen.items()}
    found, missing = find_compilers(compilers)
    if progress:
        for name in missing:
            print(f"warning: compiler {name!r} not found on PATH; skipped ({missing_hint(name)})", file=sys.stderr)
    versions = {name: compiler_version(path) for name, path in found.items()}
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"output {output} is a file; pass a directory")
    compilation = {
        "levels": levels, "compilers": {name: [found[name], versions[name]] for name in found}, "cflags": list(cflags),
    } | ({"build": build} if build else {})
    compile_key = _fingerprint(projects, compilation)
    # a split by name records the names, and neither fractions nor seed (which it does not use)
    split_arguments = {"held_out": held_out} if held_out else {"split": list(fractions), "seed": seed}
    key = _fingerprint(projects, compilation | split_arguments)
    existing = load_pairs_manifest(output)
    if existing is not None and existing.get("key") == key:
        if progress:
            counts = existing["counts"]
            print(
                f"pairs: reusing {output} ({counts['functions']:,} functions, {counts['groups']:,} groups); "
                f"delete {output / MANIFEST} to rebuild"
            )
        return existing

    started = time.perf_counter()
    if existing is not None and existing.get("compile_key") == compile_key:
        # the same compilation with another split or seed: split the functions anew, compile nothing
        if progress:
            how = describe_held_out(held_out) if held_out else f"split {list(fractions)}, seed {seed}"
            print(f"pairs: same compilation as {output}; splitting its functions anew ({how})")
        rows = [row for name in SPLITS for row in read_pairs(output, name).to_pylist()]
        arguments = {key: value for key, value in existing["arguments"].items()
                     if key not in ("held_out", "split", "seed")}
        return _write_dataset(
            output, rows, projects, found, missing, versions, levels, fractions, seed, held_out, existing["failed"],
            existing["counts"], key, compile_key, arguments | split_arguments, rows_per_shard, started, progress,
        )
    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="undertale-pairs-") as temporary:
        objects = Path(keep_objects).resolve() if keep_objects is not None else Path(temporary)
        if build:
            rows, failed = _compile_all(_build_jobs(projects, found, levels, build, objects), workers, progress,
                                        build_and_read)
            jobs = [None] * (len(projects) * len(found) * len(levels))
        else:
            jobs = _jobs(projects, found, levels, cflags, objects)
            rows, failed = _compile_all(jobs, workers, progress)
    if len(failed) == len(jobs):
        raise ValueError(
            f"every compilation failed ({len(jobs)}); the first: {failed[0]['project']}/{failed[0]['file']} "
            f"({failed[0]['compiler']} -{failed[0]['level']}): {failed[0]['error']}"
        )
    if not rows:
        raise ValueError(f"no functions found in the objects compiled from {len(jobs) - len(failed)} file(s)")
    _check_architectures(rows, wanted_architectures)
    rows, duplicates = _deduplicate(rows)
    counts = {"files": sum(len(project.files) for project in projects), "compilations": len(jobs),
              "failed_compilations": len(failed), "duplicates": duplicates}
    arguments = {
        "sources": [str(source) for source in sources], "levels": levels, "compilers": list(found) + missing,
        "workers": workers, "cflags": list(cflags),
        "keep_objects": str(keep_objects) if keep_objects is not None else None,
    } | split_arguments
    return _write_dataset(output, rows, projects, found, missing, versions, levels, fractions, seed, held_out, failed,
                          counts, key, compile_key, arguments, rows_per_shard, started, progress)


def _check_architectures(rows: list[dict], wanted: dict[str, str]) -> None:
    """Every function of a target's compiler is in that target's instruction set (read from its ELF header)."""
    for row in rows:
        expected = wanted.get(row["compiler"])
        if expected is not None and row["architecture"] != expected:
            raise ValueError(f"{row['compiler']} built {row['project']}/{row['file']} for {row['architecture']}, "
                             f"not {expected}: check which compiler that command runs")


def architectures_of(rows: Sequence[dict]) -> dict[str, list[str]]:
    """The instruction sets each compiler's functions are in (``{"gcc": ["x86-64"], ...}``)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        seen[row["compiler"]].add(row["architecture"])
    return {compiler: sorted(names) for compiler, names in sorted(seen.items())}


def describe_held_out(held_out: dict[str, Sequence[str]]) -> str:
    """``validation a, b; test c`` for a split by name."""
    return "; ".join(f"{split} {', '.join(names) or '(none)'}" for split, names in held_out.items())


def _warn_empty_held_out(manifest: dict) -> None:
    """A named validation or test project that yielded no functions leaves a hole in its split: say so."""
    held_out = manifest["arguments"].get("held_out") or {}
    without = set(manifest["projects_without_functions"])
    for split, names in held_out.items():
        lost = [name for name in names if name in without]
        if lost:
            print(f"warning: {split} project(s) {', '.join(lost)} yielded no functions (every compilation failed); "
                  f"the {split} split has {len(names) - len(lost)} of the {len(names)} named", file=sys.stderr)


def _write_dataset(output: Path, rows: list[dict], projects: Sequence[Project], found: dict[str, str],
                   missing: list[str], versions: dict[str, str], levels: list[str], fractions: Sequence[float],
                   seed: int, held_out: Optional[dict[str, Sequence[str]]], failed: list[dict], build_counts: dict,
                   key: str, compile_key: str, arguments: dict, rows_per_shard: int, started: float,
                   progress: bool) -> dict:
    """Split the functions by project, write the shards, then the manifest (last, through a temporary name)."""
    # only projects with functions take a place in a split
    built_projects = sorted({row["project"] for row in rows})
    assignment = assign_splits(built_projects, fractions, seed, held_out)
    compiler_rank, level_rank = {name: i for i, name in enumerate(found)}, {name: i for i, name in enumerate(levels)}
    rows.sort(
        key=lambda row: (row["project"], row["file"], row["name"], compiler_rank[row["compiler"]],
                         level_rank[row["level"]], row["address"])
    )
    by_split = {name: [row for row in rows if assignment[row["project"]] == name] for name in SPLITS}
    # From here the old build is replaced: its manifest goes first, so a build cut short never looks complete.
    (output / MANIFEST).unlink(missing_ok=True)
    for name in SPLITS:
        shutil.rmtree(output / name, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)
    shards = {
        name: _write_shards(output / name, split_rows, rows_per_shard) for name, split_rows in by_split.items() if split_rows
    }
    counts = _counts(by_split, list(found), levels)
    counts |= {name: build_counts[name] for name in ("files", "compilations", "failed_compilations", "duplicates")}
    manifest = {
        "undertale_version": __version__,
        "format_version": FORMAT_VERSION,
        "key": key,
        "compile_key": compile_key,
        "arguments": arguments,
        "levels": levels,
        "compilers": list(found),
        "compilers_missing": missing,
        "compiler_versions": versions,
        "architectures": architectures_of(rows),
        "projects": {name: sorted(p for p, s in assignment.items() if s == name) for name in SPLITS},
        "project_roots": {project.name: str(project.root) for project in projects},
        "projects_without_functions": sorted({project.name for project in projects} - set(built_projects)),
        "counts": counts,
        "failed": failed,
        "shards": shards,
        "seconds": round(time.perf_counter() - started, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    temporary_manifest = output / (MANIFEST + ".tmp")
    temporary_manifest.write_text(json.dumps(manifest, indent=2))
    os.replace(temporary_manifest, output / MANIFEST)
    if progress:
        print(summary(manifest, output))
        _warn_empty_held_out(manifest)
    return manifest


def _names(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _architectures_line(manifest: dict) -> list[str]:
    """``  architectures: gcc x86-64, aarch64-linux-gnu-gcc aarch64`` for a build of several (else nothing)."""
    built = manifest.get("architectures") or {}
    if len({name for names in built.values() for name in names}) < 2:
        return []
    return ["  architectures: " + ", ".join(f"{compiler} {'/'.join(map(architecture_name, built[compiler]))}"
                                           for compiler in manifest["compilers"] if compiler in built)]


def summary(manifest: dict, output: Path, failures_shown: int = 10) -> str:
    """A few lines describing a finished pairs build."""
    counts = manifest["counts"]
    levels, compilers = manifest["levels"], manifest["compilers"]
    lines = [
        f"pairs: {output}",
        f"  {counts['functions']:,} functions in {counts['groups']:,} groups; {counts['complete_groups']:,} groups "
        f"present at every level ({' '.join(levels)}) with {', '.join(compilers)}",
        *_architectures_line(manifest),
        f"  {counts['compilations']:,} compilations of {counts['files']:,} files in {manifest['seconds']:.1f} s, "
        f"{counts['failed_compilations']:,} failed; {counts['duplicates']:,} duplicate functions dropped",
    ]
    by_name = manifest["arguments"].get("held_out")
    for split in SPLITS:
        projects = manifest["projects"][split]
        if by_name and not projects:
            lines.append(f"  {split}: no project (split by name: {describe_held_out(by_name)})")
        if projects:
            functions = counts["splits"][split]["functions"]
            lines.append(f"  {split}: {len(projects)} project(s), {functions:,} functions: {_names(projects)}")
    everything = [name for split in SPLITS for name in manifest["projects"][split]]
    if manifest["projects_without_functions"]:
        lines.append(f"  projects without functions (in no split): {_names(manifest['projects_without_functions'])}")
    if len(everything) == 1:
        used = next(split for split in SPLITS if manifest["projects"][split])
        lines.append(f"  only one project: everything is in {used}; pass more projects for the other splits")
    if manifest["compilers_missing"]:
        lines.append(f"  compilers not found (skipped): {', '.join(manifest['compilers_missing'])}")
    failures: dict[tuple, list[str]] = defaultdict(list)
    for item in manifest["failed"]:
        failures[item["project"], item["file"], item["compiler"], item["error"]].append(item["level"])
    if failures:
        lines.append(f"  failed to compile ({len(manifest['failed'])} compilations, skipped):")
        for (project, file, compiler, error), failed_levels in list(failures.items())[:failures_shown]:
            lines.append(f"    {project}/{file} ({compiler} {' '.join(failed_levels)}): {error}")
        if len(failures) > failures_shown:
            lines.append(f"    ... {len(failures) - failures_shown} more in {output / MANIFEST}")
    return "\n".join(lines)


def read_pairs(
    directory: str | os.PathLike, split: str, columns: Optional[Sequence[str]] = None, complete: bool = False
) -> pa.Table:
    """The functions of one split of a pairs dataset.

    Columns (one row per function per level per compiler):

    - ``id`` (string): hash of the function's bytes;
    - ``source`` (string): the ``.c`` file compiled (absolute path);
    - ``name`` (string): the symbol (gcc clones keep their suffix: ``f.constprop.0``, ``f.cold``);
    - ``architecture`` (string): ``x86-64``, ``x86`` or ``aarch64``;
    - ``address`` (uint64): offset of the function in its section of the object file;
    - ``size``, ``instructions``, ``skipped_bytes`` (int64): bytes, instructions decoded, bytes skipped;
    - ``disassembly`` (string): the instruction-trace text (``docs/design.md``);
    - ``group`` (string): ``project/relative/path.c:name``, shared by the same source function at
      every level and compiler (the positives of a search);
    - ``level`` (string): ``O0``, ``O1``, ``O2``, ``O3`` or ``Os``;
    - ``compiler`` (string): the compiler command, e.g. ``gcc``;
    - ``project`` (string): the project (the split unit);
    - ``file`` (string): the ``.c`` file relative to the project root.

    Arguments:
        directory: output of :func:`build_pairs`.
        split: ``train``, ``validation`` or ``test``.
        columns: columns to read (default: all).
        complete: keep only groups present at every level with every compiler of the build.

    Returns:
        A table (no rows when the split has no project).

    Raises:
        FileNotFoundError: when ``directory`` holds no complete pairs build.
        ValueError: for an unknown split or column.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    manifest = load_pairs_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(
            f"{directory}: no complete pairs dataset (manifest.json missing or shards gone); "
            f"build it with python -m undertale.data pairs"
        )
    wanted = list(columns) if columns is not None else SCHEMA.names
    unknown = [name for name in wanted if name not in SCHEMA.names]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; choose from {', '.join(SCHEMA.names)}")
    reading = list(dict.fromkeys(wanted + (["group", "compiler", "level"] if complete else [])))
    paths = [Path(directory) / split / shard for shard in manifest["shards"].get(split, [])]
    tables = [open_parquet(path, tuple(reading)).read(columns=reading) for path in paths]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table().select(reading)
    if complete and table.num_rows:
        combinations = len(manifest["levels"]) * len(manifest["compilers"])
        keep = _complete_groups(table.select(["group", "compiler", "level"]).to_pylist(), combinations)
        table = table.filter(pa.array([group in keep for group in table.column("group").to_pylist()]))
    return table.select(wanted)
