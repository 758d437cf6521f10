"""``undertale evaluate`` / ``python evaluate.py``: evaluate a trained model (docs/evaluation.md).

Exit codes: 0 done, 2 a mistake in the command or a run that cannot be evaluated (one line on stderr).
"""

import sys

import hydra
from omegaconf import DictConfig

from undertale.commands import CONFIG_PATH
from undertale.evaluation.entry import before_hydra, run_task
from undertale.settings.store import register_configs


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def _app(cfg: DictConfig) -> None:
    run_task(cfg)


def main() -> None:
    register_configs()
    before_hydra(sys.argv)
    _app()
