"""``undertale embed`` / ``python embed.py``: one vector per function of some binaries or a corpus (docs/similarity.md).

Exit codes: 0 done, 2 a mistake in the command, or an output that cannot be written (checked before any work; a
disk that fills meanwhile is named so): one ``error:`` line on stderr.
"""

import sys

import hydra
from omegaconf import DictConfig

from undertale.commands import CONFIG_PATH
from undertale.evaluation.entry import before_hydra
from undertale.inference.embed_command import embed_command
from undertale.runtime.outputs import check_writable, run_command


def embed(cfg: DictConfig) -> int:
    """``output=`` checked writable, then :func:`~undertale.inference.embed_command.embed_command`."""
    if cfg.get("output"):
        check_writable(cfg.output, "output", hint="give output=<file.parquet> in a writable folder")
    return embed_command(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="embed")
def _app(cfg: DictConfig) -> None:
    sys.exit(run_command(embed, cfg, output=cfg.get("output")))


def main() -> None:
    before_hydra(sys.argv, "embed")  # a mistake in the command line: one line, exit 2
    _app()
