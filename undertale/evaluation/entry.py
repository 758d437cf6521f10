"""What ``evaluate.py`` does around Hydra: check the command line first, pick the task, turn mistakes into one line.

``task=maskedlm`` (default) runs :func:`undertale.evaluation.maskedlm.evaluate`; ``task=similarity`` runs
``undertale.evaluation.similarity.main(cfg)`` when that module is installed. A mistake is one ``error:``
line on stderr and exit code 2. :func:`before_hydra` also checks ``infer.py``'s command line (``conf/infer.yaml``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, NoReturn

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from undertale.runtime.errors import UsageError, report_usage_error
from undertale.runtime.outputs import check_writable, expected_failure
from undertale.runtime.runs import RunDirectory
from undertale.settings.store import CONF
from undertale.training.checks import FLAGS_THAT_SKIP, explain_composition_error

CONFIG_NAME = "evaluate"
TASKS = ("maskedlm", "similarity")
SIMILARITY = "undertale.evaluation.similarity"


def fail(error: UsageError | str) -> NoReturn:
    """Exit with one ``error:`` line (exit code 2)."""
    sys.exit(report_usage_error(error))


def before_hydra(argv: list[str], config_name: str = CONFIG_NAME) -> None:
    """Compose ``config_name`` (``evaluate``, or ``infer`` for ``infer.py``) as Hydra will, so that a mistake
    is one line (exit 2), not a traceback."""
    arguments = argv[1:]
    if any(argument.split("=", 1)[0] in FLAGS_THAT_SKIP for argument in arguments):
        return
    overrides = [argument for argument in arguments if not argument.startswith("-")]
    try:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        fail(explain_composition_error(error, overrides, config_name))


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def similarity(cfg: DictConfig) -> Any:
    """``task=similarity``: the binary-similarity benchmark, when its module is installed.

    Raises:
        UsageError: when ``undertale.evaluation.similarity`` is not available.
    """
    try:
        module = importlib.import_module(SIMILARITY)
    except ModuleNotFoundError as error:
        if error.name != SIMILARITY:
            raise
        raise UsageError(f"task=similarity: the similarity benchmark is not available ({SIMILARITY} is not "
                              "installed); task=maskedlm evaluates masked-token prediction") from None
    return module.main(cfg)


def task_name(cfg: DictConfig) -> str:
    """``maskedlm`` or ``similarity``: the ``task`` group's choice (its Task class)."""
    task = cfg.get("task", "maskedlm")
    if isinstance(task, DictConfig):
        target = str(task.get("_target_", ""))
        return {"MaskedLMTask": "maskedlm", "SimilarityTask": "similarity"}.get(target.rsplit(".", 1)[-1], target)
    return str(task)


def check_result_file(cfg: DictConfig, task: str) -> None:
    """The file the evaluation writes into the run directory (``evaluation.json``, ``similarity.json``) can be
    written, before any work (a run directory that does not exist is the task's own error).

    Raises:
        OutputError: naming the file and why it cannot be written.
    """
    if not cfg.get("run") or not Path(str(cfg.run)).expanduser().is_dir():
        return
    run = RunDirectory(str(cfg.run))
    check_writable(run.similarity if task == "similarity" else run.evaluation, "result file",
                   hint="evaluate.py writes it into the run directory: copy the run to a writable place and "
                        "evaluate the copy")


def run_task(cfg: DictConfig) -> Any:
    """Run the task ``cfg.task`` names; exit with one ``error:`` line (code 2) for a mistake, an output that cannot
    be written (checked before any work) or a disk that fills."""
    task = task_name(cfg)
    try:
        check_result_file(cfg, task)
        if task == "similarity":
            code = similarity(cfg)
            if isinstance(code, int) and not isinstance(code, bool) and code:
                sys.exit(code)  # its own one-line error was printed
            return code
        if task != "maskedlm":
            raise UsageError(f"task={task} is not a task; choose one of {', '.join(TASKS)}")
        from undertale.evaluation.maskedlm import evaluate

        evaluate(cfg, _overrides())
    except Exception as error:
        stop = expected_failure(error)
        if stop is None:
            raise
        fail(stop)
    return None
