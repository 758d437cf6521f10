"""``undertale index`` / ``python index.py``: embed every function of some ELF files into a search index (docs/search.md)."""

import sys

import hydra
from omegaconf import DictConfig

from undertale.commands import CONFIG_PATH
from undertale.search.index import index_command


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="index")
def _app(cfg: DictConfig) -> None:
    sys.exit(index_command(cfg))


def main() -> None:
    _app()
