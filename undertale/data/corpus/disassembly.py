"""Decode function bytes with capstone and write them as instruction-trace text.

The text format (see ``docs/design.md``): tokens separated by single spaces,
instructions by ``[NEXT]``, operand commas dropped, brackets and arithmetic
signs as tokens of their own, numbers in decimal.
"""

from __future__ import annotations

import ctypes
import functools
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

import capstone
import numpy as np

NEXT = "[NEXT]"

_MODES = {
    "x86-64": (capstone.CS_ARCH_X86, capstone.CS_MODE_64),
    "x86": (capstone.CS_ARCH_X86, capstone.CS_MODE_32),
    "aarch64": (getattr(capstone, "CS_ARCH_ARM64", getattr(capstone, "CS_ARCH_AARCH64", None)), capstone.CS_MODE_ARM),
}

_HEX = re.compile(r"(0x[0-9a-fA-F]+)")
# Plain str.replace passes, in this order, are several times faster than a multi-character
# str.translate or a regex with a callback. They are chosen so that capstone's spacing (", "
# between operands, " + " and " - " inside brackets) comes out with single spaces.
_SPACING = [
    (",", ""), ("[", "[ "), ("]", " ]"), ("*", " * "), (":", " : "), (" -", " - "), ("-  ", "- "),
    (" \n", "\n"), (" \x01", "\x01"),
]
_AARCH64_SPACING = [("#", ""), ("!", " !"), ("{", "{ "), ("}", " }")]
_INSTRUCTION_BREAK, _FUNCTION_BREAK = "\n", "\x01"
_PARSE_HEX = functools.partial(int, base=16)


@dataclass(frozen=True)
class Disassembly:
    """A decoded function: its text, instruction count and the bytes that did not decode."""

    text: str
    instructions: int
    skipped_bytes: int
    over_limit: bool = False  # more instructions than the limit asked for: not decoded to the end, text empty


@lru_cache(maxsize=None)
def _decoder(architecture: str) -> capstone.Cs:
    if architecture not in _MODES:
        raise ValueError(f"unsupported architecture {architecture!r}; choose from {', '.join(_MODES)}")
    decoder = capstone.Cs(*_MODES[architecture])
    decoder.detail = False
    return decoder


def _decimal(hexadecimal: list[str]) -> list[str]:
    """``0x1f`` -> ``31`` for a whole list, iterating in C (``map``) rather than in a Python loop."""
    return list(map(str, map(_PARSE_HEX, hexadecimal)))


def normalise_many(functions: list[list[str]]) -> list[str]:
    """Instruction-trace text for many functions at once, each a list of ``"mnemonic op_str"``.

    The whole batch is rewritten as one string, so the per-function cost of
    the regular expression and the replace passes is paid once.
    """
    return _normalise_text(_FUNCTION_BREAK.join(_INSTRUCTION_BREAK.join(lines) for lines in functions))


def normalise(instructions: list[str]) -> str:
    """Join ``"mnemonic op_str"`` strings into one instruction-trace text."""
    return normalise_many([instructions])[0]


def decode(code: bytes, address: int, architecture: str = "x86-64") -> tuple[list[str], int]:
    """``"mnemonic op_str"`` for each instruction, and the number of undecodable bytes skipped.

    Bytes that do not decode (data in ``.text``, padding) are skipped one at a
    time and counted; decoding resumes after them, so a function is never
    silently cut short.
    """
    lines, skipped, _ = _decode_lines(code, address, architecture)
    return lines, skipped


def _decode_lines(code: bytes, address: int, architecture: str, limit: Optional[int] = None) -> tuple[list[str], int, bool]:
    """:func:`decode` that stops after ``limit`` instructions and skipped bytes; True when it stopped short."""
    decoder = _decoder(architecture)
    lines: list[str] = []
    append = lines.append
    offset, skipped, end = 0, 0, len(code)
    while offset < end:
        if limit is not None and len(lines) + skipped >= limit:
            return lines, skipped, True
        position = offset
        ask = 0 if limit is None else limit - len(lines) - skipped
        decoded = 0
        for insn_address, size, mnemonic, operands in decoder.disasm_lite(code[offset:] if offset else code,
                                                                          address + offset, ask):
            append(mnemonic + " " + operands)
            position = insn_address + size - address
            decoded += 1
        if ask and decoded == ask:
            offset = position
            continue
        if position < end:
            skipped += 1
            position += 1
        offset = position
    return lines, skipped, False


class _ArrayDecoder:
    """Decode through capstone's C API straight into numpy arrays of ``cs_insn`` records.

    The Python binding builds a tuple and two strings per instruction; here
    ``cs_disasm`` fills one buffer per function and the mnemonic and operand
    text of every instruction is cut out of it with array operations.
    """

    def __init__(self, architecture: str):
        self.handle = _decoder(architecture).csh
        record = capstone._cs_insn
        self.record_size = ctypes.sizeof(record)
        self.text_start = record.mnemonic.offset
        self.text_stop = record.op_str.offset + record.op_str.size
        # field positions within the kept [text_start, text_stop) slice of each record
        self.fields = [
            (record.mnemonic.offset - self.text_start, record.mnemonic.size),
            (record.op_str.offset - self.text_start, record.op_str.size),
        ]
        self.address_offset = record.address.offset
        self.size_offset = record.size.offset

    def decode(self, code: bytes, address: int, limit: Optional[int] = None) -> tuple[list[np.ndarray], int, int, bool]:
        """Per-chunk (instructions x record) byte arrays, the instruction count, skipped bytes, and whether
        decoding stopped short at ``limit`` instructions and skipped bytes.

        Each ``cs_disasm`` call decodes at most :data:`CHUNK_INSTRUCTIONS` (capstone's buffer stays small)
        and starts at an offset into ``code`` (no copy of the rest after an undecodable byte).
        """
        code = bytes(code)
        chunks, count_total, skipped, offset, end = [], 0, 0, 0, len(code)
        base = ctypes.cast(ctypes.c_char_p(code), ctypes.c_void_p).value or 0
        while offset < end:
            ask = CHUNK_INSTRUCTIONS
            if limit is not None:
                left = limit - count_total - skipped
                if left <= 0:
                    return chunks, count_total, skipped, True
                ask = min(ask, left)
            pointer = ctypes.POINTER(capstone._cs_insn)()
            start = ctypes.cast(base + offset, ctypes.POINTER(ctypes.c_char))
            count = capstone._cs.cs_disasm(self.handle, start, end - offset, address + offset, ask, ctypes.byref(pointer))
            position = offset
            if count:
                try:
                    raw = ctypes.cast(pointer, ctypes.POINTER(ctypes.c_uint8 * (count * self.record_size))).contents
                    everything = np.frombuffer(raw, dtype=np.uint8).reshape(count, self.record_size)
                    records = everything[:, self.text_start : self.text_stop].copy()
                    last = everything[-1]
                    last_address = int(last[self.address_offset : self.address_offset + 8].view(np.uint64)[0])
                    last_size = int(last[self.size_offset : self.size_offset + 2].view(np.uint16)[0])
                finally:
                    capstone._cs.cs_free(pointer, count)
                position = last_address + last_size - address
                chunks.append(records)
                count_total += count
                if count == ask:  # a full chunk: the rest follows at position, nothing was undecodable
                    offset = position
                    continue
            elif capstone._cs.cs_errno(self.handle) == capstone.CS_ERR_MEM:
                raise MemoryError("capstone could not allocate memory for the instructions")
            if position < end:
                skipped += 1
                position += 1
            offset = position
        return chunks, count_total, skipped, False

    def text(self, records: np.ndarray, function_ends: np.ndarray) -> str:
        """``mnemonic op_str`` lines of all records; function ends get the function separator."""
        columns = []
        for at, size in self.fields:
            field = records[:, at : at + size]
            length = np.argmax(field == 0, axis=1)  # C strings: keep the bytes before the first NUL
            width = int(length.max()) if len(length) else 0
            field = field[:, :width]
            columns.append(np.where(np.arange(width) < length[:, None], field, 0).astype(np.uint8))
        separator = np.full((len(records), 1), ord(" "), dtype=np.uint8)
        ends = np.full((len(records), 1), ord(_INSTRUCTION_BREAK), dtype=np.uint8)
        ends[function_ends] = ord(_FUNCTION_BREAK)
        flat = np.concatenate([columns[0], separator, columns[1], ends], axis=1).reshape(-1)
        return flat[flat != 0].tobytes().decode("latin-1")


@lru_cache(maxsize=None)
def _array_decoder(architecture: str) -> Optional[_ArrayDecoder]:
    try:
        return _ArrayDecoder(architecture)
    except (AttributeError, TypeError):  # a capstone binding without the ctypes internals
        return None


def _normalise_text(text: str) -> list[str]:
    """Normalise ``mnemonic op_str`` lines (``\\n``-separated, functions ``\\x01``-separated)."""
    parts = _HEX.split(text)
    if len(parts) > 1:
        parts[1::2] = _decimal(parts[1::2])
        text = "".join(parts)
    spacing = _AARCH64_SPACING + _SPACING if "#" in text or "{" in text else _SPACING
    for old, new in spacing:
        text = text.replace(old, new)
    text = text.replace(_INSTRUCTION_BREAK, f" {NEXT} ")
    if text.endswith(_FUNCTION_BREAK):
        text = text[:-1]
    functions = text.split(_FUNCTION_BREAK)
    if "  " in text or text.startswith(" ") or text.endswith(" ") or f"{_FUNCTION_BREAK} " in text:
        # spacing that capstone's usual format does not produce: fall back to a full clean-up
        functions = [" ".join(function.split()) for function in functions]
    return functions


BATCH_INSTRUCTIONS = 1 << 15  # records turned into text at once: large enough to amortise, small enough for cache
CHUNK_INSTRUCTIONS = 1 << 16  # instructions one cs_disasm call may return (its buffer: 16 MB at most)


def _nothing() -> None:
    pass


def disassemble_many(functions: list[tuple[bytes, int]], architecture: str = "x86-64",
                     max_instructions: Optional[int] = None, check: Callable[[], None] = _nothing) -> list[Disassembly]:
    """Decode and normalise many (code, address) functions of one architecture.

    Arguments:
        functions: (code, address of its first byte) of each function.
        architecture: ``x86-64``, ``x86`` or ``aarch64``.
        max_instructions: a function with more instructions and undecodable bytes than this is not decoded
            further: its :class:`Disassembly` is empty with ``over_limit`` set. None: no limit.
        check: called after each function (it may raise to stop, e.g. a file's time limit).
    """
    fast = _array_decoder(architecture)
    if fast is None:
        decoded = []
        for code, address in functions:
            decoded.append(_decode_lines(code, address, architecture, max_instructions))
            check()
        texts = normalise_many([lines if not over else [] for lines, _, over in decoded])
        return [Disassembly("", 0, 0, True) if over else Disassembly(text, len(lines), skipped)
                for text, (lines, skipped, over) in zip(texts, decoded)]
    results: list[Disassembly] = []
    pending: list[tuple[int, int, bool]] = []  # (instructions, skipped, over) of functions not yet turned into text
    chunks: list[np.ndarray] = []
    held = 0

    def flush() -> None:
        nonempty = [count for count, _, _ in pending if count]
        texts = iter(_normalise_text(fast.text(np.concatenate(chunks), np.cumsum(nonempty) - 1)) if nonempty else ())
        results.extend(Disassembly(next(texts) if count else "", count, skip, over) if not over
                       else Disassembly("", 0, 0, True) for count, skip, over in pending)
        pending.clear()
        chunks.clear()

    for code, address in functions:
        records, count, skip, over = fast.decode(code, address, max_instructions)
        if over:
            pending.append((0, 0, True))
        else:
            chunks.extend(records)
            pending.append((count, skip, False))
            held += count
        del records
        if held >= BATCH_INSTRUCTIONS:
            flush()
            held = 0
        check()
    if pending:
        flush()
    return results


def disassemble(code: bytes, address: int, architecture: str = "x86-64") -> Disassembly:
    """Decode one function's bytes into instruction-trace text.

    Arguments:
        code: the function's bytes.
        address: virtual address of the first byte (branch targets are absolute).
        architecture: ``x86-64``, ``x86`` or ``aarch64``.

    Returns:
        The text, the number of instructions and the number of skipped bytes.
    """
    return disassemble_many([(code, address)], architecture)[0]
