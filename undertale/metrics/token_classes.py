"""The class of each masked-LM target: ``[NEXT]``, mnemonic, register, number, memory, other or ``[UNK]``.

A token's class is decided in two steps:

1. **by its text**, once per vocabulary entry (:func:`token_class_table`): ``[NEXT]``; ``[UNK]``;
   a number piece (digits, or a ``__`` continuation); memory syntax (``[ ] ptr + - * : !`` and the
   size words ``byte word dword qword tbyte xword xmmword ...``); a register (x86-64/x86 general,
   segment, vector, mask, x87, control and debug registers, ``rip``; AArch64 ``x0``-``x30``, ``w0``-``w30``,
   ``sp``, ``xzr``, ``v``/``q``/``d``/``s``/``h``/``b`` registers, system registers); an instruction prefix
   (``rep``, ``lock``, ...: a mnemonic); anything else is ``other``;
2. **by its position** (:func:`target_classes`): the first token of an instruction (argument index 0,
   as :func:`~undertale.data.positions.argument_index` counts
   it on the original tokens) and a token that follows a prefix there (``rep stosq``) are mnemonics,
   unless they are ``[NEXT]`` or ``[UNK]``.

The per-id table holds each id's class from step 1, plus :data:`PREFIX_FLAG` for prefixes.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor

from undertale.data.tokenizer import NEXT as NEXT_TOKEN, SPECIAL_TOKENS, UNK as UNK_TOKEN
from undertale.data.positions import argument_index

CLASSES = ("[NEXT]", "mnemonic", "register", "number", "memory", "other", "[UNK]")
NEXT, MNEMONIC, REGISTER, NUMBER, MEMORY, OTHER, UNKNOWN = range(len(CLASSES))
# Added to a prefix's class in the per-id table: a prefix opens the instruction's mnemonic.
PREFIX_FLAG = 8
# Prefixes in a row that still leave the next word a mnemonic (``lock rep ...`` is rare; three is plenty).
MAX_PREFIXES = 3

_NUMBER = re.compile(r"(__)?\d+")
_MEMORY = re.compile(r"[\[\]+\-*:!]|ptr|byte|tbyte|(d|q|t|x|o|f|dq|[xyz]mm)?word")
_PREFIX = re.compile(r"rep|repe|repz|repne|repnz|lock|bnd|notrack|xacquire|xrelease|data16|data32|addr16|addr32|rex(64)?")
_UP_TO_31 = r"([12]?\d|3[01])"
_REGISTER = re.compile(
    "|".join([
        # x86-64 / x86
        r"[re]?(ax|bx|cx|dx|si|di|bp|sp|ip)",  # rax eax ax ... rsp, rip eip ip
        r"[abcd][lh]|(si|di|bp|sp)l",  # al ah ... sil dil bpl spl
        r"r\d{1,2}[bwdl]?",  # r8 r8b r8w r8d ... r31 (also AArch32 r0-r15)
        r"[cdefgs]s",  # segment registers
        r"[xyz]mm\d{1,2}|mm[0-7]|k[0-7]|tmm[0-7]|bnd[0-3]",  # vector, MMX, mask, tile, bound
        r"st(\(\d\))?|[cd]r\d{1,2}|[re]?flags|mxcsr",  # x87 stack, control, debug, flags
        # AArch64
        rf"[xw]{_UP_TO_31}|w?sp|[xw]zr|fp|lr|pc",  # general, stack pointer, zero
        rf"[bhsdq]{_UP_TO_31}",  # scalar SIMD / floating point
        rf"[vz]{_UP_TO_31}(\.\d*[bhsdq])?\[?",  # vectors with arrangement (v0.16b) or lane (v0.s[)
        rf"p{_UP_TO_31}(/[zm])?",  # SVE predicates
        r"\w+_el[0-3]|nzcv|fpcr|fpsr",  # system registers
    ])
)


def metric_name(name: str) -> str:
    """A class name as a metric key: ``[NEXT]`` -> ``next``, ``[UNK]`` -> ``unk``."""
    return name.strip("[]").lower()


METRIC_NAMES = tuple(metric_name(name) for name in CLASSES)


def lexical_class(token: str) -> int:
    """A vocabulary entry's class by its text alone (step 1), with :data:`PREFIX_FLAG` added for a prefix."""
    if token == NEXT_TOKEN:
        return NEXT
    if token == UNK_TOKEN:
        return UNKNOWN
    if token in SPECIAL_TOKENS:
        return OTHER
    for pattern, kind in ((_NUMBER, NUMBER), (_MEMORY, MEMORY), (_REGISTER, REGISTER)):
        if pattern.fullmatch(token):
            return kind
    if _PREFIX.fullmatch(token):
        return MNEMONIC + PREFIX_FLAG
    return OTHER


def class_table(vocabulary: Mapping[str, int], size: Optional[int] = None) -> Tensor:
    """The per-id table of :func:`lexical_class` values.

    Arguments:
        vocabulary: token string to id.
        size: table length (default: one past the largest id); ids without a token are ``other``.

    Returns:
        LongTensor of shape (size,).
    """
    size = size if size is not None else max(vocabulary.values(), default=-1) + 1
    table = torch.full((size,), OTHER, dtype=torch.long)
    for token, index in vocabulary.items():
        if index < size:
            table[index] = lexical_class(token)
    return table


def token_class_table(tokenizer) -> Tensor:
    """The per-id table of a ``tokenizers.Tokenizer`` (see :func:`class_table`), one entry per id."""
    return class_table(tokenizer.get_vocab(with_added_tokens=True), tokenizer.get_vocab_size(with_added_tokens=True))


def position_classes(tokens: Tensor, mask: Optional[Tensor], table: Tensor) -> Tensor:
    """The class of every position of ``tokens`` (step 2 applied to the table's classes).

    Arguments:
        tokens: original (uncorrupted) token ids, (batch, length).
        mask: padding/segment mask of the same shape, or None (one function per row, no padding).
        table: the per-id table (:func:`token_class_table`), on the device of ``tokens``.

    Returns:
        LongTensor (batch, length) of indices into :data:`CLASSES`.
    """
    lexical = table[tokens]
    prefix = lexical >= PREFIX_FLAG
    classes = lexical % PREFIX_FLAG
    is_next = (classes == NEXT).long()
    opening = argument_index(is_next, 1, mask) == 0
    for _ in range(MAX_PREFIXES):  # the word after a prefix that opens an instruction opens it too
        follows = torch.zeros_like(opening)
        follows[:, 1:] = opening[:, :-1] & prefix[:, :-1]
        opening = opening | follows
    mnemonic = opening & (classes != NEXT) & (classes != UNKNOWN)
    return torch.where(mnemonic, MNEMONIC, classes)


def target_classes(tokens: Tensor, mask: Optional[Tensor], targets: Tensor, table: Tensor) -> Tensor:
    """The class of each prediction target.

    Arguments:
        tokens: original token ids, (batch, length) (a corrupted batch's ``labels`` where they are targets,
            its ``tokens`` elsewhere).
        mask: padding/segment mask of the same shape, or None.
        targets: boolean (batch, length), True at the prediction targets.
        table: the per-id table, on the device of ``tokens``.

    Returns:
        LongTensor of the targets' class ids, in the order of ``tokens[targets]``.
    """
    return position_classes(tokens, mask, table)[targets]


def classify(words: Sequence[str]) -> list[str]:
    """The class name of each token of one function written as tokens, e.g. ``"push rbp [NEXT] ret".split()``."""
    vocabulary = {word: index for index, word in enumerate(dict.fromkeys(words))}
    tokens = torch.tensor([[vocabulary[word] for word in words]], dtype=torch.long)
    classes = position_classes(tokens, None, class_table(vocabulary))
    return [CLASSES[index] for index in classes[0].tolist()]
