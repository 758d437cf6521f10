"""What the tests share: commands in a real process (``run_script``), the same commands in this process
(``train_in_process``, ``app_in_process``), the smoke settings, and session data built once across xdist workers.

A real process is for what a process is: signals and preemption, DDP ranks, Hydra's multirun launchers and
sweepers, and one command line per entry point whose one-line error and exit code are checked. Everything
else runs in the test's own process: ``train_in_process`` does what ``train.py`` does around Hydra
(``before_hydra``, composing, ``run_job``), without paying for a second interpreter, torch and Lightning.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from unittest import mock

from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
BINARIES = ["/usr/bin/ls", "/usr/bin/cp", "/usr/bin/grep", "/usr/bin/sort"]
SEQUENCE_LENGTH = 64  # conf/debug/smoke.yaml's model.sequence_length
MAX_FUNCTIONS = 3000  # and its data.max_functions, data.tokenizer_functions
# W&B offline (the runs are read back with undertale.training.wandb_offline), Hydra's one-line errors
ENVIRONMENT = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
# In the test process W&B must not redirect stdout/stderr to a pipe of its own: a process forked later
# (a process pool, a loader worker) would block writing to it once the run has ended.
IN_PROCESS = ENVIRONMENT | {"WANDB_CONSOLE": "off"}


def small(cache: Path, steps: int = 12, logger: Optional[str] = "wandb") -> list[str]:
    """Overrides that shrink the quickstart to seconds: ``debug=smoke`` on the test binaries and the shared cache.

    ``logger``: the W&B logger (offline) by default, as most tests read its run back; None keeps smoke's CSV.
    """
    return ["debug=smoke", f"paths.cache_dir={cache}", f"data.paths=[{','.join(BINARIES)}]",
            f"trainer.max_steps={steps}", *([f"logger={logger}"] if logger else [])]


# --- real processes ---------------------------------------------------------------------------------


def script_environment(extra: Optional[dict] = None) -> dict:
    return os.environ | ENVIRONMENT | (extra or {})


def run_script(*arguments: str, env: Optional[dict] = None, check: bool = True, timeout: float = 600,
               cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python <arguments>`` in the repository root (``train.py ...``, ``-m undertale.data ...``), output captured.

    ``env``: variables added to this environment and ``ENVIRONMENT``. ``check``: assert exit code 0, showing
    the tails of stdout and stderr otherwise.
    """
    result = subprocess.run([sys.executable, *arguments], cwd=cwd, env=script_environment(env), capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(arguments[:2])} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def start_script(*arguments: str, env: Optional[dict] = None, **options: Any) -> subprocess.Popen:
    """``python <arguments>`` started, not waited for (``options`` go to ``Popen``: pipes, a new session)."""
    options.setdefault("text", True)
    return subprocess.Popen([sys.executable, *arguments], cwd=ROOT, env=script_environment(env), **options)


def one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """Assert a command failed with ``code`` and one ``error:`` line on stderr; that line."""
    assert result.returncode == code, f"exit {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


# --- the same commands in this process --------------------------------------------------------------


@contextmanager
def hydra_job(config_name: str, arguments: list[str], job_name: str) -> Iterator[Any]:
    """The config Hydra would give a single run of ``<script> <arguments>``, with HydraConfig set as in that run
    (its overrides, its output directory); the ``hydra`` node removed, as Hydra does."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from undertale.settings.store import register_configs

    register_configs()
    overrides = [argument for argument in arguments if not argument.startswith("-")]
    with initialize_config_dir(str(CONF), version_base="1.3", job_name=job_name):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = os.path.abspath(str(cfg.hydra.run.dir))
        cfg.hydra.mode = RunMode.RUN
    HydraConfig.instance().set_config(cfg)
    job = cfg.copy()
    with open_dict(job):
        del job["hydra"]
    try:
        yield job
    finally:
        HydraConfig.instance().cfg = None


def train_in_process(*arguments: str, env: Optional[dict] = None) -> Any:
    """``python train.py <arguments>`` in this process: ``before_hydra`` (resume, the checks before any work),
    the composed config, ``run_job``. A mistake or a stop raises ``SystemExit`` with train.py's exit code and
    prints its ``error:`` line; returns the objective. Hydra's own log file (train.log) is not written."""
    from undertale.training.entry import before_hydra, run_job

    with mock.patch.dict(os.environ, IN_PROCESS | (env or {})), process_state():
        argv = before_hydra(["train.py", *arguments])
        with hydra_job("train", argv[1:], "train") as cfg:
            return run_job(cfg)


def app_in_process(config_name: str, function: Callable[[Any], Any], *arguments: str,
                   before: Optional[Callable[[list[str]], Any]] = None, env: Optional[dict] = None) -> Any:
    """Another Hydra entry point in this process: ``evaluate.py`` (``config_name="evaluate"``, its ``before_hydra``
    and ``run_task``) or ``embed.py`` (``embed_command``); what ``function`` returns."""
    with mock.patch.dict(os.environ, IN_PROCESS | (env or {})), process_state():
        if before is not None:
            before([f"{config_name}.py", *arguments])
        with hydra_job(config_name, list(arguments), config_name) as cfg:
            return function(cfg)


@contextmanager
def process_state() -> Iterator[None]:
    """What a run leaves in the process it ran in, undone: the signal handlers Lightning's trainer chains
    (SIGTERM, SIGUSR1, ...) and W&B's service and threads (a later fork must not inherit them)."""
    signals = [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2]
    handlers = {number: signal.getsignal(number) for number in signals}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        if (wandb := sys.modules.get("wandb")) is not None:
            wandb.teardown()


def exit_code(function: Callable[..., Any], *arguments: Any, **options: Any) -> int:
    """The exit code ``function`` stops with (``SystemExit``), or 0 when it returns."""
    try:
        function(*arguments, **options)
    except SystemExit as stop:
        return 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1  # as the interpreter exits
    return 0


# --- built once per session, shared by the xdist workers --------------------------------------------


def shared_directory(tmp_path_factory, worker_id: str, name: str, build: Callable[[Path], None]) -> Path:
    """``<session temp>/<name>``, built by ``build(directory)`` in the first worker that asks, under a file lock;
    the other workers wait for it and reuse it. Without xdist: this session's own temporary directory."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # pytest-of-<user>/pytest-<n>: this session's, shared by its workers
    directory, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock"), timeout=1200):
        if not done.exists():
            directory.mkdir(parents=True, exist_ok=True)
            build(directory)
            done.touch()
    return directory


def validation_mrr_before_and_after(parts, steps: int) -> tuple[float, float]:
    """``val/mrr`` of a built ``task=similarity`` (``task.build``) before and after ``steps`` training steps."""
    import lightning

    trainer = lightning.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                                check_val_every_n_epoch=100)
    before = trainer.validate(parts.module, datamodule=parts.datamodule, verbose=False)[0]["val/mrr"]
    trainer.fit(parts.module, datamodule=parts.datamodule)
    return before, trainer.validate(parts.module, datamodule=parts.datamodule, verbose=False)[0]["val/mrr"]
