"""Fill ``[MASK]`` tokens of an instruction trace with a trained model.

    python infer.py ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt text="xor rax [MASK]"
    python infer.py run=outputs/train/runs/<time> text="push rbp [NEXT] mov rbp [MASK]"
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import torch
from tokenizers import Tokenizer

from .data.tokenizer import load_tokenizer
from .models.maskedlm import InstructionTraceTransformerEncoderForMaskedLM

USAGE = __doc__.strip()


def fill_masks(model: InstructionTraceTransformerEncoderForMaskedLM, tokenizer: Tokenizer, text: str) -> str:
    """The text with every ``[MASK]`` replaced by the model's most likely token."""
    encoding = tokenizer.encode(text)
    length = sum(encoding.attention_mask)
    tokens = torch.tensor([encoding.ids], device=model.device)
    mask = torch.tensor([encoding.attention_mask], device=model.device)
    filled = model.infer(tokens, mask)
    return tokenizer.decode(filled[:length].tolist(), skip_special_tokens=False)


def locate(ckpt_path: Optional[str], run: Optional[str]) -> tuple[Path, Path]:
    """Checkpoint and tokenizer paths from a checkpoint file or a run directory.

    Raises:
        FileNotFoundError: naming what is missing.
    """
    if run:
        checkpoint = Path(run) / "checkpoints" / "last.ckpt"
        run_dir = Path(run)
    elif ckpt_path:
        checkpoint = Path(ckpt_path)
        run_dir = checkpoint.parent.parent
    else:
        raise FileNotFoundError("give ckpt_path=<file.ckpt> or run=<run directory>")
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    tokenizer = run_dir / "tokenizer.json"
    if not tokenizer.is_file():
        raise FileNotFoundError(f"no tokenizer.json in the run directory {run_dir}; pass tokenizer=<file>")
    return checkpoint, tokenizer


def main(argv: Optional[list[str]] = None) -> int:
    arguments = {}
    for item in sys.argv[1:] if argv is None else argv:
        key, separator, value = item.partition("=")
        if not separator or key not in ("ckpt_path", "run", "text", "tokenizer", "device"):
            print(f"error: unexpected argument {item!r}\n\n{USAGE}", file=sys.stderr)
            return 2
        arguments[key] = value
    if "text" not in arguments:
        print(f"error: text=... is required\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        checkpoint, tokenizer_path = locate(arguments.get("ckpt_path"), arguments.get("run"))
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    device = arguments.get("device", "cuda" if torch.cuda.is_available() else "cpu")
    model = InstructionTraceTransformerEncoderForMaskedLM.load_from_checkpoint(checkpoint, map_location=device)
    tokenizer = load_tokenizer(arguments.get("tokenizer", tokenizer_path), model.hparams.sequence_length)
    print(fill_masks(model, tokenizer, arguments["text"]))
    return 0
