"""``undertale train`` / ``python train.py``: train a model (see train.py at the repository root for examples).

Exit codes: 0 finished, 1 failed or diverged, 2 a config mistake (one line on stderr, before any work),
128 + the signal number when preempted by SIGTERM (143) or SIGUSR1 (138).
"""

import sys

import hydra
from omegaconf import DictConfig

from undertale.commands import CONFIG_PATH
from undertale.settings.store import register_configs
from undertale.training.entry import before_hydra, run_job


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _app(cfg: DictConfig) -> float:
    return run_job(cfg)


def main() -> None:
    register_configs()
    sys.argv = before_hydra(sys.argv)
    _app()
