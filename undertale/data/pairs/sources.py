"""Debian source packages, pinned by version, downloaded without apt and without root.

The ``Sources.xz`` index of a suite (``MIRROR/dists/SUITE/COMPONENT/source/Sources.xz``) names each
package version's files (``.dsc``, tarballs) with their SHA256; :func:`fetch_package` downloads them
(resuming a partial download), checks each SHA256 and unpacks the package with ``dpkg-source -x`` (as
``apt-get source`` does) into ``SRC_DIR/<package>-<upstream version>/``. Without ``dpkg-source`` a
``3.0 (quilt)`` package without patches or a ``3.0 (native)`` one is unpacked in Python; any other needs
``dpkg-source`` (package dpkg-dev). A package already unpacked there is reused as is, and files already
downloaded (with the right SHA256) are not downloaded again.

Every failure is a :class:`SourceError` (a ``ValueError``) with a one-line message.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from undertale.data.archive import ArchiveError, download, fetch_xz_index



class SourceError(ValueError):
    """A download, checksum or unpack failure (one line)."""


@dataclass(frozen=True)
class SourceFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SourceEntry:
    """One version of one source package in a ``Sources`` index."""

    package: str
    version: str
    directory: str
    format: str
    files: tuple[SourceFile, ...]

    @property
    def dsc(self) -> SourceFile:
        return next(file for file in self.files if file.name.endswith(".dsc"))


def upstream_version(version: str) -> str:
    """``1:1.2.13.dfsg-1`` -> ``1.2.13.dfsg``: no epoch, no Debian revision."""
    version = version.split(":", 1)[1] if ":" in version else version
    return version.rsplit("-", 1)[0] if "-" in version else version


def unpacked_name(package: str, version: str) -> str:
    """The directory ``dpkg-source -x`` (and ``apt-get source``) unpacks a package into."""
    return f"{package}-{upstream_version(version)}"


def parse_sources(text: str) -> dict[str, list[SourceEntry]]:
    """The entries of a ``Sources`` index by package name (several versions may be listed)."""
    entries: dict[str, list[SourceEntry]] = {}
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if "Package" not in fields or "Version" not in fields:
            continue
        files = []
        for line in fields.get("Checksums-Sha256", "").splitlines():
            parts = line.split()
            if len(parts) == 3:
                files.append(SourceFile(name=parts[2], size=int(parts[1]), sha256=parts[0]))
        entry = SourceEntry(package=fields["Package"], version=fields["Version"], directory=fields.get("Directory", ""),
                            format=fields.get("Format", ""), files=tuple(files))
        entries.setdefault(entry.package, []).append(entry)
    return entries


def fetch_index(mirror: str, suite: str, component: str = "main") -> dict[str, list[SourceEntry]]:
    """The ``Sources.xz`` index of ``suite`` at ``mirror``, parsed."""
    url = f"{mirror.rstrip('/')}/dists/{suite}/{component}/source/Sources.xz"
    try:
        return parse_sources(fetch_xz_index(url))
    except ArchiveError as error:
        raise SourceError(str(error)) from None


def find_entry(index: dict[str, list[SourceEntry]], package: str, version: str, where: str) -> SourceEntry:
    """The pinned ``version`` of ``package``; one clear line when the index has another one."""
    entries = index.get(package, [])
    for entry in entries:
        if entry.version == version:
            return entry
    if not entries:
        raise SourceError(f"{package}: pinned version {version} not found: {where} has no source package {package}")
    others = ", ".join(sorted({entry.version for entry in entries}))
    raise SourceError(f"{package}: pinned version {version} not found: {where} has {package} {others}")


def download_file(url: str, target: Path, expected: SourceFile) -> bool:
    """Download ``url`` to ``target`` (resuming ``target.part``) and check its size and SHA256.

    Returns False when ``target`` was already there with the right SHA256 (nothing downloaded).
    """
    reused = target.is_file() and target.stat().st_size == expected.size
    try:
        downloaded = download(url, target, expected.size, expected.sha256, target.name)
    except ArchiveError as error:
        raise SourceError(str(error)) from None
    return not (reused and downloaded == 0)


def _strip_first(members: list[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    kept = []
    for member in members:
        parts = Path(member.name).parts
        if len(parts) <= 1:
            continue
        member.name = str(Path(*parts[1:]))
        kept.append(member)
    return kept


def _extract(tarball: Path, into: Path, strip: bool) -> None:
    with tarfile.open(tarball) as archive:
        members = archive.getmembers()
        if strip:
            members = _strip_first(members)
        for member in members:
            if member.name.startswith("/") or ".." in Path(member.name).parts or member.islnk() or member.isdev():
                raise SourceError(f"{tarball.name}: unsafe member {member.name!r}")
        archive.extractall(into, members=members, filter="tar") if hasattr(tarfile, "data_filter") \
            else archive.extractall(into, members=members)


def _python_unpack(entry: SourceEntry, src_dir: Path, target: Path) -> None:
    """``3.0 (quilt)`` without patches or ``3.0 (native)``, unpacked without dpkg-source."""
    names = [file.name for file in entry.files if not file.name.endswith(".dsc") and not file.name.endswith(".asc")]
    orig = [name for name in names if ".orig." in name and ".orig-" not in name]
    debian = [name for name in names if ".debian.tar." in name]
    if entry.format == "3.0 (native)" and len(names) == 1:
        _extract(src_dir / names[0], target, strip=True)
        return
    if entry.format != "3.0 (quilt)" or len(orig) != 1 or len(debian) != 1 or len(names) != 2:
        raise SourceError(f"{entry.package}: format {entry.format or '?'} with files {', '.join(names)} needs "
                          "dpkg-source to unpack (install dpkg-dev)")
    _extract(src_dir / orig[0], target, strip=True)
    if (target / "debian").exists():
        shutil.rmtree(target / "debian")
    _extract(src_dir / debian[0], target, strip=False)
    series = target / "debian" / "patches" / "series"
    if series.exists() and any(line.split("#", 1)[0].strip() for line in series.read_text().splitlines()):
        raise SourceError(f"{entry.package}: has Debian patches: dpkg-source is needed to apply them "
                          "(install dpkg-dev)")


def unpack(entry: SourceEntry, src_dir: Path, target: Path, dpkg_source: Optional[str]) -> None:
    """Unpack ``entry`` (its files in ``src_dir``) into ``target``, through a temporary directory so that an
    interrupted unpack leaves nothing that a rerun would take for done."""
    scratch = Path(tempfile.mkdtemp(prefix=f".unpack-{entry.package}-", dir=src_dir))
    try:
        inner = scratch / target.name
        if dpkg_source:
            result = subprocess.run(
                [dpkg_source, "--no-check", "-x", str(src_dir / entry.dsc.name), str(inner)],
                cwd=src_dir, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"},
            )
            if result.returncode != 0:
                last = (result.stderr.strip() or result.stdout.strip() or "?").splitlines()[-1]
                raise SourceError(f"{entry.package}: dpkg-source -x failed: {last}")
        else:
            inner.mkdir()
            _python_unpack(entry, src_dir, inner)
        inner.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fetch_package(
    package: str, version: str, src_dir: Path, index: Callable[[], dict[str, list[SourceEntry]]], mirror: str,
    suite: str, log: Callable[[str], None] = print, dpkg_source: Optional[str] = "auto",
) -> Path:
    """``SRC_DIR/<package>-<upstream version>/``: reused when there, else downloaded and unpacked.

    ``index`` is called (once per run by the caller's cache) only when something has to be downloaded.
    """
    target = src_dir / unpacked_name(package, version)
    if target.is_dir():
        log(f"{package} {version}: unpacked in {target} (reused)")
        return target
    entry = find_entry(index(), package, version, f"{mirror} {suite}")
    src_dir.mkdir(parents=True, exist_ok=True)
    fetched = 0
    for file in entry.files:
        url = f"{mirror.rstrip('/')}/{entry.directory}/{file.name}"
        fetched += download_file(url, src_dir / file.name, file)
    total = sum(file.size for file in entry.files)
    log(f"{package} {version}: {len(entry.files)} files ({total / 1e6:.1f} MB), {fetched} downloaded, "
        f"SHA256 checked")
    if dpkg_source == "auto":
        dpkg_source = shutil.which("dpkg-source")
    unpack(entry, src_dir, target, dpkg_source)
    log(f"{package} {version}: unpacked in {target}")
    return target
