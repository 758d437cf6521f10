"""``undertale export`` / ``python export.py``: a run as a Hugging Face-style directory (docs/export.md)."""

import sys

import hydra
from omegaconf import DictConfig

from undertale.commands import CONFIG_PATH
from undertale.inference.export import export_command


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def _app(cfg: DictConfig) -> None:
    sys.exit(export_command(cfg))


def main() -> None:
    _app()
