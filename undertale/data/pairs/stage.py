"""Stage C projects from pinned Debian source packages, as a dataset description says, for the pairs builder.

    python -m undertale.data stage DATASET_DIR SRC_DIR [--mirror URL] [--build OUTPUT] [--workers N]

``DATASET_DIR`` holds ``dataset.yaml`` (the pinned packages, the split, levels, compilers, cflags and the
system headers the build needs) and ``projects/<name>.yaml``, one per package (what to keep of it, what to
generate). Each package is downloaded and unpacked in ``SRC_DIR`` (:mod:`~undertale.data.pairs.sources`;
reused when already there), then staged as ``SRC_DIR/stage/<name>/`` (rebuilt on every run). With
``--build OUTPUT`` the pairs dataset is then built from the staged projects with the dataset's split,
levels, compilers and cflags (what ``python -m undertale.data pairs`` does, the command is printed).

Why staging: the pairs builder compiles each ``.c`` file on its own with the same flags for every project
(``gcc CFLAGS -O<level> -c -I<file's dir> -I<project root> FILE`` in the project root), while real projects
need their own configuration. A staged project holds only the library's own sources, its include
directories copied to the root, the headers its build system would generate, ``pairs_prelude.h`` (its
defines; the dataset's cflags ``-include pairs_prelude.h`` read it first) and ``.included/`` (the ``.c``
files that are only ``#include``-d by another one: the builder skips hidden directories, ``-I.included``
finds them). Copied files keep their mtimes and generated ones get :data:`FIXED_MTIME`, so that a rerun
with nothing changed reuses the pairs build (its fingerprint covers paths, sizes and mtimes).

A project file (``projects/<name>.yaml``), every key optional, applied in this order:

``copy``
    a list of ``{from: DIR, files: [PATTERN, ...], into: DEST}``: the files (shell globs, relative to
    ``DIR`` of the unpacked package, default ``.``; a directory is copied whole) are copied keeping their
    paths relative to ``DIR``, or, with ``into``, flattened into ``DEST`` of the staged project. A literal
    name that is missing is an error; a glob may match nothing.
``remove``
    staged paths (globs) to delete.
``included``
    staged ``.c`` files moved to ``.included/``.
``generated``
    files written as they are in ``projects/<name>/`` (e.g. ``config.h``), at the same relative path.
``derived``
    a list of ``{to: PATH, from: FILE, replace: [[REGEX, REPLACEMENT], ...]}``: ``FILE`` of the package
    with each line's first match of each ``REGEX`` replaced, in order (what ``sed -e s/../../`` does).
``defines``
    ``NAME: VALUE`` pairs written to ``pairs_prelude.h`` as ``#define NAME VALUE`` (empty file without).
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from undertale.data.archive import default_mirror
from undertale.data.pairs.targets import header_package
from undertale.data.pairs.sources import SourceError, fetch_index, fetch_package

FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z
PRELUDE = "pairs_prelude.h"
INCLUDED = ".included"
DATASET_KEYS = {"suite", "component", "packages", "validation", "test", "levels", "compilers", "targets", "cflags",
                "system_headers", "base"}
PROJECT_KEYS = {"copy", "remove", "included", "generated", "derived", "defines"}
COPY_KEYS = {"from", "files", "into"}
DERIVED_KEYS = {"to", "from", "replace"}


class StageError(ValueError):
    """A bad dataset description or a staging failure (one line)."""


@dataclass
class Copy:
    source: str
    files: list[str]
    into: Optional[str] = None


@dataclass
class Derived:
    to: str
    source: str
    replace: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Project:
    name: str
    directory: Path  # projects/<name>/: the generated files
    copy: list[Copy] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    included: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    derived: list[Derived] = field(default_factory=list)
    defines: dict[str, str] = field(default_factory=dict)

    def prelude(self) -> str:
        return "".join(f"#define {name} {value}\n" for name, value in self.defines.items())


@dataclass
class Dataset:
    directory: Path
    packages: dict[str, str]  # name -> pinned version
    projects: dict[str, Project]
    suite: str = "bookworm"
    component: str = "main"
    validation: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    levels: list[str] = field(default_factory=lambda: ["O0", "O1", "O2", "O3"])
    compilers: list[str] = field(default_factory=lambda: ["gcc"])
    targets: list[str] = field(default_factory=list)  # instruction sets instead of compilers (--targets)
    cflags: str = ""
    system_headers: dict[str, str] = field(default_factory=dict)  # header -> package that provides it


# ---------------------------------------------------------------------------------------------------------
# reading the description


def _yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: no such file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise StageError(f"{path}:{where} not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StageError(f"{path}: expected a mapping of keys")
    return data


def _keys(where: str, data: dict, known: set[str]) -> None:
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise StageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _strings(where: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, (str, int, float)) for item in value):
        raise StageError(f"{where}: expected a list of strings")
    return [str(item) for item in value]


def _relative(where: str, path: str) -> str:
    if os.path.isabs(path) or ".." in Path(path).parts:
        raise StageError(f"{where}: {path!r} must be a relative path inside the project")
    return path


def load_project(path: Path) -> Project:
    data = _yaml(path)
    where = str(path)
    _keys(where, data, PROJECT_KEYS)
    project = Project(name=path.stem, directory=path.with_suffix(""))
    for number, item in enumerate(data.get("copy") or [], 1):
        at = f"{where}: copy #{number}"
        if not isinstance(item, dict):
            raise StageError(f"{at}: expected a mapping with from, files, into")
        _keys(at, item, COPY_KEYS)
        files = [_relative(at, name) for name in _strings(f"{at}: files", item.get("files"))]
        if not files:
            raise StageError(f"{at}: no files")
        into = item.get("into")
        project.copy.append(Copy(source=_relative(at, str(item.get("from", "."))), files=files,
                                 into=None if into is None else _relative(at, str(into))))
    project.remove = [_relative(where, name) for name in _strings(f"{where}: remove", data.get("remove"))]
    project.included = [_relative(where, name) for name in _strings(f"{where}: included", data.get("included"))]
    project.generated = [_relative(where, name) for name in _strings(f"{where}: generated", data.get("generated"))]
    for name in project.generated:
        if not (project.directory / name).is_file():
            raise StageError(f"{where}: generated file {project.directory / name} does not exist")
    for number, item in enumerate(data.get("derived") or [], 1):
        at = f"{where}: derived #{number}"
        if not isinstance(item, dict) or "to" not in item or "from" not in item:
            raise StageError(f"{at}: expected a mapping with to, from and replace")
        _keys(at, item, DERIVED_KEYS)
        replace = []
        for rule in item.get("replace") or []:
            if not isinstance(rule, list) or len(rule) != 2 or not all(isinstance(part, str) for part in rule):
                raise StageError(f"{at}: replace: expected [REGEX, REPLACEMENT] pairs of strings")
            try:
                re.compile(rule[0])
            except re.error as error:
                raise StageError(f"{at}: replace: bad regex {rule[0]!r}: {error}") from None
            replace.append((rule[0], rule[1]))
        project.derived.append(Derived(to=_relative(at, str(item["to"])), source=_relative(at, str(item["from"])),
                                       replace=replace))
    defines = data.get("defines") or {}
    if not isinstance(defines, dict):
        raise StageError(f"{where}: defines: expected NAME: VALUE pairs")
    for name, value in defines.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)) or isinstance(value, (dict, list)):
            raise StageError(f"{where}: defines: bad define {name!r}: {value!r}")
        project.defines[str(name)] = "" if value is None else str(value)
    return project


def load_dataset(directory: str | os.PathLike) -> Dataset:
    """Read and check ``DATASET_DIR/dataset.yaml`` and ``DATASET_DIR/projects/*.yaml``.

    ``base: ../other`` takes every key this file does not set, and the project files, from the dataset
    ``DATASET_DIR/../other`` (one level: a base names no base).
    """
    directory = Path(directory)
    path = directory / "dataset.yaml"
    data = _yaml(path)
    _keys(str(path), data, DATASET_KEYS)
    if "targets" in data and "compilers" in data:
        raise StageError(f"{path}: give compilers or targets (instruction sets), not both")
    projects_dir = directory / "projects"
    if "base" in data:
        base = (directory / str(data["base"])).resolve()
        inherited = _yaml(base / "dataset.yaml")
        _keys(str(base / "dataset.yaml"), inherited, DATASET_KEYS - {"base"})
        data = inherited | {key: value for key, value in data.items() if key != "base"}
        projects_dir = base / "projects"
    packages: dict[str, str] = {}
    for pin in _strings(f"{path}: packages", data.get("packages")):
        name, _, version = pin.partition("=")
        if not name or not version or not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", name):
            raise StageError(f"{path}: packages: {pin!r}: expected NAME=VERSION (a pinned Debian version)")
        if name in packages:
            raise StageError(f"{path}: packages: {name} pinned twice")
        packages[name] = version
    if not packages:
        raise StageError(f"{path}: packages: no package pinned")
    files = {file.stem: file for file in sorted(projects_dir.glob("*.yaml"))}
    for name in files:
        if name not in packages:
            raise StageError(f"{files[name]}: unknown project: {name} is not a package of {path}")
    for name in packages:
        if name not in files:
            raise StageError(f"{path}: package {name} has no project file {projects_dir / (name + '.yaml')}")
    projects = {name: load_project(files[name]) for name in packages}
    headers = data.get("system_headers") or {}
    if not isinstance(headers, dict):
        raise StageError(f"{path}: system_headers: expected HEADER: PACKAGE pairs")
    dataset = Dataset(
        directory=directory, packages=packages, projects=projects,
        suite=str(data.get("suite", "bookworm")), component=str(data.get("component", "main")),
        validation=_strings(f"{path}: validation", data.get("validation")),
        test=_strings(f"{path}: test", data.get("test")),
        levels=_strings(f"{path}: levels", data.get("levels", ["O0", "O1", "O2", "O3"])),
        compilers=_strings(f"{path}: compilers", data.get("compilers", ["gcc"])),
        targets=_strings(f"{path}: targets", data.get("targets")),
        cflags=str(data.get("cflags") or ""),
        system_headers={str(header): str(package) for header, package in headers.items()},
    )
    for split in ("validation", "test"):
        for name in getattr(dataset, split):
            if name not in packages:
                raise StageError(f"{path}: {split}: {name} is not a package of the dataset")
    return dataset


# ---------------------------------------------------------------------------------------------------------
# staging


def _matches(root: Path, pattern: str, where: str) -> list[str]:
    """``pattern`` relative to ``root``, as bash with nullglob expands it (a missing literal name is an error)."""
    if glob.has_magic(pattern):
        return sorted(glob.glob(pattern, root_dir=root))
    if not os.path.lexists(root / pattern):
        raise StageError(f"{where}: {root / pattern} does not exist")
    return [pattern]


def _copy_path(source: Path, target: Path) -> None:
    """``cp -pR``: contents, mode and mtimes; symbolic links as links."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        if target.is_symlink() or target.exists():
            target.unlink()
        os.symlink(os.readlink(source), target)
    elif source.is_dir():
        shutil.copytree(source, target, symlinks=True, copy_function=shutil.copy2, dirs_exist_ok=True)
        shutil.copystat(source, target)
    else:
        shutil.copy2(source, target)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))


def _substitute(text: bytes, rules: list[tuple[str, str]]) -> bytes:
    """Each line's first match of each rule replaced, rules in order (``sed -e 's/A/B/' -e ...``)."""
    if not rules:
        return text
    compiled = [(re.compile(pattern.encode()), replacement.encode()) for pattern, replacement in rules]
    lines = text.split(b"\n")
    for index, line in enumerate(lines):
        for pattern, replacement in compiled:
            line = pattern.sub(replacement, line, count=1)
        lines[index] = line
    return b"\n".join(lines)


def stage_project(project: Project, source: Path, stage: Path) -> int:
    """Stage ``project`` from the unpacked package ``source`` into ``stage/<name>``; returns its file count."""
    where = f"{project.name}"
    target = stage / project.name
    target.mkdir(parents=True, exist_ok=True)
    for item in project.copy:
        root = source / item.source
        if not root.is_dir():
            raise StageError(f"{where}: copy: {root} is not a directory")
        for pattern in item.files:
            for name in _matches(root, pattern, f"{where}: copy"):
                if item.into is None:
                    _copy_path(root / name, target / name)
                elif (root / name).is_dir() and not (root / name).is_symlink():
                    raise StageError(f"{where}: copy: {root / name} is a directory (into: copies files only)")
                else:
                    _copy_path(root / name, target / item.into / Path(name).name)
    for pattern in project.remove:
        for name in _matches(target, pattern, f"{where}: remove"):
            path = target / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    if project.included:
        (target / INCLUDED).mkdir(exist_ok=True)
        for name in project.included:
            path = target / name
            if not path.is_file():
                raise StageError(f"{where}: included: {name} is not a staged file")
            path.rename(target / INCLUDED / path.name)
    for name in project.generated:
        _write(target / name, (project.directory / name).read_bytes())
    for derived in project.derived:
        path = source / derived.source
        if not path.is_file():
            raise StageError(f"{where}: derived: {path} does not exist")
        _write(target / derived.to, _substitute(path.read_bytes(), derived.replace))
    _write(target / PRELUDE, project.prelude().encode())
    return sum(1 for path in target.rglob("*") if not path.is_dir())


def check_headers(dataset: Dataset, compiler: str = "gcc") -> None:
    """The system headers the build needs (``<zlib.h>`` ...): one line naming the package to install."""
    for header, package in dataset.system_headers.items():
        try:
            result = subprocess.run([compiler, "-E", "-x", "c", "-"], input=f"#include <{header}>\n",
                                    capture_output=True, text=True)
        except FileNotFoundError:
            raise StageError(f"{compiler} not found: needed to check <{header}>") from None
        if result.returncode != 0:
            raise StageError(f"<{header}> not found by {compiler}: install {header_package(package, compiler)}")


def stage(
    dataset: Dataset, src_dir: str | os.PathLike, mirror: Optional[str] = None, log: Callable[[str], None] = print,
    dpkg_source: Optional[str] = "auto",
) -> Path:
    """Download (when missing) and stage every project of ``dataset``; returns ``SRC_DIR/stage``."""
    src_dir = Path(os.path.abspath(src_dir))
    mirror = (mirror or default_mirror()).rstrip("/")
    cache: dict[str, Any] = {}

    def index():
        if "index" not in cache:
            log(f"index: {mirror}/dists/{dataset.suite}/{dataset.component}/source/Sources.xz")
            cache["index"] = fetch_index(mirror, dataset.suite, dataset.component)
        return cache["index"]

    src_dir.mkdir(parents=True, exist_ok=True)
    sources = {
        name: fetch_package(name, version, src_dir, index, mirror, dataset.suite, log=log, dpkg_source=dpkg_source)
        for name, version in dataset.packages.items()
    }
    stage_dir = src_dir / "stage"
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    stage_dir.mkdir()
    for name, project in dataset.projects.items():
        count = stage_project(project, sources[name], stage_dir)
        log(f"{name}: staged {count} files in {stage_dir / name}")
    return stage_dir


def pairs_command(dataset: Dataset, stage_dir: Path, output: str, workers: Optional[int] = None) -> list[str]:
    """The ``python -m undertale.data pairs`` arguments that build the dataset from the staged projects."""
    projects = [str(stage_dir / name) for name in sorted(dataset.projects)]
    command = ["python", "-m", "undertale.data", "pairs", str(output), *projects,
               "--levels", ",".join(dataset.levels)]
    command += ["--targets", ",".join(dataset.targets)] if dataset.targets else ["--compilers", ",".join(dataset.compilers)]
    for option, names in (("--validation-projects", dataset.validation), ("--test-projects", dataset.test)):
        if names:
            command += [option, ",".join(names)]
    if workers is not None:
        command += ["--workers", str(workers)]
    return command + [f"--cflags={dataset.cflags}"]


def summary(output: str | os.PathLike, log: Callable[[str], None] = print) -> None:
    """Rows and complete groups (present at every level) per split and project."""
    import collections
    import json

    from undertale.data.pairs.build import read_pairs

    manifest = json.loads((Path(output) / "manifest.json").read_text())
    failed = collections.Counter(item["project"] for item in manifest["failed"])
    log(f"{'split':<11} {'project':<12} {'rows':>7} {'groups':>7} {'complete':>8} {'complete rows':>13} {'failed':>6}")
    for split in ("train", "validation", "test"):
        everything = read_pairs(output, split, columns=["project", "group"])
        complete = read_pairs(output, split, columns=["project", "group"], complete=True)
        projects = everything.column("project").to_pylist()
        rows = collections.Counter(projects)
        groups = collections.Counter(p for p, _ in set(zip(projects, everything.column("group").to_pylist())))
        complete_projects = complete.column("project").to_pylist()
        crows = collections.Counter(complete_projects)
        cgroups = collections.Counter(p for p, _ in set(zip(complete_projects, complete.column("group").to_pylist())))
        for project in sorted(rows):
            log(f"{split:<11} {project:<12} {rows[project]:>7} {groups[project]:>7} {cgroups[project]:>8} "
                f"{crows[project]:>13} {failed[project]:>6}")
        log(f"{split:<11} {'(all)':<12} {sum(rows.values()):>7} {sum(groups.values()):>7} {sum(cgroups.values()):>8} "
            f"{sum(crows.values()):>13}")
    log(f"build: {manifest['seconds']} s; failed compilations: {manifest['counts']['failed_compilations']}")


def _compilers(dataset: Dataset) -> list[str]:
    """The compilers the build runs (each checked for the system headers): the targets' when it names targets."""
    if not dataset.targets:
        return dataset.compilers[:1] or ["gcc"]
    from undertale.data.pairs.targets import target_compilers

    try:
        return list(target_compilers(dataset.targets).values())
    except ValueError as error:
        raise StageError(f"{dataset.directory / 'dataset.yaml'}: {error}") from None


def run(dataset_dir: str, src_dir: str, mirror: Optional[str] = None, build: Optional[str] = None,
        workers: Optional[int] = None) -> None:
    """The ``stage`` command: stage, then either build the pairs (``build``) or print the command that does."""
    dataset = load_dataset(dataset_dir)
    if build is not None:
        for compiler in _compilers(dataset):
            check_headers(dataset, compiler)
    try:
        stage_dir = stage(dataset, src_dir, mirror=mirror)
    except SourceError as error:
        raise StageError(str(error)) from None
    command = pairs_command(dataset, stage_dir, build or "OUTPUT", workers)
    if build is None:
        print(f"staged {len(dataset.projects)} projects in {stage_dir}; build the pairs with:")
        print(shlex.join(command))
        return
    print(shlex.join(command), flush=True)
    from undertale.data.pairs.build import build_pairs

    build_pairs(
        build, command[5:5 + len(dataset.projects)], levels=",".join(dataset.levels),
        compilers=",".join(dataset.compilers), workers=workers, cflags=dataset.cflags,
        targets=",".join(dataset.targets) if dataset.targets else None,
        held_out={split: ",".join(names) for split, names in (("validation", dataset.validation),
                                                              ("test", dataset.test)) if names} or None,
    )
    summary(build)
    sys.stdout.flush()
