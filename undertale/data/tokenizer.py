"""Instruction-trace tokenizer on HuggingFace ``tokenizers``.

Mnemonics, registers and syntax are whole tokens; numbers go through a
byte-pair model (continuation prefix ``__``) so any integer can be written.
Training is deterministic: the same texts give a byte-identical tokenizer
whatever the threads, processes or machine (every tie is broken by the
tokens' text, never by hash-map or thread order).
Sequences are padded and truncated to a fixed length. A token never seen in
training becomes ``[UNK]``.
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from undertale.settings.data import DEFAULT_MERGES

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[SEP]", "[CLS]", "[MASK]", "[NEXT]"]
PAD, UNK, SEP, CLS, MASK, NEXT = SPECIAL_TOKENS
# A trained tokenizer gives the special tokens the first ids, in this order ([PAD] = 0, ..., [NEXT] = 5).
SPECIAL_TOKEN_IDS = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
CONTINUATION = "__"
DEFAULT_SEQUENCE_LENGTH = 512

DIGITS = "0123456789"
# the number alphabet: every digit, alone and as a continuation, so any integer encodes without [UNK]
NUMBER_ALPHABET = list(DIGITS) + [CONTINUATION + digit for digit in DIGITS]


def _is_number(word: str) -> bool:
    return word.isascii() and word.isdigit()


def word_counts(texts: list[str]) -> dict[str, int]:
    """How often each whitespace-separated word occurs in ``texts`` (as the tokenizer splits them)."""
    words = pc.utf8_split_whitespace(pa.array(texts, type=pa.large_string())).flatten()
    counted = pc.value_counts(words)
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()))


_SHIFT = 1 << 31  # a pair of token ids as one int64 code


def _grouped(
    first: np.ndarray, second: np.ndarray, weights: np.ndarray, positions: Optional[np.ndarray] = None
) -> list[tuple]:
    """``(pair, summed weight[, its positions])`` per distinct pair ``(first[i], second[i])``, pairs ascending."""
    if not len(first):
        return []
    codes = first * _SHIFT + second
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(codes)) + 1]
    keys = [divmod(code, _SHIFT) for code in codes[starts].tolist()]
    sums = np.add.reduceat(weights[order], starts).tolist()
    if positions is None:
        return list(zip(keys, sums))
    return list(zip(keys, sums, np.split(positions[order], starts[1:])))


def number_merges(numbers: dict[str, int], size: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Byte-pair merges over the digits of ``numbers`` (number -> count), until the number vocabulary holds
    ``size`` tokens (never fewer than :data:`NUMBER_ALPHABET`) or nothing is left to merge.

    Each step merges the most frequent adjacent pair; equal counts go to the pair whose tokens sort first,
    so the result depends on the counts alone. A number's first digit is a token of its own, the others
    continuations (``__7``); merging ``12`` and ``__3`` gives ``123``, ``__1`` and ``__2`` gives ``__12``.

    The digits of all numbers are one linked list of nodes (numpy arrays); each merge rewrites only the
    nodes where its pair occurs (an index kept up to date), in numpy, left to right as a sequential
    byte-pair trainer does (in ``0 0 0`` the pair ``0 0`` is merged once, at the left).

    Returns:
        The number tokens (alphabet first, then each merge's result in merge order) and the merges.
    """
    tokens = list(NUMBER_ALPHABET)
    index = {token: position for position, token in enumerate(tokens)}
    ordered = sorted(numbers)
    lengths = np.fromiter(map(len, ordered), dtype=np.int64, count=len(ordered))
    symbol = np.frombuffer("".join(ordered).encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    first = np.zeros(len(symbol), dtype=bool)
    last = np.zeros(len(symbol), dtype=bool)
    offsets = np.cumsum(lengths) - lengths
    first[offsets] = True
    last[offsets + lengths - 1] = True
    symbol += 10 * ~first  # 0-9: a number's first digit, 10-19: continuations (NUMBER_ALPHABET's order)
    weight = np.repeat(np.fromiter((numbers[n] for n in ordered), dtype=np.int64, count=len(ordered)), lengths)
    nodes = np.arange(len(symbol), dtype=np.int64)
    left_of = np.where(first, -1, nodes - 1)
    right_of = np.where(last, -1, nodes + 1)
    pair_count, where = {}, {}
    inner = np.flatnonzero(~last)
    for pair, count, found in _grouped(symbol[inner], symbol[inner + 1], weight[inner], inner):
        pair_count[pair] = count
        where[pair] = [found]
    heap = [(-count, tokens[a], tokens[b], a, b) for (a, b), count in pair_count.items()]
    heapq.heapify(heap)
    merges = []
    prefix = len(CONTINUATION)
    while len(tokens) < size and heap:
        negative, left, right, a, b = heapq.heappop(heap)
        count = pair_count.get((a, b), 0)
        if count != -negative:
            if count > 0:
                heapq.heappush(heap, (-count, left, right, a, b))
            continue
        merged = left + right[prefix:]
        new = index.get(merged)
        if new is None:
            new = index[merged] = len(tokens)
            tokens.append(merged)
        merges.append((left, right))
        # where this pair still is, left to right (the lists hold stale and repeated nodes)
        p = np.unique(np.concatenate(where.pop((a, b))))
        p = p[symbol[p] == a]
        q = right_of[p]
        p, q = p[q >= 0], q[q >= 0]
        keep = symbol[q] == b
        p, q = p[keep], q[keep]
        if a == b and len(p):  # in a run "a a a", the first pair is merged, the second is not: alternate along each run
            before = np.searchsorted(p, left_of[p])
            chained = (before < len(p)) & (p[np.minimum(before, len(p) - 1)] == left_of[p])
            before = np.where(chained, before, 0)
            chosen = np.ones(len(p), dtype=bool)
            while True:
                again = ~(chained & chosen[before])
                if np.array_equal(again, chosen):
                    break
                chosen = again
            p, q = p[chosen], q[chosen]
        w, o, r = weight[p], left_of[p], right_of[q]
        # the left neighbour: a plain symbol, or the right half of a pair merged in this step
        lo, lw = o[o >= 0], w[o >= 0]
        after_merge = np.isin(lo, q)
        # the right neighbour, unless it starts a pair merged in this step (counted as that pair's left)
        has_right = (r >= 0) & ~np.isin(r, p)
        ro, rw = r[has_right], w[has_right]
        for pair, count in _grouped(np.concatenate([symbol[lo], np.full(len(ro), b)]),
                                    np.concatenate([np.full(len(lo), a), symbol[ro]]), np.concatenate([lw, rw])):
            pair_count[pair] -= count
        grown = _grouped(
            np.concatenate([np.where(after_merge, new, symbol[lo]), np.full(len(ro), new)]),
            np.concatenate([np.full(len(lo), new), symbol[ro]]),
            np.concatenate([lw, rw]),
            np.concatenate([np.where(after_merge, left_of[lo], lo), p[has_right]]),
        )
        for pair, count, found in grown:
            pair_count[pair] = pair_count.get(pair, 0) + count
            where.setdefault(pair, []).append(found)
        pair_count.pop((a, b), None)
        symbol[p] = new
        symbol[q] = -1
        right_of[p] = r
        left_of[r[r >= 0]] = p[r >= 0]
        for pair, _, _ in grown:
            heapq.heappush(heap, (-pair_count[pair], tokens[pair[0]], tokens[pair[1]], *pair))
    return tokens, merges


def train_tokenizer(
    texts: Iterable[str],
    merges: int = DEFAULT_MERGES,
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a tokenizer on instruction-trace texts.

    Arguments:
        texts: function texts in the format of ``docs/design.md``.
        merges: byte-pair budget for numbers (the number vocabulary's size).
        sequence_length: fixed length of every encoding (padding and truncation).
        min_frequency: non-numeric words seen fewer times become ``[UNK]``.

    Returns:
        The trained tokenizer.

    Raises:
        ValueError: when ``texts`` holds no words.
    """
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be positive, got {sequence_length}")
    texts = texts if isinstance(texts, list) else list(texts)
    if not any(text.strip() for text in texts):
        raise ValueError("cannot train a tokenizer on an empty corpus")

    # One count of every whitespace-separated word (in C++); ties are broken by the text itself, never by
    # hash-map or thread order, so the same texts give the same ids on any machine.
    counts = word_counts(texts)
    numbers = {word: count for word, count in counts.items() if _is_number(word)}
    words = sorted(
        (word for word, count in counts.items()
         if count >= min_frequency and word not in SPECIAL_TOKENS and word not in numbers),
        key=lambda word: (-counts[word], word),
    )
    number_tokens, merges_list = number_merges(numbers, merges)
    vocabulary = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for token in number_tokens + words:
        vocabulary.setdefault(token, len(vocabulary))

    tokenizer = Tokenizer(
        models.BPE(
            vocab=vocabulary,
            merges=merges_list,
            unk_token=UNK,
            continuing_subword_prefix=CONTINUATION,
            fuse_unk=True,
            ignore_merges=True,
        )
    )
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix=CONTINUATION, cleanup=False)
    set_length(tokenizer, sequence_length)
    return tokenizer


def set_length(tokenizer: Tokenizer, sequence_length: int) -> None:
    """Pad and truncate every encoding to ``sequence_length``."""
    tokenizer.enable_padding(length=sequence_length, pad_id=tokenizer.token_to_id(PAD), pad_token=PAD)
    tokenizer.enable_truncation(max_length=sequence_length)


def load_tokenizer(path: str | Path, sequence_length: Optional[int] = None) -> Tokenizer:
    """Load a saved ``tokenizer.json``, optionally changing its fixed length.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file cannot be read as a tokenizer (cut short, not JSON) or is not an undertale
            tokenizer (special tokens missing), naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist; build one with `python -m undertale.data tokenizer`")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises its own exception kinds for a file cut short or not JSON
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"tokenizer file {path} cannot be read ({message}); it is cut short or not a "
                         "tokenizer.json") from None
    missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
    if missing:
        raise ValueError(f"{path} lacks the special tokens {missing}; it is not an undertale tokenizer")
    if sequence_length is not None:
        set_length(tokenizer, sequence_length)
    return tokenizer


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Ids the model needs: ``vocab_size``, ``next_token_id``, ``mask_token_id``, ``pad_token_id``."""
    return {
        "vocab_size": tokenizer.get_vocab_size(),
        "next_token_id": tokenizer.token_to_id(NEXT),
        "mask_token_id": tokenizer.token_to_id(MASK),
        "pad_token_id": tokenizer.token_to_id(PAD),
    }


def sequence_length_of(tokenizer: Tokenizer) -> int:
    """The fixed length the tokenizer pads to."""
    padding = tokenizer.padding
    if not padding or not padding.get("length"):
        raise ValueError("tokenizer has no fixed padding length")
    return int(padding["length"])
