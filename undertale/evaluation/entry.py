"""What ``evaluate.py`` does around Hydra: check the command line first, pick the task, turn mistakes into one line.

``task=maskedlm`` (default) runs :func:`undertale.evaluation.maskedlm.evaluate`; ``task=similarity`` runs
``undertale.evaluation.similarity.main(cfg)`` when that module is installed. A mistake is one ``error:``
line on stderr and exit code 2.
"""

from __future__ import annotations

import difflib
import importlib
import re
import sys
from typing import Any, NoReturn

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config import CONF
from .errors import EvaluationError

CONFIG_NAME = "evaluate"
TASKS = ("maskedlm", "similarity")
SIMILARITY = "undertale.evaluation.similarity"
FLAGS_THAT_SKIP = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
                   "--version", "-m", "--multirun")


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _explain(error: BaseException, overrides: list[str]) -> str:
    """One line for a composition error, with the closest valid option or key."""
    text = str(error)
    option = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if option:
        group, name = option.groups()
        listing = text.split("Available options", 1)[-1].split("Config search path", 1)[0]
        options = [line.strip() for line in listing.splitlines()[1:] if line.strip()]
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"{group}={name}: no such option of {group}{hint} (options: {', '.join(options)})"
    cause = f"{text} {error.__cause__ or ''}"
    key = re.search(r"Could not override '([^']+)'", text) or re.search(r"full_key: (\S+)", cause)
    if key and "not in struct" in cause:
        parent, _, leaf = key.group(1).rpartition(".")
        groups = [item for item in overrides
                  if "=" in item and "." not in item.split("=", 1)[0] and item.split("=", 1)[0] != key.group(1)]
        try:
            with initialize_config_dir(str(CONF), version_base="1.3"):
                config = compose(CONFIG_NAME, overrides=groups)
            node = OmegaConf.select(config, parent) if parent else config
            known = [str(name) for name in node.keys()] if isinstance(node, DictConfig) else []
        except Exception:  # the hint is best effort
            known = []
        close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.5)
        hint = f"; did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
        return f"{key.group(1)} is not a config key{hint}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else type(error).__name__


def before_hydra(argv: list[str]) -> None:
    """Compose ``evaluate.py``'s config as Hydra will, so that a mistake is one line (exit 2), not a traceback."""
    arguments = argv[1:]
    if any(argument.split("=", 1)[0] in FLAGS_THAT_SKIP for argument in arguments):
        return
    overrides = [argument for argument in arguments if not argument.startswith("-")]
    try:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            compose(CONFIG_NAME, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        fail(_explain(error, overrides))


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def similarity(cfg: DictConfig) -> Any:
    """``task=similarity``: the binary-similarity benchmark, when its module is installed.

    Raises:
        EvaluationError: when ``undertale.evaluation.similarity`` is not available.
    """
    try:
        module = importlib.import_module(SIMILARITY)
    except ModuleNotFoundError as error:
        if error.name != SIMILARITY:
            raise
        raise EvaluationError(f"task=similarity: the similarity benchmark is not available ({SIMILARITY} is not "
                              "installed); task=maskedlm evaluates masked-token prediction") from None
    return module.main(cfg)


def run_task(cfg: DictConfig) -> Any:
    """Run the task ``cfg.task`` names; exit with one ``error:`` line (code 2) for a mistake."""
    task = cfg.get("task", "maskedlm")
    try:
        if task == "similarity":
            code = similarity(cfg)
            if isinstance(code, int) and not isinstance(code, bool) and code:
                sys.exit(code)  # its own one-line error was printed
            return code
        if task != "maskedlm":
            raise EvaluationError(f"task={task} is not a task; choose one of {', '.join(TASKS)}")
        from .maskedlm import evaluate

        evaluate(cfg, _overrides())
    except EvaluationError as error:
        fail(str(error), error.exit_code)
    return None
