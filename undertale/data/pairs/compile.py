"""Compiling the pairs: each ``.c`` file once per level and compiler (or a project's own build command), its
object's functions read as the corpus reads them, on a process pool.

Used by :mod:`undertale.data.pairs.build`; see ``docs/pairs.md``.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from tqdm.auto import tqdm

from undertale.data.corpus.read import read_file
from undertale.data.pairs.discover import Project

COMPILE_TIMEOUT_S = 600
BUILD_TIMEOUT_S = 1800
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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
