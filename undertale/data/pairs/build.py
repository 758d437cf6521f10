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
import math
import multiprocessing
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from undertale import __version__
from undertale.data.corpus.read import SCHEMA as CORPUS_SCHEMA
from undertale.data.corpus.read import read_file
from undertale.data.parquet import open_parquet
from undertale.settings.pairs import LEVELS

DEFAULT_LEVELS = ("O0", "O1", "O2", "O3")
DEFAULT_COMPILERS = ("gcc", "clang")
DEFAULT_SPLIT = (0.7, 0.15, 0.15)
SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"
# Bump when the rows a build produces change for the same inputs: existing outputs are rebuilt.
FORMAT_VERSION = 1
ROWS_PER_SHARD = 50_000
COMPILE_TIMEOUT_S = 600

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

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class Project:
    """A project: its name, root directory and ``.c`` files (paths relative to the root, POSIX style)."""

    name: str
    root: Path
    files: tuple[str, ...]
    whole_directory: bool  # a directory SOURCE (headers are watched recursively) or single files


@dataclass(frozen=True)
class CompileJob:
    """One ``.c`` file, one compiler, one level."""

    project: str
    root: str
    file: str
    compiler: str
    executable: str
    level: str
    cflags: tuple[str, ...]
    object_path: str


@dataclass
class CompileResult:
    """The rows of one compiled file, or the reason it has none."""

    job: CompileJob
    rows: list[dict] = field(default_factory=list)
    error: Optional[str] = None


def parse_levels(levels: str | Sequence[str]) -> list[str]:
    """Optimisation levels as ``O0``..``O3``, ``Os``, deduplicated in order (``-O2`` and ``o2`` are accepted).

    Raises:
        ValueError: for an unknown level or an empty list.
    """
    items = levels.split(",") if isinstance(levels, str) else list(levels)
    chosen: list[str] = []
    for item in items:
        level = str(item).strip().lstrip("-")
        level = level[:1].upper() + level[1:]
        if level not in LEVELS:
            raise ValueError(f"unknown optimisation level {str(item).strip()!r}; choose from {', '.join(LEVELS)}")
        if level not in chosen:
            chosen.append(level)
    if not chosen:
        raise ValueError(f"no optimisation levels given; choose from {', '.join(LEVELS)}")
    return chosen


def parse_split(split: str | Sequence[float]) -> tuple[float, float, float]:
    """Train, validation and test fractions (three numbers in [0, 1] that sum to 1).

    Raises:
        ValueError: naming the value when it is not three such numbers.
    """
    text = split if isinstance(split, str) else ",".join(str(value) for value in split)
    try:
        fractions = tuple(float(value) for value in text.split(","))
    except ValueError:
        fractions = ()
    if len(fractions) != 3 or any(not 0.0 <= value <= 1.0 for value in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"split must be three fractions (train, validation, test) in [0, 1] that sum to 1, e.g. 0.7,0.15,0.15; "
            f"got {text!r}"
        )
    return fractions  # type: ignore[return-value]


def parse_cflags(cflags: str | Sequence[str]) -> tuple[str, ...]:
    """Extra compiler flags: a shell-quoted string or a sequence of arguments."""
    return tuple(shlex.split(cflags)) if isinstance(cflags, str) else tuple(cflags)


def find_projects(sources: Sequence[str | os.PathLike]) -> list[Project]:
    """Projects named by ``sources``: a directory is a project (all ``.c`` files under it, hidden
    directories left out); a ``.c`` file belongs to the project named by its parent directory.

    Raises:
        ValueError: when there are no sources, a source is missing or not a ``.c`` file or
            directory, two different directories would share a project name, or no ``.c`` file is found.
    """
    if not sources:
        raise ValueError("no SOURCES given; pass project directories or .c files")
    roots: dict[str, Path] = {}
    files: dict[str, set[str]] = defaultdict(set)
    whole: dict[str, bool] = defaultdict(bool)
    for source in sources:
        path = Path(os.path.abspath(source))  # not resolved: a symbolic link's own name names the project
        if not path.exists():
            raise ValueError(f"source {str(source)!r} does not exist")
        if path.is_dir():
            root, found = path, _c_files(path)
        elif path.suffix == ".c":
            root, found = path.parent, [path]
        else:
            raise ValueError(f"source {str(source)!r} is neither a directory nor a .c file")
        name = root.name or "root"
        if roots.setdefault(name, root) != root:
            raise ValueError(
                f"sources {roots[name]} and {root} would both be project {name!r}; "
                f"give one another name with a symbolic link (ln -s DIR NEWNAME)"
            )
        files[name].update(p.relative_to(root).as_posix() for p in found)
        whole[name] |= path.is_dir()
    projects = [Project(name, roots[name], tuple(sorted(files[name])), whole[name]) for name in sorted(roots)]
    if not any(project.files for project in projects):
        raise ValueError(f"no .c files under {', '.join(str(source) for source in sources)}")
    return [project for project in projects if project.files]


def _c_files(root: Path) -> list[Path]:
    """The ``.c`` files under ``root``, outside hidden directories (``.git``, Debian's ``.pc`` patch copies).

    Linked subdirectories are followed (``Path.rglob`` would skip them on Python 3.11).
    """
    found, visited = [], set()
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in visited:  # a link cycle
            subdirectories[:] = []
            continue
        visited.add(real)
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        found.extend(Path(directory) / name for name in files if name.endswith(".c"))
    return sorted(path for path in found if path.is_file())


def find_compilers(compilers: str | Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split the requested compilers into those on PATH (name -> executable) and the missing ones.

    Raises:
        ValueError: when no compiler is given or none of them is on PATH.
    """
    names = [name.strip() for name in (compilers.split(",") if isinstance(compilers, str) else compilers)]
    names = list(dict.fromkeys(name for name in names if name))
    if not names:
        raise ValueError("no compilers given; e.g. --compilers gcc,clang")
    found = {name: shutil.which(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    available = {name: path for name, path in found.items() if path is not None}
    if not available:
        raise ValueError(f"no compiler available: {', '.join(missing)} not found on PATH; install one or pass --compilers")
    return available, missing


def compiler_version(executable: str) -> str:
    """First line of ``executable --version`` (``unknown`` when it does not answer)."""
    try:
        result = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = result.stdout.strip().splitlines()
    return lines[0] if lines else "unknown"


def split_counts(count: int, fractions: Sequence[float]) -> list[int]:
    """Projects per split for ``count`` projects: proportional (largest remainder), every split with a
    non-zero fraction gets at least one project when there are enough; with fewer projects than such
    splits, the first ones in train, validation, test order get one each.
    """
    nonzero = [index for index, fraction in enumerate(fractions) if fraction > 0]
    counts = [0] * len(fractions)
    if count <= len(nonzero):
        for index in nonzero[:count]:
            counts[index] = 1
        return counts
    targets = [fraction * count for fraction in fractions]
    counts = [math.floor(round(target, 9)) for target in targets]
    for index in nonzero:
        counts[index] = max(counts[index], 1)
    while sum(counts) < count:
        counts[max(nonzero, key=lambda i: (targets[i] - counts[i], -i))] += 1
    while sum(counts) > count:
        counts[max((i for i in nonzero if counts[i] > 1), key=lambda i: (counts[i] - targets[i], i))] -= 1
    return counts


def parse_project_names(names: str | Sequence[str]) -> list[str]:
    """Project names from ``"a,b"`` or a sequence of names: blanks dropped, sorted, each once."""
    items = names.split(",") if isinstance(names, str) else list(names)
    return sorted({str(name).strip() for name in items if str(name).strip()})


def check_held_out(held_out: dict, projects: Iterable[str]) -> dict[str, list[str]]:
    """The projects named for validation and test (``{split: sorted names}``), checked against the sources' projects.

    Raises:
        ValueError: for a key other than validation and test, a split named with no project, a name that is not a
            project of the sources, or a project named for both splits.
    """
    if not isinstance(held_out, dict):
        raise ValueError(f"held_out must be a dict {{'validation': names, 'test': names}}, got {held_out!r}")
    unexpected = sorted(set(held_out) - set(SPLITS[1:]))
    if unexpected:
        raise ValueError(f"held_out names the validation and test projects; unexpected key(s): {', '.join(unexpected)}")
    checked = {split: parse_project_names(names) for split, names in held_out.items() if names is not None}
    empty = [split for split, names in checked.items() if not names]
    if empty or not checked:
        raise ValueError(f"the {' and '.join(empty) or 'held-out'} project names are empty: name at least one project "
                         f"(or leave the option out)")
    known = sorted(projects)
    unknown = [f"{split} project {name!r}" for split, names in checked.items() for name in names if name not in known]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} not among the sources' projects (give names, not paths): "
                         f"{', '.join(known)}")
    both = sorted(set(checked.get("validation", ())) & set(checked.get("test", ())))
    if both:
        raise ValueError(f"project(s) {', '.join(both)} named for both validation and test")
    return {split: checked.get(split, []) for split in SPLITS[1:]}


def assign_splits(projects: Iterable[str], fractions: Sequence[float], seed: int,
                  held_out: Optional[dict[str, Sequence[str]]] = None) -> dict[str, str]:
    """Split of each project, deterministic for the seed and the project names (not their order).

    With ``held_out`` (``{"validation": names, "test": names}``), the named projects form those splits and every
    other project is in train; ``fractions`` and ``seed`` are not used.
    """
    if held_out:
        named = {name: split for split in SPLITS[1:] for name in held_out.get(split, ())}
        return {name: named.get(name, "train") for name in projects}
    ranked = sorted(projects, key=lambda name: hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest())
    assignment, start = {}, 0
    for split, count in zip(SPLITS, split_counts(len(ranked), fractions)):
        for name in ranked[start : start + count]:
            assignment[name] = split
        start += count
    return assignment


def first_error_line(stderr: str, compiler: str, returncode: int) -> str:
    """The compiler's first ``error:`` line (else its first line, else the exit code)."""
    lines = [line.strip() for line in _ANSI.sub("", stderr).splitlines() if line.strip()]
    chosen = next((line for line in lines if "error:" in line), lines[0] if lines else None)
    return (chosen or f"{compiler} exited with code {returncode}")[:300]


def compile_and_read(job: CompileJob) -> CompileResult:
    """Compile one file and read its functions into pair rows; never raises for a failing compile."""
    result = CompileResult(job)
    directory = (Path(job.root) / job.file).parent
    Path(job.object_path).parent.mkdir(parents=True, exist_ok=True)
    command = [
        job.executable, *job.cflags, f"-{job.level}", "-c", f"-I{directory}", f"-I{job.root}",
        job.file, "-o", job.object_path,
    ]
    try:
        completed = subprocess.run(
            command, cwd=job.root, capture_output=True, text=True, errors="replace",
            timeout=COMPILE_TIMEOUT_S, env=os.environ | {"LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired:
        result.error = f"{job.compiler} timed out after {COMPILE_TIMEOUT_S} s"
        return result
    except OSError as error:
        result.error = f"{job.compiler} could not run: {error}"
        return result
    if completed.returncode != 0 or not os.path.isfile(job.object_path):
        result.error = first_error_line(completed.stderr, job.compiler, completed.returncode)
        return result
    found = read_file(job.object_path)
    if found.error is not None:
        result.error = f"unreadable object file: {found.error}"
        return result
    source = str(Path(job.root) / job.file)
    for row in found.rows:
        row.update(
            source=source, group=f"{job.project}/{job.file}:{row['name']}", level=job.level,
            compiler=job.compiler, project=job.project, file=job.file,
        )
        result.rows.append(row)
    return result


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


BUILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class BuildJob:
    """One project built by its own command (``build``), with one compiler at one level, in a copy of its tree."""

    project: str
    root: str
    compiler: str
    executable: str
    level: str
    command: str
    copy: str
    file: str = "(build command)"


def build_and_read(job: BuildJob) -> CompileResult:
    """Build a copy of the project with ``job.command`` and read every object file it leaves; never raises.

    The command is a shell line with ``{cc}`` (the compiler) and ``{level}`` (e.g. ``O2``) filled in; ``CC`` and
    ``CFLAGS`` (``-<level>``) are also set in its environment. Each object's functions are grouped by the
    ``.c`` file of the same name, when there is one.
    """
    result = CompileResult(job)  # type: ignore[arg-type]
    copy = Path(job.copy)
    shutil.copytree(job.root, copy, ignore=shutil.ignore_patterns(".git", "*.o"), dirs_exist_ok=True)
    command = job.command.format(cc=job.executable, level=job.level)
    try:
        completed = subprocess.run(
            command, shell=True, cwd=copy, capture_output=True, text=True, errors="replace", timeout=BUILD_TIMEOUT_S,
            env=os.environ | {"LC_ALL": "C", "CC": job.executable, "CFLAGS": f"-{job.level}"},
        )
    except subprocess.TimeoutExpired:
        result.error = f"build timed out after {BUILD_TIMEOUT_S} s"
        return result
    if completed.returncode != 0:
        result.error = first_error_line(completed.stderr or completed.stdout, job.compiler, completed.returncode)
        return result
    objects = sorted(copy.rglob("*.o"))
    if not objects:
        result.error = f"the build command left no .o files: {command}"
        return result
    for path in objects:
        found = read_file(str(path))
        relative = path.relative_to(copy)
        source = relative.with_suffix(".c")
        file = source.as_posix() if (Path(job.root) / source).is_file() else relative.as_posix()
        for row in found.rows:
            row.update(source=str(Path(job.root) / file), group=f"{job.project}/{file}:{row['name']}",
                       level=job.level, compiler=job.compiler, project=job.project, file=file)
            result.rows.append(row)
    return result


def _build_jobs(projects: Sequence[Project], compilers: dict[str, str], levels: Sequence[str], command: str,
                objects: Path) -> list[BuildJob]:
    return [
        BuildJob(project.name, str(project.root), compiler, executable, level, command,
                 str(objects / re.sub(r"[^A-Za-z0-9_.+-]", "_", compiler) / level / project.name))
        for project in projects for compiler, executable in compilers.items() for level in levels
    ]


def _jobs(projects: Sequence[Project], compilers: dict[str, str], levels: Sequence[str], cflags, objects: Path):
    jobs = []
    for project in projects:
        for file in project.files:
            for compiler, executable in compilers.items():
                folder = re.sub(r"[^A-Za-z0-9_.+-]", "_", compiler)
                for level in levels:
                    target = objects / folder / level / project.name / Path(file).with_suffix(".o")
                    jobs.append(
                        CompileJob(project.name, str(project.root), file, compiler, executable, level, cflags, str(target))
                    )
    return jobs


def _compile_all(jobs: list, workers: int, progress: bool, worker=compile_and_read) -> tuple[list[dict], list[dict]]:
    """Run every job in a process pool (``worker(job)``); returns (rows, failures)."""
    rows, failed = [], []
    context = multiprocessing.get_context("spawn" if platform.system() != "Linux" else "fork")
    bar = tqdm(total=len(jobs), unit="file", desc="pairs", disable=not progress, dynamic_ncols=True)
    with context.Pool(max(1, min(workers, len(jobs)))) as pool:
        for result in pool.imap_unordered(worker, jobs, chunksize=1):
            bar.update()
            if result.error is not None:
                job = result.job
                failed.append(
                    {"project": job.project, "file": job.file, "compiler": job.compiler, "level": job.level,
                     "error": result.error}
                )
            rows.extend(result.rows)
            bar.set_postfix(functions=f"{len(rows):,}", failed=len(failed))
    bar.close()
    failed.sort(key=lambda item: (item["project"], item["file"], item["compiler"], item["level"]))
    return rows, failed


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
    found, missing = find_compilers(compilers)
    if progress:
        for name in missing:
            print(f"warning: compiler {name!r} not found on PATH; skipped", file=sys.stderr)
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


def summary(manifest: dict, output: Path, failures_shown: int = 10) -> str:
    """A few lines describing a finished pairs build."""
    counts = manifest["counts"]
    levels, compilers = manifest["levels"], manifest["compilers"]
    lines = [
        f"pairs: {output}",
        f"  {counts['functions']:,} functions in {counts['groups']:,} groups; {counts['complete_groups']:,} groups "
        f"present at every level ({' '.join(levels)}) with {', '.join(compilers)}",
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
