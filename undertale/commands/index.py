"""``undertale index`` / ``python index.py``: embed every function of some ELF files into a search index (docs/search.md).

Exit codes: 0 done, 2 a mistake in the command, or an output that cannot be written (checked before any work; a
disk that fills meanwhile is named so): one ``error:`` line on stderr.
"""

import sys

import hydra
from omegaconf import DictConfig

from undertale.commands import CONFIG_PATH
from undertale.evaluation.entry import before_hydra
from undertale.runtime.outputs import check_writable, run_command
from undertale.search.index import index_command


def index(cfg: DictConfig) -> int:
    """The index directory ``output=`` checked writable, then :func:`~undertale.search.index.index_command`."""
    if cfg.get("output"):
        check_writable(cfg.output, "output", directory=True, hint="give output=<index directory> in a writable place")
    return index_command(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="index")
def _app(cfg: DictConfig) -> None:
    sys.exit(run_command(index, cfg, output=cfg.get("output")))


def main() -> None:
    before_hydra(sys.argv, "index")  # a mistake in the command line: one line, exit 2
    _app()
