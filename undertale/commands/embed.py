"""``undertale embed`` / ``python embed.py``: one vector per function of some binaries or a corpus (docs/similarity.md)."""

import sys

import hydra
from omegaconf import DictConfig

from undertale.commands import CONFIG_PATH
from undertale.inference.embed_command import embed_command


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="embed")
def _app(cfg: DictConfig) -> None:
    sys.exit(embed_command(cfg))


def main() -> None:
    _app()
