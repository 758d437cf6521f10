"""Instruction-trace tokenizer on HuggingFace ``tokenizers``.

Mnemonics, registers and syntax are whole tokens; numbers go through a
byte-pair model (continuation prefix ``__``) so any integer can be written.
Sequences are padded and truncated to a fixed length. A token never seen in
training becomes ``[UNK]``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Optional

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from undertale.settings.data import DEFAULT_MERGES

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[SEP]", "[CLS]", "[MASK]", "[NEXT]"]
PAD, UNK, SEP, CLS, MASK, NEXT = SPECIAL_TOKENS
# A trained tokenizer gives the special tokens the first ids, in this order ([PAD] = 0, ..., [NEXT] = 5).
SPECIAL_TOKEN_IDS = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
CONTINUATION = "__"
DEFAULT_SEQUENCE_LENGTH = 512

_NUMBER = re.compile(r"^\d+$")


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

    # Whole words: counted by a word-level trainer (in Rust, on all cores); numbers are dropped afterwards.
    words_model = Tokenizer(models.WordLevel(unk_token=UNK))
    words_model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words_model.train_from_iterator(
        texts,
        trainers.WordLevelTrainer(
            vocab_size=1 << 30, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False
        ),
    )
    ranked = sorted(words_model.get_vocab().items(), key=lambda item: item[1])
    words = [word for word, _ in ranked if not _NUMBER.match(word) and word not in SPECIAL_TOKENS]

    # Numbers: a byte-pair model trained on the digit runs alone.
    number_model = Tokenizer(models.BPE(unk_token=UNK, continuing_subword_prefix=CONTINUATION))
    number_model.pre_tokenizer = pre_tokenizers.Split(Regex(r"[^0-9]+"), behavior="removed")
    trainer = trainers.BpeTrainer(
        vocab_size=len(SPECIAL_TOKENS) + merges,
        special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix=CONTINUATION,
        initial_alphabet=list("0123456789"),
        show_progress=False,
    )
    number_model.train_from_iterator(texts, trainer=trainer)
    state = json.loads(number_model.to_str())["model"]
    vocabulary = dict(state["vocab"])
    for word in words:
        vocabulary.setdefault(word, len(vocabulary))
    # every continuation digit, so any number encodes without [UNK]
    for digit in "0123456789":
        vocabulary.setdefault(CONTINUATION + digit, len(vocabulary))
    merges_list = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in state["merges"]]

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
        ValueError: when the file is not an undertale tokenizer (special tokens missing).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist; build one with `python -m undertale.data tokenizer`")
    tokenizer = Tokenizer.from_file(str(path))
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
