"""A corpus from pinned Debian binary packages: resolved in the mirror's index, downloaded by hash, read in Python.

**Package lists.** One package a line, ``name=version`` (amd64) or ``name:arch=version`` with ``arch`` one
of amd64, arm64, i386; ``#`` starts a comment; blank lines are allowed. :func:`parse_list` checks the
whole file before any work: a syntax error is one line ``FILE:LINE: ...``.

**Download.** The ``Packages.xz`` index of ``MIRROR/dists/SUITE/main/binary-ARCH/`` names each package
version's ``Filename``, ``Size``, ``SHA256`` and ``Section``. A pin the suite lacks is looked up in
``SUITE-updates`` on the same mirror, then in ``SUITE-security`` on the security archive (the
``debian-security`` URI of /etc/apt, else ``MIRROR-security``); each index is fetched once per run and
only when a pin needs it. The ``.deb`` is downloaded to ``CACHE/debs/<sha256>.deb`` through a ``.part``
file that a later run continues with an HTTP Range request, and its size and SHA256 are checked
against the index. Nothing is written outside the cache, no root is needed, dpkg and apt are not used.

**Build.** One thread downloads the packages in build order and feeds each finished ``.deb`` to the
process pool that reads it (:func:`undertale.data.corpus.deb.deb_elf_files`) and disassembles its ELF
files (:func:`undertale.data.corpus.read.read_bytes`, within the per-file limits of the options):
downloading and disassembly overlap. The split is by package name (the amd64 and arm64 builds of a
package go to the same split; no package straddles train and validation). The pool is supervised
(:mod:`undertale.data.corpus.supervise`): a worker that dies stops the build, naming the package and
the file it was reading; a worker stuck on one file is stopped and the package read again without it.

**Failures.** A pin the index lacks, a mirror that is down, a checksum mismatch, a truncated download
or a file that is not a ``.deb`` is one line naming the package and the problem. The other packages are
built (and their downloads stay in the cache for the next run); the manifest and its summary list the
failed packages with their reasons. A pinned corpus with a package missing is not the pinned corpus,
so a failure fails the build (exit 2, after building the rest and writing its manifest) unless
``allow_missing`` is set; a corpus with failed packages is never reused as is: the next run retries them.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from undertale import __version__
from undertale.data.corpus.build import (
    FORMAT_VERSION,
    SPLITS,
    CorpusOptions,
    CorpusWriter,
    finish_manifest,
    load_manifest,
    split_of,
)
from undertale.data.archive import ArchiveError, apt_mirrors, download, fetch_xz_index
from undertale.data.corpus.deb import AR_MAGIC, MAX_MEMBER_BYTES, DebError, deb_elf_files
from undertale.data.corpus.limits import OVER_TIME
from undertale.data.corpus.read import FileResult, read_bytes
from undertale.data.corpus.supervise import PENDING, Retry, SupervisedPool, working_on
from undertale.settings.data import FileLimits, default_cache_dir

ARCHITECTURES = ("amd64", "arm64", "i386")
DEFAULT_ARCHITECTURE = "amd64"
DEFAULT_SUITE = "bookworm"
COMPONENT = "main"
_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_VERSION = re.compile(r"^(?:[0-9]+:)?[0-9][A-Za-z0-9.+~:-]*$")


class DebianError(ValueError):
    """A package that could not be resolved or downloaded (one line, naming the package)."""


@dataclass(frozen=True)
class Pin:
    """One line of a package list."""

    name: str
    version: str
    arch: str = DEFAULT_ARCHITECTURE

    @property
    def spec(self) -> str:
        """``name:arch=version``: how the package is named in messages and in the manifest."""
        return f"{self.name}:{self.arch}={self.version}"

    @property
    def label(self) -> str:
        """``name_version_arch`` (Debian's file name, without the epoch's colon): the prefix of the rows' source."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}"


@dataclass(frozen=True)
class DebEntry:
    """A package version as the ``Packages`` index describes it."""

    name: str
    version: str
    arch: str
    filename: str
    size: int
    sha256: str
    section: str
    base: str = ""  # archive root the filename is relative to
    dist: str = ""  # the suite it was found in

    @property
    def url(self) -> str:
        return f"{self.base.rstrip('/')}/{self.filename}"


def parse_list(path: str | os.PathLike) -> list[Pin]:
    """The pins of a package list file, checked line by line.

    Raises:
        ValueError: ``FILE:LINE: problem`` for the first bad line (or a missing/empty file).
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the package list: {error}") from None
    pins: list[Pin] = []
    where: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([^\s:=]+)(?::([^\s=]+))?=(\S+)", line)
        if not match:
            raise ValueError(f"{path}:{number}: expected name=version or name:arch=version, got {line!r}")
        name, arch, version = match.group(1), match.group(2) or DEFAULT_ARCHITECTURE, match.group(3)
        if not _NAME.match(name):
            raise ValueError(f"{path}:{number}: {name!r} is not a Debian package name")
        if arch not in ARCHITECTURES:
            raise ValueError(f"{path}:{number}: architecture {arch!r} is not one of {', '.join(ARCHITECTURES)}")
        if not _VERSION.match(version):
            raise ValueError(f"{path}:{number}: {version!r} is not a Debian version")
        if (name, arch) in where:
            raise ValueError(f"{path}:{number}: {name}:{arch} is already pinned on line {where[name, arch]}")
        where[name, arch] = number
        pins.append(Pin(name, version, arch))
    if not pins:
        raise ValueError(f"{path}: the package list names no package")
    return pins


def parse_packages(text: str) -> dict[str, list[DebEntry]]:
    """The entries of a ``Packages`` index by package name (only the fields a download needs)."""
    entries: dict[str, list[DebEntry]] = {}
    wanted = ("Package", "Version", "Architecture", "Filename", "Size", "SHA256", "Section")
    for paragraph in text.split("\n\n"):
        fields = {}
        for line in paragraph.splitlines():
            key, _, value = line.partition(":")
            if key in wanted:
                fields[key] = value.strip()
        if not all(key in fields for key in ("Package", "Version", "Filename", "Size", "SHA256")):
            continue
        entry = DebEntry(fields["Package"], fields["Version"], fields.get("Architecture", ""), fields["Filename"],
                         int(fields["Size"]), fields["SHA256"], fields.get("Section", ""))
        entries.setdefault(entry.name, []).append(entry)
    return entries


def fetch_packages_index(base: str, dist: str, arch: str) -> dict[str, list[DebEntry]]:
    """The parsed ``Packages.xz`` of ``dist``'s main component for ``arch`` at the archive ``base``.

    Raises:
        DebianError: naming the URL, when it cannot be downloaded or decompressed.
    """
    url = f"{base.rstrip('/')}/dists/{dist}/{COMPONENT}/binary-{arch}/Packages.xz"
    try:
        text = fetch_xz_index(url)
    except ArchiveError as error:
        raise DebianError(str(error)) from None
    return {name: [DebEntry(**{**asdict(entry), "base": base, "dist": dist}) for entry in found]
            for name, found in parse_packages(text).items()}


class Resolver:
    """Pins to index entries, looking in ``suite``, then ``suite-updates``, then the security archive.

    Each index is fetched once, on first need (thread-safe); an archive whose index is missing (HTTP
    404) is skipped for the pins that fall through to it. The main suite's failure is the pin's error.
    """

    def __init__(self, mirror: str, suite: str, security: Optional[str] = None):
        self.archives = [(mirror, suite), (mirror, f"{suite}-updates")]
        self.archives.append((security or (mirror + "-security" if mirror.endswith("/debian") else ""), f"{suite}-security"))
        self.archives = [(base, dist) for base, dist in self.archives if base]
        self.mirror, self.suite = mirror, suite
        self.indexes: dict[tuple[str, str, str], dict[str, list[DebEntry]] | DebianError] = {}
        self.lock = threading.Lock()

    def _index(self, base: str, dist: str, arch: str) -> dict[str, list[DebEntry]] | DebianError:
        with self.lock:
            if (base, dist, arch) not in self.indexes:
                try:
                    self.indexes[base, dist, arch] = fetch_packages_index(base, dist, arch)
                except DebianError as error:
                    self.indexes[base, dist, arch] = error
            return self.indexes[base, dist, arch]

    def resolve(self, pin: Pin) -> DebEntry:
        """The index entry of ``pin``.

        Raises:
            DebianError: ``name:arch=version: problem``, naming what the suite has instead.
        """
        others: set[str] = set()
        for position, (base, dist) in enumerate(self.archives):
            index = self._index(base, dist, pin.arch)
            if isinstance(index, DebianError):
                if position == 0:
                    raise DebianError(f"{pin.spec}: {index}")
                continue
            for entry in index.get(pin.name, []):
                if entry.version == pin.version:
                    return entry
                others.add(entry.version)
        where = f"{self.suite} (and -updates, -security) at {self.mirror} for {pin.arch}"
        if not others:
            raise DebianError(f"{pin.spec}: no package {pin.name} in {where}")
        raise DebianError(f"{pin.spec}: version {pin.version} not in {where}, which has {', '.join(sorted(others))}")


def deb_path(cache: Path, sha256: str) -> Path:
    return cache / "debs" / f"{sha256}.deb"


def download_deb(pin: Pin, entry: DebEntry, cache: Path) -> tuple[Path, int]:
    """``CACHE/debs/<sha256>.deb`` of ``entry`` (downloaded, or reused when its size and SHA256 are right);
    returns the path and the number of bytes downloaded. A ``.part`` file is continued with a Range request.

    Raises:
        DebianError: ``name:arch=version: problem`` for an unreachable mirror, an HTTP error, a truncated
            download (its ``.part`` is kept to resume), a checksum mismatch (the file is removed) or a
            file that is not a ``.deb``.
    """
    target = deb_path(cache, entry.sha256)
    try:
        downloaded = download(entry.url, target, entry.size, entry.sha256, pin.spec)
    except ArchiveError as error:
        raise DebianError(str(error)) from None
    with target.open("rb") as handle:
        if handle.read(8) != AR_MAGIC:
            target.unlink()
            raise DebianError(f"{pin.spec}: not a .deb: {entry.url} is no ar archive (file removed)")
    return target, downloaded


# ---------------------------------------------------------------------------------------------- build

@dataclass
class PackageResult:
    """What one worker read from one ``.deb``."""

    spec: str
    files: list[FileResult] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    error: Optional[str] = None

    def pieces(self) -> Iterator[Any]:
        """This result without its files, then each file's :meth:`FileResult.pieces` (see :meth:`assemble`)."""
        yield PackageResult(self.spec, skipped=self.skipped, error=self.error)
        for item in self.files:
            yield from item.pieces()

    @staticmethod
    def assemble(pieces: list) -> "PackageResult":
        result = pieces[0]
        result.files = FileResult.assemble(pieces[1:])
        return result


_WORKER_SEEN: set[str] = set()  # content hashes this worker process has decoded during the current build


def _start_worker() -> None:
    _WORKER_SEEN.clear()


def read_deb(path: str, pin: Pin, min_instructions: int = 1, max_member_bytes: int = MAX_MEMBER_BYTES,
             seen: Optional[set[str]] = None, limits: Optional[FileLimits] = None,
             skip: Optional[dict[str, str]] = None) -> PackageResult:
    """Every ELF file of one ``.deb`` decoded into corpus rows (sources ``name_version_arch:/path``), each
    within ``limits``; never raises for a bad package: its problem is ``error``.

    ``skip`` maps files inside the package to the reason they are not read (a file whose worker had to be
    stopped); they are listed as skipped with that reason.
    """
    result = PackageResult(pin.spec)
    try:
        for inside, data in deb_elf_files(path, result.skipped, max_member_bytes):
            source = f"{pin.label}:{inside}"
            if skip and inside in skip:
                result.files.append(FileResult(source, error=skip[inside]))
                continue
            working_on(inside)
            result.files.append(read_bytes(data, source, min_instructions, seen, limits=limits))
    except DebError as error:
        result.error = f"{pin.spec}: {error}"
        result.files = []
    return result


# (path or None, pin, download error, min_instructions, max_member_bytes, limits, files not to read)
_Job = tuple[Optional[str], Pin, Optional[str], int, int, FileLimits, dict[str, str]]


def _read_job(job: _Job) -> PackageResult:
    path, pin, error, min_instructions, max_member_bytes, limits, skip = job
    if path is None:
        return PackageResult(pin.spec, error=error)
    return read_deb(path, pin, min_instructions, max_member_bytes, seen=_WORKER_SEEN, limits=limits, skip=skip)


def _package_pieces(result: PackageResult) -> Iterator[Any]:
    return result.pieces()


def _stopped(job: _Job, item: str, seconds: float) -> PackageResult | Retry:
    """A package whose worker was stopped after ``seconds`` on ``item``: read it again without that file,
    or, when that file was already left out (the time went elsewhere), the package fails."""
    path, pin, error, min_instructions, max_member_bytes, limits, skip = job
    reason = (f"{OVER_TIME}: still reading after {seconds:.0f} s of wall-clock time (3 x max_file_seconds + 30 s); "
              "its worker was stopped")
    if item != pin.spec and item not in skip:
        return Retry((path, pin, error, min_instructions, max_member_bytes, limits, {**skip, item: reason}))
    return PackageResult(pin.spec, error=f"{pin.spec}: {reason} ({item})")


def debian_key(pins: Sequence[Pin], options: CorpusOptions, max_member_bytes: int = MAX_MEMBER_BYTES) -> str:
    """The cache lookup key of a Debian corpus: the pinned list (versions are immutable in an archive) and the
    options; mirror and suite are not part of it."""
    return hashlib.sha256(json.dumps(
        [__version__, FORMAT_VERSION, asdict(options), sorted(pin.spec for pin in pins), max_member_bytes]
    ).encode()).hexdigest()


def build_order(pins: Sequence[Pin], options: CorpusOptions) -> tuple[list[Pin], dict[str, str]]:
    """Pins in build order (validation packages first, each split in a seeded order) and each package
    name's split."""
    splits = split_of(sorted({pin.name for pin in pins}), options.seed, options.validation_fraction)
    rank = lambda pin: hashlib.blake2b(f"order:{options.seed}:{pin.spec}".encode()).digest()  # noqa: E731
    order = sorted(pins, key=lambda pin: (splits[pin.name] != "validation", rank(pin)))
    return order, splits


def _log(message: str) -> None:
    print(message, flush=True)


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def build_debian_corpus(
    output: str | os.PathLike,
    packages: str | os.PathLike | Sequence[Pin],
    options: Optional[CorpusOptions] = None,
    workers: Optional[int] = None,
    mirror: Optional[str] = None,
    suite: str = DEFAULT_SUITE,
    cache_dir: Optional[str | os.PathLike] = None,
    allow_missing: bool = False,
    progress: bool = True,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    log: Callable[[str], None] = _log,
    errors: Optional[Callable[[str], None]] = None,
    source_file: Optional[str] = None,
) -> dict:
    """Download the pinned packages (or reuse them from ``cache_dir/debs``) and build their corpus in ``output``.

    Arguments:
        output: corpus directory.
        packages: a package list file (see :func:`parse_list`) or its pins.
        options: seed, split, limits.
        workers: reading processes (default: all cores).
        mirror: Debian archive URL (default: /etc/apt's, else https://deb.debian.org/debian).
        suite: the suite whose index pins are resolved in.
        cache_dir: where ``debs/<sha256>.deb`` are kept (default: ``$UNDERTALE_CACHE``, else ``~/.cache/undertale``).
        allow_missing: a package that fails is listed in the manifest, and the build still succeeds.
        progress: print progress lines and the summary.
        max_member_bytes: files in a package larger than this are skipped (counted).

    Returns:
        The manifest (also written to ``output/manifest.json``).

    Raises:
        ValueError: a package list syntax error (before any work), no functions at all, or (without
            ``allow_missing``) packages that failed, after building the others and writing the manifest.
        WorkerLost: a worker process died or failed (named with its package and file); no manifest is written.
    """
    errors = errors or _error
    if isinstance(packages, (str, os.PathLike)):
        source_file = str(packages)
        pins = parse_list(packages)
    else:
        pins = list(packages)
    options = options or CorpusOptions()
    output = Path(output)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = debian_key(pins, options, max_member_bytes)
    existing = load_manifest(output)
    if existing is not None and existing.get("key") == key and not existing.get("failed_packages"):
        if progress:
            log(f"corpus: reusing {output} ({existing['counts']['functions']:,} functions, "
                f"fingerprint {existing.get('fingerprint')})")
        return existing
    if mirror:
        mirror, security = mirror.rstrip("/"), None
    else:
        mirror, security = apt_mirrors()
    resolver = Resolver(mirror, suite, security)
    order, splits = build_order(pins, options)
    total = len(order)
    corpus = CorpusWriter(output, options, [splits[pin.name] for pin in pins])
    entries: dict[str, DebEntry] = {}
    failed: dict[str, str] = {}
    downloads = Counter()
    stop = threading.Event()
    ready: "queue.Queue[tuple[Pin, Optional[str], Optional[str]]]" = queue.Queue(maxsize=max(4, 2 * (workers or 2)))
    started = time.perf_counter()

    def download_all() -> None:
        for number, pin in enumerate(order, 1):
            if stop.is_set():
                return
            try:
                entry = resolver.resolve(pin)
                entries[pin.spec] = entry
                path, fetched = download_deb(pin, entry, cache)
                downloads["bytes"] += fetched
                downloads["cached" if not fetched else "downloaded"] += 1
                item = (pin, str(path), None)
                if progress:
                    log(f"download {number}/{total}: {pin.spec} {entry.size / 1e6:.1f} MB "
                        f"({'cached' if not fetched else 'downloaded'}; {downloads['bytes'] / 1e6:,.1f} MB "
                        f"downloaded so far)")
            except DebianError as error:
                item = (pin, None, str(error))
            except Exception as error:  # a bug must not hang the pool waiting for this package
                item = (pin, None, f"{pin.spec}: {type(error).__name__}: {error}")
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def jobs() -> Iterator[Any]:
        for _ in order:
            while True:
                if stop.is_set():
                    return
                try:
                    pin, path, error = ready.get(timeout=0.1)
                    break
                except queue.Empty:
                    yield PENDING  # the pool watches its workers meanwhile
            yield path, pin, error, options.min_instructions, max_member_bytes, options.limits, {}

    downloader = threading.Thread(target=download_all, name="deb-download", daemon=True)
    downloader.start()
    workers = max(1, min(workers or os.cpu_count() or 1, total))
    records: list[dict] = []
    full = {split: False for split in SPLITS}
    try:
        with SupervisedPool(_read_job, workers, options.limits, initializer=_start_worker,
                            describe=lambda job: job[1].spec, split=_package_pieces, join=PackageResult.assemble,
                            on_timeout=_stopped) as pool:
            results = pool.imap(jobs())
            for number, (pin, result) in enumerate(zip(order, results), 1):
                split = splits[pin.name]
                if result.error is not None:
                    failed[pin.spec] = result.error
                    errors(result.error)
                    continue
                entry = entries[pin.spec]
                files = []
                for item in result.files:
                    if not full[split]:
                        full[split] = corpus.add(item, split)
                    files.append({"path": item.path.split(":", 1)[1], "sha256": item.sha256, "size": item.size,
                                  **({"skipped": item.error} if item.error else {})})
                records.append({
                    "package": pin.name, "version": pin.version, "arch": pin.arch, "split": split,
                    "filename": entry.filename, "size": entry.size, "sha256": entry.sha256, "section": entry.section,
                    "suite": entry.dist, "elf_files": len(files), "skipped_members": dict(result.skipped),
                    "files": files,
                })
                if progress:
                    totals = corpus.totals
                    log(f"read {number}/{total}: {pin.spec} {len(files)} ELF files; {totals['files']:,} files, "
                        f"{totals['functions']:,} functions, {totals['instructions']:,} instructions so far "
                        f"({time.perf_counter() - started:.0f} s)")
                if all(full.values()):
                    if progress:  # say why the workers stop before every package was read
                        log(f"corpus: max_functions ({options.max_functions:,}) reached after {number:,} of {total:,} "
                            "packages; the rest are not read")
                    break
    finally:
        stop.set()
        downloader.join(timeout=5)
    if not corpus.totals["functions"]:
        if failed:
            raise ValueError(f"{len(failed)} of {total} packages failed and no functions were read "
                             f"(each is named above); rerun to retry")
        raise ValueError(f"no functions found in the {total} packages of {source_file or 'the list'}")
    shards = corpus.close()
    elapsed = time.perf_counter() - started
    records.sort(key=lambda record: (record["package"], record["arch"]))
    manifest = {
        "undertale_version": __version__,
        "format_version": FORMAT_VERSION,
        "source": "debian",
        "key": key,
        "packages_file": source_file,
        "mirror": mirror,
        "suite": suite,
        "deb_cache": str(cache),
        "allow_missing": allow_missing,
        "max_member_bytes": max_member_bytes,
        "pins": sorted(pin.spec for pin in pins),
        "files": sum(record["elf_files"] for record in records),
        "parameters": asdict(options) | {"workers": workers},
        "counts": corpus.counts() | {
            "packages": len(records), "packages_failed": len(failed),
            "downloaded_bytes": downloads["bytes"], "deb_bytes": sum(record["size"] for record in records),
        },
        "failed_packages": dict(sorted(failed.items())),
        "packages": records,
    }
    manifest = finish_manifest(output, manifest, corpus, shards, elapsed, log if progress else None)
    if failed and not allow_missing:
        raise ValueError(f"{len(failed)} of {total} packages failed (named above and in {output / 'manifest.json'}); "
                         "the packages that worked are cached: rerun to retry, or pass --allow-missing "
                         "(data.allow_missing=true) to accept the corpus without them")
    return manifest
