"""``undertale``: one installed command for every tool of the project.

    undertale train model=small trainer=ddp        # = python train.py ... at the repository root
    undertale evaluate run=<run dir>
    undertale export run=<run dir> output=<dir>
    undertale data corpus OUT --packages corpora/debian-bookworm-small.txt
    undertale <command> --help

Hydra commands take ``key=value`` overrides and read the configs shipped inside the package (the
repository's ``conf/``); ``data``, ``report`` and ``bench`` take their own arguments.
"""

from __future__ import annotations

import difflib
import sys
from importlib import import_module
from typing import Optional

from undertale.runtime.program import INSTALLED

# command: (module whose main() runs it, what it does)
COMMANDS = {
    "train": ("undertale.commands.train", "train a model (Hydra: model=, trainer=, data=, task=, ...)"),
    "evaluate": ("undertale.commands.evaluate", "evaluate a run: per-class accuracy, or function search"),
    "embed": ("undertale.commands.embed", "one vector per function of binaries or a corpus"),
    "infer": ("undertale.commands.infer", "fill [MASK] tokens of an instruction trace"),
    "export": ("undertale.commands.export", "write a run as a Hugging Face-style directory"),
    "index": ("undertale.commands.index", "embed the functions of binaries into a search index"),
    "search": ("undertale.commands.search", "search an index for functions, or match two binaries"),
    "data": ("undertale.data.__main__", "corpus, tokenizer, tokenize, pairs, stage, verify, benchmark"),
    "report": ("undertale.report.__main__", "a results table and figures from runs and sweeps"),
    "bench": ("undertale.bench", "training throughput beside a reference implementation"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "usage: undertale <command> [arguments]\n\ncommands:\n" + "\n".join(lines) + \
        "\n\n'undertale <command> --help' describes one command."


def main(argv: Optional[list[str]] = None) -> int:
    """Run ``undertale <command> ...``; an unknown command is one line, exit 2."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = arguments[0], arguments[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        print(f"error: undertale has no command {name!r}{hint} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    sys.argv = [f"{INSTALLED}{name}", *rest]
    result = import_module(COMMANDS[name][0]).main()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
