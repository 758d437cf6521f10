"""Read a Debian binary package (``.deb``) in Python, without dpkg: the ELF files it installs.

A ``.deb`` is an ``ar`` archive of ``debian-binary`` (``2.0``), ``control.tar.*`` and
``data.tar.{xz,gz,bz2,zst}`` (or an uncompressed ``data.tar``). :func:`deb_elf_files` streams the
``data.tar`` members and yields the regular files that start with ``\\x7fELF`` as bytes; a member
over ``max_member_bytes`` is skipped and counted. Debian's own packages compress ``data.tar`` with xz;
``zst`` (Ubuntu's default) needs the ``zstandard`` module.

Every failure is a :class:`DebError` (a ``ValueError``) with a one-line message.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zlib
from collections import Counter
from typing import BinaryIO, Iterator

AR_MAGIC = b"!<arch>\n"
ELF_MAGIC = b"\x7fELF"
# a member larger than this is not read (counted as "over size limit"); Debian's largest libraries
# (libLLVM, libgo) are about 100 MB
MAX_MEMBER_BYTES = 256 << 20


class DebError(ValueError):
    """A file that is not a readable ``.deb`` (the message says why, in one line)."""


def ar_members(handle: BinaryIO) -> Iterator[tuple[str, int, int]]:
    """(name, offset of the body, size) of each member of the ``ar`` archive open in ``handle``.

    Raises:
        DebError: when the file is not an ``ar`` archive or a member header is cut short or corrupt.
    """
    handle.seek(0, io.SEEK_END)
    end = handle.tell()
    handle.seek(0)
    if handle.read(8) != AR_MAGIC:
        raise DebError("not a .deb: no ar archive header")
    offset = 8
    while offset < end:
        handle.seek(offset)
        header = handle.read(60)
        if len(header) == 1 and header == b"\n":
            break
        if len(header) < 60 or header[58:60] != b"`\n":
            raise DebError(f"truncated or corrupt .deb: bad ar member header at offset {offset}")
        name = header[:16].decode("latin-1").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise DebError(f"corrupt .deb: bad ar member size at offset {offset}") from None
        if offset + 60 + size > end:
            raise DebError(f"truncated .deb: member {name} needs {size:,} bytes, {end - offset - 60:,} are left")
        yield name, offset + 60, size
        offset += 60 + size + (size & 1)


class _Slice(io.RawIOBase):
    """A read-only window ``[start, start + size)`` of an open file."""

    def __init__(self, handle: BinaryIO, start: int, size: int):
        self.handle, self.position, self.end = handle, start, start + size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.end - self.position)
        if count <= 0:
            return 0
        self.handle.seek(self.position)
        data = self.handle.read(count)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def _decompressed(name: str, raw: BinaryIO) -> BinaryIO:
    if name.endswith(".xz") or name.endswith(".lzma"):
        return lzma.LZMAFile(raw)
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if name.endswith(".bz2"):
        return bz2.BZ2File(raw)
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise DebError(f"{name} is zstd-compressed: install the zstandard package (pip install zstandard)") from None
        return zstandard.ZstdDecompressor().stream_reader(raw)
    if name == "data.tar":
        return raw
    raise DebError(f"unsupported data member {name}")


def deb_elf_files(
    path: str, skipped: Counter | None = None, max_member_bytes: int = MAX_MEMBER_BYTES
) -> Iterator[tuple[str, bytes]]:
    """Yield (path in the package, bytes) for each regular ELF file a ``.deb`` installs, in archive order.

    Paths are absolute (``/usr/bin/ls``). ``skipped`` (when given) counts the members left out by reason:
    ``not ELF``, ``over size limit``, ``not a regular file``.

    Raises:
        DebError: for a file that is not a ``.deb``, a truncated or corrupt one, or an unsupported compression.
    """
    skipped = skipped if skipped is not None else Counter()
    with open(path, "rb") as handle:
        members = list(ar_members(handle))
        names = [name for name, _, _ in members]
        if not names or names[0] != "debian-binary":
            raise DebError(f"not a .deb: first ar member is {names[0] if names else 'missing'}, not debian-binary")
        data = [(name, start, size) for name, start, size in members if name.startswith("data.tar")]
        if not data:
            raise DebError(f"not a .deb: no data.tar member (members: {', '.join(names)})")
        name, start, size = data[0]
        stream = _decompressed(name, io.BufferedReader(_Slice(handle, start, size), 1 << 20))
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    if not member.isreg():
                        if not member.isdir():
                            skipped["not a regular file"] += 1
                        continue
                    if member.size > max_member_bytes:
                        skipped["over size limit"] += 1
                        continue
                    extracted = archive.extractfile(member)
                    head = extracted.read(4)
                    if head != ELF_MAGIC:
                        skipped["not ELF"] += 1
                        continue
                    body = head + extracted.read()
                    if len(body) != member.size:
                        raise DebError(f"truncated .deb: {member.name} has {len(body):,} of {member.size:,} bytes")
                    inside = member.name[2:] if member.name.startswith("./") else member.name
                    yield "/" + inside.lstrip("/"), body
        except DebError:
            raise
        except (tarfile.TarError, lzma.LZMAError, EOFError, OSError, zlib.error) as error:
            raise DebError(f"truncated or corrupt .deb: {name}: {type(error).__name__}: {error}") from None
        except Exception as error:  # zstandard's ZstdError and others: still one line
            if type(error).__name__ == "ZstdError":
                raise DebError(f"truncated or corrupt .deb: {name}: {error}") from None
            raise

