"""``undertale search`` / ``python search.py``: top-k matches of functions, or a one-to-one diff of two binaries
(docs/search.md)."""

import sys

import hydra
from omegaconf import DictConfig

from undertale.commands import CONFIG_PATH
from undertale.evaluation.entry import before_hydra
from undertale.search.command import search_command


def diff_as_list(arguments: list[str]) -> list[str]:
    """``diff=A,B`` as ``diff=[A,B]``: Hydra reads an unquoted comma as a sweep."""
    return [f"diff=[{argument[5:]}]" if argument.startswith("diff=") and "," in argument
            and not argument[5:].startswith(("[", "'", '"')) else argument for argument in arguments]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="search")
def _app(cfg: DictConfig) -> None:
    sys.exit(search_command(cfg))


def main() -> None:
    sys.argv = diff_as_list(sys.argv)
    before_hydra(sys.argv, "search")  # a mistake in the command line: one line, exit 2
    _app()
