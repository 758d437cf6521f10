"""Find functions in ELF files: their names, addresses and bytes.

Boundaries come from the symbol tables (``.symtab``, ``.dynsym``) and, for
stripped binaries, from the unwind table (``.eh_frame`` FDEs record the start
and length of nearly every function). ``ar`` archives (``.a``) are opened
member by member.

Nothing a file claims is trusted: a function that starts outside its section is
dropped, one that runs past its section's end is cut at the next function's start
(or the section's end), a file whose functions add up to more than
:data:`MAX_OVERLAP` times its code is refused (sizes that each stay inside the
section but overlap: decoding them would cost the square of the code's size),
and a section is read only up to ``max_section_bytes`` (a compressed one is
refused before it is unpacked).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from undertale.data.corpus.limits import OVER_SECTION, OVERLAPPING, LimitExceeded

ELF_MAGIC = b"\x7fELF"
AR_MAGIC = b"!<arch>\n"

# e_machine -> architecture name understood by undertale.data.corpus.disassembly
ARCHITECTURES = {"EM_X86_64": "x86-64", "EM_386": "x86", "EM_AARCH64": "aarch64"}

SHF_EXECINSTR = 0x4
SYMBOLS_AT_ONCE = 1 << 16  # symbols (or unwind entries) read between two checks of the file's limits
# the most a file's functions may add up to, in multiples of its code: 1.0 at most in the 1,596 ELF files
# of a Debian machine (/usr/bin, /usr/lib); far more only when a symbol table makes functions overlap
MAX_OVERLAP = 4


def _nothing() -> None:
    pass


class UnsupportedFile(Exception):
    """A file that is skipped on purpose (not ELF, another architecture, ...); the message is the reason."""


@dataclass(frozen=True)
class FunctionBytes:
    """One function's code, as found in a binary."""

    name: str
    address: int
    code: bytes


@dataclass(frozen=True)
class _Section:
    address: int
    data: bytes
    index: int


def data_kind(data: bytes) -> Optional[str]:
    """``"elf"``, ``"ar"`` or None, from the magic bytes at the start of ``data``."""
    if data.startswith(ELF_MAGIC):
        return "elf"
    if data[:8] == AR_MAGIC:
        return "ar"
    return None


def file_kind(path: str) -> Optional[str]:
    """``"elf"``, ``"ar"`` or None, from the file's magic bytes."""
    with open(path, "rb") as handle:
        return data_kind(handle.read(8))


def archive_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Yield (name, bytes) for each ELF member of a System V / GNU ``ar`` archive."""
    offset = len(AR_MAGIC)
    names = b""
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode("latin-1").strip()
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as error:
            raise ELFError(f"corrupt ar member header at offset {offset}") from error
        body = data[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size & 1)
        if name == "//":
            names = body
        elif name.startswith("/") and name[1:].isdigit() and names:
            start = int(name[1:])
            name = names[start : names.index(b"/\n", start)].decode("latin-1")
        if body.startswith(ELF_MAGIC):
            yield name.rstrip("/"), body


def elf_architecture(elf: ELFFile) -> str:
    """Architecture name of an opened ELF file.

    Raises:
        UnsupportedFile: for machines the disassembler does not handle.
    """
    machine = elf["e_machine"]
    if machine not in ARCHITECTURES:
        raise UnsupportedFile(f"unsupported architecture {machine}")
    return ARCHITECTURES[machine]


def _read_encoded(data: bytes, offset: int, encoding: int, field_address: int, pointer_size: int) -> tuple[int, int]:
    """Read a DWARF EH pointer; returns (value, new offset)."""
    form = encoding & 0x0F
    if form == 0x00:
        size, fmt = pointer_size, "<Q" if pointer_size == 8 else "<I"
    elif form in (0x01, 0x09):
        value, offset = _leb128(data, offset, signed=form == 0x09)
        return value + (field_address if encoding & 0x70 == 0x10 else 0), offset
    else:
        size, fmt = {0x02: (2, "<H"), 0x03: (4, "<I"), 0x04: (8, "<Q"), 0x0A: (2, "<h"), 0x0B: (4, "<i"), 0x0C: (8, "<q")}[
            form
        ]
    (value,) = struct.unpack_from(fmt, data, offset)
    application = encoding & 0x70
    if application == 0x10:
        value += field_address
    elif application != 0x00:
        raise ValueError(f"unsupported pointer encoding {encoding:#x}")
    return value & ((1 << (8 * pointer_size)) - 1), offset + size


def _leb128(data: bytes, offset: int, signed: bool = False) -> tuple[int, int]:
    """A LEB128 number at ``offset``; returns (value, offset after it)."""
    value, shift = 0, 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if signed and byte & 0x40:
        value -= 1 << shift
    return value, offset


def eh_frame_functions(data: bytes, section_address: int, pointer_size: int,
                       check: Callable[[], None] = _nothing) -> list[tuple[int, int]]:
    """(start, length) of every FDE in an ``.eh_frame`` section; unreadable CIEs are skipped.

    ``check`` is called every :data:`SYMBOLS_AT_ONCE` entries (it may raise to stop)."""
    functions = []
    encodings: dict[int, Optional[int]] = {}
    offset = 0
    entries = 0
    while offset + 8 <= len(data):
        entries += 1
        if entries % SYMBOLS_AT_ONCE == 0:
            check()
        (length,) = struct.unpack_from("<I", data, offset)
        if length == 0:
            break
        header = 4
        if length == 0xFFFFFFFF:
            (length,) = struct.unpack_from("<Q", data, offset + 4)
            header = 12
        start, end = offset + header, offset + header + length
        if end > len(data):
            break
        id_size = 8 if header == 12 else 4
        (entry_id,) = struct.unpack_from("<Q" if id_size == 8 else "<I", data, start)
        try:
            if entry_id == 0:
                encodings[offset] = _cie_pointer_encoding(data, start + id_size, pointer_size)
            else:
                encoding = encodings.get(start - entry_id)
                if encoding is not None:
                    position = start + id_size
                    begin, position = _read_encoded(
                        data, position, encoding, section_address + position, pointer_size
                    )
                    size, _ = _read_encoded(data, position, encoding & 0x0F, 0, pointer_size)
                    if size:
                        functions.append((begin, size))
        except (ValueError, KeyError, IndexError, struct.error):
            if entry_id == 0:
                encodings[offset] = None
        offset = end
    return functions


def _cie_pointer_encoding(data: bytes, offset: int, pointer_size: int) -> Optional[int]:
    version = data[offset]
    offset += 1
    terminator = data.index(b"\x00", offset)
    augmentation = data[offset:terminator].decode("latin-1")
    offset = terminator + 1
    if "eh" in augmentation:
        offset += pointer_size
    _, offset = _leb128(data, offset)  # code alignment
    _, offset = _leb128(data, offset)  # data alignment (sleb, same length)
    offset = offset + 1 if version == 1 else _leb128(data, offset)[1]  # return address register
    encoding = 0x00  # absptr unless 'R' says otherwise
    if augmentation.startswith("z"):
        _, offset = _leb128(data, offset)
        for letter in augmentation[1:]:
            if letter == "R":
                encoding = data[offset]
                offset += 1
            elif letter == "P":
                personality = data[offset]
                _, offset = _read_encoded(data, offset + 1, personality & 0x7F, 0, pointer_size)
            elif letter == "L":
                offset += 1
            elif letter not in "SBG":
                return None
    return encoding


_SYMBOL_FIELDS = {
    64: [("name", "u4"), ("info", "u1"), ("other", "u1"), ("shndx", "u2"), ("value", "u8"), ("size", "u8")],
    32: [("name", "u4"), ("value", "u4"), ("size", "u4"), ("info", "u1"), ("other", "u1"), ("shndx", "u2")],
}
STT_FUNC, STT_GNU_IFUNC = 2, 10


def function_symbols(table: bytes, elfclass: int, little_endian: bool) -> list[tuple[int, int, int, int]]:
    """(name offset, section index, value, size) of the sized function symbols of a symbol table.

    The table is read as one numpy record array: pyelftools' per-symbol parsing
    costs more than decoding the functions of a large library.
    """
    order = "<" if little_endian else ">"
    dtype = np.dtype([(name, order + kind) for name, kind in _SYMBOL_FIELDS[elfclass]])
    symbols = np.frombuffer(table, dtype=dtype, count=len(table) // dtype.itemsize)
    kind = symbols["info"] & 0xF
    chosen = symbols[((kind == STT_FUNC) | (kind == STT_GNU_IFUNC)) & (symbols["size"] > 0)]
    return list(zip(chosen["name"].tolist(), chosen["shndx"].tolist(), chosen["value"].tolist(), chosen["size"].tolist()))


def section_data(data: bytes, section, max_bytes: Optional[int] = None) -> bytes:
    """The content of ``section`` of the ELF image ``data``: at most ``max_bytes``, unpacked when compressed.

    An uncompressed section is cut from ``data`` (a size past the file's end reads what is there); a
    compressed one (``SHF_COMPRESSED``) is refused before it is unpacked when its header says it unpacks
    to more than ``max_bytes``, and is never unpacked past what its header says.

    Raises:
        LimitExceeded: ``over section size limit: ...`` naming the section and its size.
        ELFError: for a compressed section that does not unpack (zlib errors, another compression).
    """
    if section.compressed:
        size = section.data_size
        if max_bytes is not None and size > max_bytes:
            raise LimitExceeded(f"{OVER_SECTION}: section {section.name or section['sh_name']} unpacks to {size:,} "
                                f"bytes, more than {max_bytes >> 20:,} MiB (max_section_mb)")
        return section.data()
    if section["sh_type"] == "SHT_NOBITS":
        return b""
    start, size = section["sh_offset"], section["sh_size"]
    if max_bytes is not None and size > max_bytes and start + max_bytes < len(data):
        raise LimitExceeded(f"{OVER_SECTION}: section {section.name or section['sh_name']} is {size:,} bytes, "
                            f"more than {max_bytes >> 20:,} MiB (max_section_mb)")
    return data[start : start + size] if start < len(data) else b""


def _clamp(found: dict[tuple[int, int], tuple[str, int]], sizes: dict[int, int]) -> list[tuple[int, int, str, int]]:
    """(section, offset, name, size) of each function that starts inside its section, sorted; a size that runs
    past the section's end is cut at the next function's start in that section, or at the section's end."""
    starts: dict[int, list[int]] = {}
    for index, offset in sorted(found):
        if 0 <= offset < sizes[index]:
            starts.setdefault(index, []).append(offset)
    functions = []
    for index, offsets in starts.items():
        end = sizes[index]
        for position, offset in enumerate(offsets):
            name, size = found[index, offset]
            if offset + size > end:
                size = (offsets[position + 1] if position + 1 < len(offsets) else end) - offset
            functions.append((index, offset, name, size))
    return functions


def elf_functions(data: bytes, max_section_bytes: Optional[int] = None,
                  check: Callable[[], None] = _nothing) -> tuple[str, list[FunctionBytes]]:
    """Architecture and functions of one ELF image (bytes).

    Arguments:
        data: the image.
        max_section_bytes: the most any section read may hold (see :func:`section_data`); None: no limit.
        check: called between units of work (each section, each batch of symbols); it may raise to stop.

    Raises:
        UnsupportedFile: for an architecture that is not handled.
        ELFError: for a corrupt or truncated file.
        LimitExceeded: for a section over ``max_section_bytes``, or what ``check`` raises.
    """
    elf = ELFFile(io.BytesIO(data))
    architecture = elf_architecture(elf)
    relocatable = elf["e_type"] == "ET_REL"
    pointer_size = 8 if elf.elfclass == 64 else 4
    count = elf.num_sections()
    if count and elf["e_shoff"] + count * elf["e_shentsize"] > len(data):
        raise ELFError(f"the section header table ({count:,} sections of {elf['e_shentsize']} bytes at offset "
                       f"{elf['e_shoff']:,}) runs past the end of the file ({len(data):,} bytes)")
    executable: dict[int, _Section] = {}
    names: dict[str, int] = {}  # as pyelftools' get_section_by_name: the last section of a name
    for index, section in enumerate(elf.iter_sections()):
        if index % SYMBOLS_AT_ONCE == 0:
            check()
        names[section.name] = index
        if section["sh_flags"] & SHF_EXECINSTR and section["sh_type"] == "SHT_PROGBITS" and section["sh_size"]:
            executable[index] = _Section(section["sh_addr"], section_data(data, section, max_section_bytes), index)
            check()
    if not executable:
        return architecture, []

    # start address (or (section, offset) for relocatable files) -> (name, size)
    found: dict[tuple[int, int], tuple[str, int]] = {}
    for table_name in (".symtab", ".dynsym"):
        table = elf.get_section(names[table_name]) if table_name in names else None
        if table is None or table["sh_type"] not in ("SHT_SYMTAB", "SHT_DYNSYM") or not table["sh_size"]:
            continue
        strings = section_data(data, elf.get_section(table["sh_link"]), max_section_bytes)
        symbols = function_symbols(section_data(data, table, max_section_bytes), elf.elfclass, elf.little_endian)
        check()
        for number, (name_offset, index, value, size) in enumerate(symbols):
            if index not in executable:
                continue
            if number % SYMBOLS_AT_ONCE == 0:
                check()
            section = executable[index]
            offset = value if relocatable else value - section.address
            if (index, offset) in found:
                continue
            end = strings.find(b"\0", name_offset)
            name = strings[name_offset : end if end >= 0 else len(strings)].decode("utf-8", "replace")
            found[index, offset] = (name, size)

    eh_frame = elf.get_section(names[".eh_frame"]) if ".eh_frame" in names else None
    if eh_frame is not None and not relocatable and eh_frame["sh_type"] != "SHT_NOBITS":
        frames = eh_frame_functions(section_data(data, eh_frame, max_section_bytes), eh_frame["sh_addr"], pointer_size,
                                    check)
        for number, (start, size) in enumerate(frames):
            if number % SYMBOLS_AT_ONCE == 0:
                check()
            for section in executable.values():
                if section.address <= start < section.address + len(section.data):
                    found.setdefault((section.index, start - section.address), ("", size))
                    break

    sizes = {index: len(section.data) for index, section in executable.items()}
    clamped = _clamp(found, sizes)
    covered, code = sum(size for _, _, _, size in clamped), sum(sizes.values())
    if covered > MAX_OVERLAP * code:
        raise LimitExceeded(f"{OVERLAPPING}: the functions add up to {covered:,} bytes, more than {MAX_OVERLAP} x the "
                            f"{code:,} bytes of code (a corrupt or hostile symbol table)")
    functions = []
    for index, offset, name, size in clamped:
        section = executable[index]
        code = section.data[offset : offset + size]
        if not code:
            continue
        address = section.address + offset
        functions.append(FunctionBytes(name or f"sub_{address:x}", address, code))
    return architecture, functions


def file_functions(path: str) -> Iterator[tuple[str, str, list[FunctionBytes]]]:
    """Yield (member, architecture, functions) for an ELF file or each ELF member of an archive.

    ``member`` is empty for a plain ELF file. The file is read whole, then as :func:`data_functions`.

    Raises:
        UnsupportedFile: when the file is neither ELF nor an archive, or has an unsupported architecture.
        ELFError: for a corrupt or truncated file.
    """
    if file_kind(path) is None:
        raise UnsupportedFile("not an ELF file")
    with open(path, "rb") as handle:
        data = handle.read()
    yield from data_functions(data)


def data_functions(data: bytes, max_section_bytes: Optional[int] = None,
                   check: Callable[[], None] = _nothing) -> Iterator[tuple[str, str, list[FunctionBytes]]]:
    """:func:`file_functions` of a file's bytes (an ELF image or an ``ar`` archive of them), read from memory.

    ``max_section_bytes`` and ``check`` are those of :func:`elf_functions`, for each image.

    Raises:
        UnsupportedFile: when the bytes are neither ELF nor an archive, or have an unsupported architecture.
        ELFError: for a corrupt or truncated image.
        LimitExceeded: see :func:`elf_functions`.
    """
    kind = data_kind(data)
    if kind is None:
        raise UnsupportedFile("not an ELF file")
    if kind == "elf":
        architecture, functions = elf_functions(data, max_section_bytes, check)
        yield "", architecture, functions
        return
    for member, body in archive_members(data):
        check()
        try:
            architecture, functions = elf_functions(body, max_section_bytes, check)
        except UnsupportedFile:
            continue
        yield member, architecture, functions
