"""``undertale infer`` / ``python infer.py``: fill ``[MASK]`` tokens with a trained model (conf/infer.yaml, or --help).

Exit codes: 0 done, 2 a mistake in the command (one ``error:`` line on stderr).
"""

import sys

import hydra
from omegaconf import DictConfig

from undertale.commands import CONFIG_PATH
from undertale.evaluation.entry import before_hydra
from undertale.inference.fill_mask import USAGE, hydra_arguments, main as fill_masks


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="infer")
def _app(cfg: DictConfig) -> None:
    sys.exit(fill_masks(cfg))


def main() -> None:
    if sys.argv[1:2] in (["-h"], ["--help"], ["help"]):
        print(USAGE)
        sys.exit(0)
    sys.argv = hydra_arguments(sys.argv)
    before_hydra(sys.argv, "infer")
    _app()
