"""The Debian archive over HTTP: the mirror this machine's apt uses, and checked, resumable downloads.

Shared by the corpus of binary packages (:mod:`undertale.data.corpus.debian`) and the staged source
packages of the pairs (:mod:`undertale.data.pairs.sources`). Nothing here writes under ``/etc`` or needs root.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from undertale import __version__

DEFAULT_MIRROR = "https://deb.debian.org/debian"
TIMEOUT_S = 60
CHUNK = 1 << 20


class ArchiveError(ValueError):
    """A download that failed, was cut short or has the wrong checksum (one line)."""


def file_sha256(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    """The SHA256 of a file's content, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def apt_mirrors(etc: str | os.PathLike = "/etc/apt") -> tuple[str, Optional[str]]:
    """(Debian mirror, security archive or None) from /etc/apt's sources: deb822 ``*.sources`` and one-line
    ``sources.list``/``*.list`` (``deb`` and ``deb-src``); (:data:`DEFAULT_MIRROR`, None) when none is a Debian
    archive. Only read, never written."""
    etc = Path(etc)
    uris: list[str] = []
    directory = etc / "sources.list.d"
    for path in sorted(directory.glob("*.sources")) if directory.is_dir() else []:
        try:
            text = path.read_text()
        except OSError:
            continue
        for paragraph in re.split(r"\n\s*\n", text):
            fields = dict(line.split(":", 1) for line in paragraph.splitlines() if ":" in line and line[:1].isalpha())
            types = fields.get("Types", "").split()
            if fields.get("Enabled", "yes").strip().lower() == "no" or not {"deb", "deb-src"} & set(types):
                continue
            uris += fields.get("URIs", "").split()
    for path in [etc / "sources.list", *(sorted(directory.glob("*.list")) if directory.is_dir() else [])]:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            match = re.match(r"\s*deb(?:-src)?\s+(?:\[[^\]]*\]\s+)?(\S+)", line)
            if match:
                uris.append(match.group(1))
    uris = [uri.rstrip("/") for uri in uris if re.match(r"https?://", uri)]
    mirror = next((uri for uri in uris if uri.endswith("/debian")), DEFAULT_MIRROR)
    security = next((uri for uri in uris if uri.endswith("/debian-security")), None)
    return mirror, security


def default_mirror() -> str:
    """The Debian mirror of /etc/apt's sources, else :data:`DEFAULT_MIRROR`."""
    return apt_mirrors()[0]


def open_url(url: str, offset: int = 0, timeout: float = TIMEOUT_S):
    """An HTTP response for ``url``, from byte ``offset`` on (a Range request) when it is positive."""
    request = urllib.request.Request(url, headers={"User-Agent": f"undertale/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


def download(url: str, target: Path, size: int, sha256: str, label: str) -> int:
    """``target`` with ``size`` bytes and ``sha256``: reused when already right, else downloaded, continuing a
    ``target.part`` left by an earlier try with a Range request; returns the bytes downloaded (0: reused).

    Raises:
        ArchiveError: ``<label>: <problem>`` for an HTTP error or an unreachable mirror, a download cut short
            (the ``.part`` is kept, so a rerun resumes) or a checksum mismatch (the file is removed).
    """
    if target.is_file():
        if target.stat().st_size == size and file_sha256(target) == sha256:
            return 0
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    offset = partial.stat().st_size if partial.exists() else 0
    if offset > size:
        partial.unlink()
        offset = 0
    downloaded = 0
    if offset < size:
        try:
            with open_url(url, offset) as response:
                resumed = offset and getattr(response, "status", 200) == 206
                with partial.open("ab" if resumed else "wb") as handle:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        handle.write(block)
                        downloaded += len(block)
        except urllib.error.HTTPError as error:
            raise ArchiveError(f"{label}: download {url}: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            raise ArchiveError(f"{label}: download {url} failed: {getattr(error, 'reason', error)} "
                               "(partial file kept; rerun to resume)") from None
    got_size = partial.stat().st_size
    if got_size < size:
        raise ArchiveError(f"{label}: truncated download: {got_size:,} of {size:,} bytes from {url} "
                           "(partial file kept; rerun to resume)")
    got = file_sha256(partial)
    if got_size != size or got != sha256:
        partial.unlink()
        raise ArchiveError(f"{label}: checksum mismatch: {url} has {got_size:,} bytes with SHA256 {got}, the index "
                           f"says {size:,} bytes with {sha256} (file removed; rerun to download it again)")
    partial.replace(target)
    return downloaded


def fetch_xz_index(url: str) -> str:
    """The text of an xz-compressed index (``Packages.xz``, ``Sources.xz``) at ``url``.

    Raises:
        ArchiveError: naming the URL, when the mirror is unreachable, answers with an HTTP error, or the
            file is not xz.
    """
    try:
        with open_url(url) as response:
            data = response.read()
        return lzma.decompress(data).decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        raise ArchiveError(f"index {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise ArchiveError(f"mirror unreachable: {url}: {getattr(error, 'reason', error)}") from None
    except (lzma.LZMAError, EOFError) as error:
        raise ArchiveError(f"index {url}: not an xz file ({error})") from None
