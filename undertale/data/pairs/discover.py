"""What a pairs build is made of: C projects and their files, the compilers, the levels, the split by project.

Used by :mod:`undertale.data.pairs.build` (``python -m undertale.data pairs``); see ``docs/pairs.md``.
"""

from __future__ import annotations

import hashlib
import math
import os
import shlex
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from undertale.settings.pairs import LEVELS

DEFAULT_LEVELS = ("O0", "O1", "O2", "O3")
DEFAULT_COMPILERS = ("gcc", "clang")
DEFAULT_SPLIT = (0.7, 0.15, 0.15)
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Project:
    """A project: its name, root directory and ``.c`` files (paths relative to the root, POSIX style)."""

    name: str
    root: Path
    files: tuple[str, ...]
    whole_directory: bool  # a directory SOURCE (headers are watched recursively) or single files


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
