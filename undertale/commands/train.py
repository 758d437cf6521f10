"""``undertale train`` / ``python train.py``: train a model (see train.py at the repository root for examples).

Exit codes:

- 0: finished.
- 1: failed (a bug, with its traceback; a loader worker's own exception is one ``error:`` line, its traceback
  in the run's ``train.log``) or diverged (one ``error:`` line).
- 2: an expected failure, one ``error:`` line on stderr: a config mistake (before any work), an output that
  cannot be written, a data shard that a loader worker cannot read (damaged or missing), a loader worker
  killed (e.g. by the out-of-memory killer).
- 128 + the signal: stopped by a signal, after saving ``last.ckpt`` at the next step boundary (no validation
  after it); a notice on stderr, not an error, says how to continue (``resume=<run dir>``). SIGTERM (143) and
  SIGUSR1 (138): preempted. Ctrl-C, SIGINT (130): interrupted; a second Ctrl-C aborts at once, unsaved (130).
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
