"""Fill [MASK] tokens of an instruction trace with a trained model.

    python infer.py run=<run directory> text="push rbp [NEXT] mov rbp [MASK]"
    python infer.py ckpt_path=<file.ckpt> text="xor eax [MASK]"

Arguments (key=value, a Hydra app: conf/infer.yaml):
    text        the instruction trace (format: docs/design.md), with at least one [MASK]
    run         a run directory: its checkpoint (last.ckpt when intact, else the newest intact one) and
                tokenizer.json are used
    ckpt_path   a checkpoint file, instead of run= (the tokenizer.json of its run directory is used)
    tokenizer   a tokenizer.json to use instead of the run's (needed when the run has none)
    device      cpu, cuda, cuda:1, ... (default: cuda when a GPU is available)
    top         also print the N most likely tokens of each [MASK] with their probabilities

Prints the text with every [MASK] replaced by the most likely token that is not
a special token. Mistakes in the command are refused with one "error:" line
(exit status 2); words the tokenizer does not know, and checkpoints skipped for
being cut short, are reported with a "warning:" line.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from tokenizers import Tokenizer

from undertale.data.tokenizer import CONTINUATION, MASK, SPECIAL_TOKENS, UNK, load_tokenizer, special_ids
from undertale.runtime.errors import UsageError, first_line, report_usage_error
from undertale.runtime.runs import RunDirectory

if TYPE_CHECKING:  # torch and lightning are imported only once a command has passed its checks (seconds saved)
    import torch

    from undertale.models.maskedlm import InstructionTraceTransformerEncoderForMaskedLM

USAGE = __doc__.strip()
EXAMPLE = 'text="push rbp [NEXT] mov rbp [MASK]"'
ANOTHER_TOKENIZER = "pass tokenizer=<the tokenizer.json the model was trained with>"
A_CHECKPOINT = "pass a .ckpt file that train.py wrote"
MODEL_KEYS = ("vocab_size", "next_token_id", "mask_token_id")


@dataclass(frozen=True)
class MaskedText:
    """A text and its tokens, with what the model reads of them.

    Arguments:
        text: the text as given.
        ids: every token id of the text (no padding, no truncation).
        offsets: character span of each token in ``text``.
        readable: how many leading tokens the model reads (its sequence length, at most).
    """

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    readable: int


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def hydra_arguments(argv: list[str]) -> list[str]:
    """``argv`` with the value of ``text=`` quoted for Hydra, so that it is taken as written.

    An instruction trace holds brackets (``[MASK]``, ``[ rbp - 4 ]``) that Hydra's override grammar would
    read as lists; quoted, the text reaches the command exactly as the shell passed it.
    """
    quoted = []
    for argument in argv:
        key, separator, value = argument.partition("=")
        if separator and key.lstrip("+~") == "text":
            escaped = re.sub(r"(\\*)('|$)", lambda match: match.group(1) * 2 + ("\\'" if match.group(2) else ""),
                             value).replace("${", "\\${")
            argument = f"{key}='{escaped}'"
        quoted.append(argument)
    return quoted


def check_text(text: Any) -> None:
    """Refuse a text that has nothing to fill.

    Raises:
        UsageError: for a missing or empty text, or one without ``[MASK]``.
    """
    if text is None:
        raise UsageError(f"text=... is required, e.g. {EXAMPLE}")
    if not isinstance(text, str):
        raise UsageError(f"text must be an instruction trace in quotes, e.g. {EXAMPLE}, got {text!r}")
    if not text.strip():
        raise UsageError(f"text is empty; give an instruction trace with at least one {MASK}, e.g. {EXAMPLE}")
    if MASK not in text:
        hint = f" ({MASK} is written in capitals)" if MASK.lower() in text.lower() else ""
        raise UsageError(
            f"the text has no {MASK} to fill{hint}; put {MASK} where a token should be predicted, e.g. {EXAMPLE}"
        )


def parse_top(value: Any) -> int:
    """The number of candidates to print per ``[MASK]`` (0: none).

    Raises:
        UsageError: when ``value`` is not a positive whole number.
    """
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"top must be a positive whole number, e.g. top=3, got {value!r}")
    return value


def locate(ckpt_path: Optional[str], run: Optional[str],
           tokenizer: Optional[str] = None) -> tuple[RunDirectory, Path, Path]:
    """The run, its checkpoint and the tokenizer, from a run directory or a checkpoint file.

    The checkpoint of a run directory is chosen by :meth:`~undertale.runtime.runs.RunDirectory.checkpoint`
    (as every command chooses it). An explicit ``tokenizer`` is used whether or not the run directory has one.

    Returns:
        The run directory, the checkpoint and the tokenizer file, both existing.

    Raises:
        UsageError: naming what is missing and what to pass instead.
    """
    if ckpt_path and run:
        raise UsageError("give run=<run directory> or ckpt_path=<file.ckpt>, not both")
    if not ckpt_path and not run:
        raise UsageError("give run=<run directory> or ckpt_path=<file.ckpt>")
    if ckpt_path and Path(ckpt_path).expanduser().is_dir() and not Path(ckpt_path).name.endswith(".ckpt"):
        raise UsageError(f"ckpt_path {ckpt_path} is a directory; pass a .ckpt file, or run={ckpt_path} for a run "
                         "directory")
    directory, checkpoint = RunDirectory.locate(str(ckpt_path or run))
    if tokenizer:
        path = Path(tokenizer).expanduser()
        if not path.is_file():
            raise UsageError(f"tokenizer {path} does not exist; {ANOTHER_TOKENIZER}")
        return directory, checkpoint, path
    if directory.tokenizer.is_file():
        return directory, checkpoint, directory.tokenizer
    if run:
        raise UsageError(f"the run directory {directory} has no {directory.tokenizer.name}; {ANOTHER_TOKENIZER}")
    raise UsageError(
        f"checkpoint {checkpoint} has no {directory.tokenizer.name} in its run directory (looked for "
        f"{directory.tokenizer}); {ANOTHER_TOKENIZER}"
    )


def read_tokenizer(path: Path) -> Tokenizer:
    """A saved tokenizer with padding and truncation turned off (lengths are checked here instead).

    Raises:
        UsageError: when the file is not an undertale tokenizer.
    """
    try:
        tokenizer = load_tokenizer(path)
    except ValueError as error:
        raise UsageError(f"{error}; {ANOTHER_TOKENIZER}") from error
    except Exception as error:  # tokenizers raises a bare Exception for unreadable JSON
        raise UsageError(f"cannot read tokenizer {path}: {first_line(error)}; {ANOTHER_TOKENIZER}") from error
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def read_hyperparameters(run: RunDirectory, checkpoint: Path) -> dict:
    """The model's hyper-parameters, read without loading its weights (the file is memory-mapped).

    Raises:
        UsageError: when the file is not a checkpoint of an undertale model.
    """
    try:
        saved, _ = run.read(checkpoint)
    except UsageError as error:
        raise UsageError(f"{error}; {A_CHECKPOINT}") from None
    hyperparameters = saved.get("hyper_parameters")
    missing = [key for key in MODEL_KEYS + ("sequence_length",) if key not in (hyperparameters or {})]
    if missing:
        lacks = ", ".join(missing)
        raise UsageError(f"{checkpoint} is not a checkpoint of an undertale model (it lacks {lacks}); {A_CHECKPOINT}")
    return dict(hyperparameters)


def check_tokenizer(tokenizer: Tokenizer, path: Path, hyperparameters: dict) -> None:
    """Refuse a tokenizer whose vocabulary differs from the one the model was trained with.

    Raises:
        UsageError: naming the first id that differs.
    """
    ids = special_ids(tokenizer)
    for key in MODEL_KEYS:
        if ids[key] != hyperparameters[key]:
            raise UsageError(
                f"tokenizer {path} does not fit the model: its {key} is {ids[key]}, the model's is "
                f"{hyperparameters[key]}; {ANOTHER_TOKENIZER}"
            )


def encode(tokenizer: Tokenizer, text: str, sequence_length: int) -> MaskedText:
    """Tokenize ``text`` and check that the model reads every ``[MASK]`` of it.

    Raises:
        UsageError: when the text is longer than ``sequence_length`` and a ``[MASK]`` lies beyond it.
    """
    encoding = tokenizer.encode(text)
    ids, mask_id = encoding.ids, tokenizer.token_to_id(MASK)
    masks, lost = ids.count(mask_id), ids[sequence_length:].count(mask_id)
    if lost:
        raise UsageError(
            f"the text is {len(ids)} tokens long but the model reads only the first {sequence_length} (its sequence "
            f"length), so {lost} of its {masks} {MASK} tokens would be cut off; shorten the text to {sequence_length} "
            "tokens or fewer"
        )
    if len(ids) > sequence_length:
        warn(
            f"the text is {len(ids)} tokens long but the model reads only the first {sequence_length} (its sequence "
            f"length); the last {len(ids) - sequence_length} are printed unchanged and did not inform the predictions"
        )
    return MaskedText(text, ids, encoding.offsets, min(len(ids), sequence_length))


def unknown_words(tokenizer: Tokenizer, masked: MaskedText) -> list[str]:
    """The words of the text that the tokenizer read as ``[UNK]``, each once, in order."""
    unk = tokenizer.token_to_id(UNK)
    words = [(match.start(), match.end(), match.group()) for match in re.finditer(r"\S+", masked.text)]
    found: dict[str, None] = {}
    for token, (start, _) in zip(masked.ids, masked.offsets):
        if token != unk:
            continue
        word = next((word for low, high, word in words if low <= start < high), None)
        if word is not None and word != UNK:
            found.setdefault(word, None)
    return list(found)


def warn_unknown(words: list[str]) -> None:
    """One warning line naming the unknown words (the first few)."""
    if not words:
        return
    shown = ", ".join(repr(word) for word in words[:5]) + (f" and {len(words) - 5} more" if len(words) > 5 else "")
    if len(words) == 1:
        warn(f"{shown} is not in the tokenizer's vocabulary and was read as {UNK}")
    else:
        warn(f"{shown} are not in the tokenizer's vocabulary and were read as {UNK}")


def resolve_device(name: Optional[str]) -> "torch.device":
    """The device to run on: ``name``, or CUDA when a GPU is available, else CPU.

    Raises:
        UsageError: for an unknown device name or a GPU that is not there.
    """
    import torch

    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except (RuntimeError, ValueError) as error:
        raise UsageError(f"unknown device {name!r}; use device=cpu or device=cuda (cuda:1 for a second GPU)") from error
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise UsageError(f"device={name} but this machine has {count} usable CUDA GPU(s); use device=cpu")
    return device


def load_model(run: RunDirectory, checkpoint: Path,
               device: "torch.device") -> "InstructionTraceTransformerEncoderForMaskedLM":
    """The trained model, in evaluation mode on ``device`` (:meth:`~undertale.runtime.runs.RunDirectory.load`).

    Raises:
        UsageError: when the checkpoint cannot be loaded.
    """
    from undertale.models.maskedlm import InstructionTraceTransformerEncoderForMaskedLM

    return run.load(InstructionTraceTransformerEncoderForMaskedLM, checkpoint, device).module


def mask_positions(tokenizer: Tokenizer, masked: MaskedText) -> list[int]:
    """Token positions of the ``[MASK]`` tokens the model reads."""
    mask_id = tokenizer.token_to_id(MASK)
    return [position for position in range(masked.readable) if masked.ids[position] == mask_id]


def starts_word(masked: MaskedText, position: int) -> bool:
    """Whether the token at ``position`` begins a word (follows whitespace or the start of the text)."""
    start = masked.offsets[position][0]
    return start == 0 or masked.text[start - 1].isspace()


def forbidden(tokenizer: Tokenizer, logits: "torch.Tensor", word_starts: list[bool]) -> "torch.Tensor":
    """``logits`` (masks x vocabulary) with the tokens a ``[MASK]`` may not become set to minus infinity.

    Special tokens are never allowed; a ``__`` continuation is not allowed where the
    ``[MASK]`` begins a word (it would glue onto the word before it).
    """
    import torch

    special = torch.zeros(logits.shape[-1], dtype=torch.bool)
    special[[tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]] = True
    continuation = torch.zeros(logits.shape[-1], dtype=torch.bool)
    continuation[[index for token, index in tokenizer.get_vocab().items() if token.startswith(CONTINUATION)]] = True
    banned = special | (torch.tensor(word_starts, dtype=torch.bool).unsqueeze(1) & continuation)
    return logits.masked_fill(banned.to(logits.device), float("-inf"))


def candidates(
    model: "InstructionTraceTransformerEncoderForMaskedLM", tokenizer: Tokenizer, masked: MaskedText, top: int = 1
) -> list[list[tuple[str, float]]]:
    """The ``top`` most likely tokens of each ``[MASK]``, with probabilities, most likely first."""
    import torch

    positions = mask_positions(tokenizer, masked)
    tokens = torch.tensor([masked.ids[: masked.readable]], device=model.device)
    with torch.inference_mode():
        logits = model(tokens, torch.ones_like(tokens))[0, positions].float()
    logits = forbidden(tokenizer, logits, [starts_word(masked, position) for position in positions])
    allowed = int(torch.isfinite(logits).sum(-1).min())
    probabilities, indices = logits.softmax(-1).topk(min(top, allowed), dim=-1)
    return [
        [(tokenizer.id_to_token(index), probability) for index, probability in zip(row, values)]
        for row, values in zip(indices.tolist(), probabilities.tolist())
    ]


def splice(masked: MaskedText, positions: list[int], tokens: list[str]) -> str:
    """The text with the token at each of ``positions`` replaced by the matching entry of ``tokens``.

    A ``__`` continuation joins the word before it; a whole word that replaces a ``[MASK]``
    written against the word before it (``12[MASK]``) is set apart by a space.
    """
    pieces, done = [], 0
    for position, token in zip(positions, tokens):
        start, end = masked.offsets[position]
        if token.startswith(CONTINUATION):
            word = token[len(CONTINUATION):]
        else:
            word = token if starts_word(masked, position) else " " + token
        pieces += [masked.text[done:start], word]
        done = end
    return "".join(pieces) + masked.text[done:]


def fill(
    model: "InstructionTraceTransformerEncoderForMaskedLM", tokenizer: Tokenizer, masked: MaskedText, top: int = 1
) -> tuple[str, list[list[tuple[str, float]]]]:
    """The text with every ``[MASK]`` replaced by its most likely token, and each ``[MASK]``'s ``top`` candidates."""
    found = candidates(model, tokenizer, masked, top)
    return splice(masked, mask_positions(tokenizer, masked), [options[0][0] for options in found]), found


def fill_masks(model: "InstructionTraceTransformerEncoderForMaskedLM", tokenizer: Tokenizer, text: str) -> str:
    """The text with every ``[MASK]`` replaced by the model's most likely non-special token.

    Arguments:
        model: a trained model.
        tokenizer: its tokenizer (its padding and truncation are turned off).
        text: an instruction trace with ``[MASK]`` tokens.

    Returns:
        The filled text; every other word is kept exactly as given.

    Raises:
        UsageError: when a ``[MASK]`` lies beyond the model's sequence length.
    """
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return fill(model, tokenizer, encode(tokenizer, text, model.hparams.sequence_length))[0]


def format_candidates(found: list[list[tuple[str, float]]]) -> list[str]:
    """One line per ``[MASK]``: ``[MASK] 1: rdi 0.412, rsi 0.201, rax 0.090``."""
    return [
        f"{MASK} {number}: " + ", ".join(f"{token} {probability:.3f}" for token, probability in options)
        for number, options in enumerate(found, 1)
    ]


def run(arguments: Any) -> list[str]:
    """Check the command, load model and tokenizer, fill the masks.

    Arguments:
        arguments: the composed ``conf/infer.yaml`` (or a dict with its keys).

    Returns:
        The lines to print.

    Raises:
        UsageError: for any mistake in the command.
    """
    text = arguments.get("text")
    check_text(text)
    top = parse_top(arguments.get("top"))
    directory, checkpoint, tokenizer_path = locate(arguments.get("ckpt_path"), arguments.get("run"),
                                                   arguments.get("tokenizer"))
    tokenizer = read_tokenizer(tokenizer_path)
    hyperparameters = read_hyperparameters(directory, checkpoint)
    check_tokenizer(tokenizer, tokenizer_path, hyperparameters)
    device = resolve_device(arguments.get("device"))
    masked = encode(tokenizer, text, hyperparameters["sequence_length"])
    warn_unknown(unknown_words(tokenizer, masked))
    model = load_model(directory, checkpoint, device)
    filled, found = fill(model, tokenizer, masked, max(top, 1))
    return [filled] + (format_candidates(found) if top else [])


def main(cfg: Any) -> int:
    """``python infer.py key=value ...`` once Hydra composed ``conf/infer.yaml``; returns the exit status
    (2, with one ``error:`` line, for a mistake)."""
    try:
        lines = run(cfg)
    except UsageError as error:
        return report_usage_error(error)
    print("\n".join(lines))
    return 0
