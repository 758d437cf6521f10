"""Runs that survive kills, preemption, corrupt checkpoints, divergence and config mistakes: real processes, real signals."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from omegaconf import OmegaConf

from undertale.runtime.runs import RunDirectory, checkpoint_problem
from undertale.training.checks import runs_root
from undertale.training.resume import latest_run
from undertale.training.checkpointing import AtomicCheckpointIO
from undertale.training.loggers import online_or_offline
from undertale.training.wandb_offline import read_offline_run

from helpers import exit_code, run_script, small, start_script, train_in_process

STEPS = 48
SAVE_EVERY = 6


def arguments(cache: Path, run_dir: Path, steps: int = STEPS) -> list[str]:
    return [
        *small(cache, steps=steps), "trainer.log_every_n_steps=1", f"callbacks.checkpoint.every_n_train_steps={SAVE_EVERY}",
        f"hydra.run.dir={run_dir}",
    ]


def train(args: list[str], environment: dict = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """train.py in a process of its own."""
    return run_script("train.py", *args, env=environment, check=False, timeout=timeout)


def start(args: list[str]) -> subprocess.Popen:
    """train.py in its own process group, as a cluster job step (signals can go to the whole group)."""
    return start_script("train.py", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def train_here(args: list[str], capsys, code: int = 0, environment: dict = None) -> tuple[str, str]:
    """train.py's work in this process; its stdout and stderr, once it ended with ``code`` (as train.py exits)."""
    ended = exit_code(train_in_process, *args, env=environment)
    out, err = capsys.readouterr()
    assert ended == code, f"exit {ended}:\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


def wait_for_checkpoint(process: subprocess.Popen, run: RunDirectory, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not run.last_checkpoint.is_file():
        assert process.poll() is None, f"the run ended before its first checkpoint:\n{process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)


def step_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]


def weights(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def learning_rates(run: RunDirectory) -> dict[int, float]:
    """train/lr by step, over every W&B run file the run directory holds (a resumed run appends one)."""
    rates = {}
    for offline in sorted((run.path / "wandb").glob("offline-run-*")):
        for row in read_offline_run(offline).history:
            if "train/lr" in row:
                rates[int(row["trainer/global_step"])] = row["train/lr"]
    return rates


def check(result: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
    assert result.returncode == code, f"exit {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def uninterrupted(cache, tmp_path_factory) -> RunDirectory:
    run = RunDirectory(tmp_path_factory.mktemp("runs") / "uninterrupted")
    train_in_process(*arguments(cache, run.path))
    return run


@pytest.mark.e2e
@pytest.mark.xdist_group("uninterrupted")  # its module fixture is built once, on one worker
def test_killed_run_resumes_with_no_arguments_and_matches_an_uninterrupted_one(cache, tmp_path, uninterrupted, capsys):
    run = RunDirectory(tmp_path / "killed")
    process = start(arguments(cache, run.path))
    wait_for_checkpoint(process, run)
    process.kill()  # SIGKILL: nothing runs after it
    process.wait()
    killed_at = step_of(run.last_checkpoint)
    assert SAVE_EVERY <= killed_at < STEPS

    stdout, _ = train_here([f"resume={run.path}"], capsys)  # the resumed run: train.py's work, in this process
    metrics = json.loads(run.metrics.read_text())
    assert metrics["global_step"] == STEPS and metrics["status"] == "finished"
    assert step_of(run.last_checkpoint) == STEPS, "last.ckpt is written at the end of training"
    first, resumed = [read_offline_run(path) for path in sorted((run.path / "wandb").glob("offline-run-*"))]
    started_as = run.wandb_run()  # written when the run started; the killed run's own W&B file may be cut short
    assert resumed.run_id == started_as["id"] == metrics["wandb_id"] and resumed.name == started_as["name"]
    assert first.run_id in ("", started_as["id"])
    assert resumed.config["trainer"]["max_steps"] == STEPS

    expected, actual = learning_rates(uninterrupted), learning_rates(run)
    assert {step for step in expected if step >= killed_at} <= set(actual)
    assert all(actual[step] == pytest.approx(expected[step], rel=1e-9) for step in actual)
    final, reference = weights(run.last_checkpoint), weights(uninterrupted.last_checkpoint)
    assert all(torch.allclose(final[name], reference[name], atol=1e-6) for name in reference), \
        "a resumed run ends with the uninterrupted run's weights"
    assert (run.path / "train.log").is_file() and "resume:" not in stdout


@pytest.mark.e2e
def test_sigterm_saves_at_the_next_step_exits_nonzero_and_resumes_to_the_end(cache, tmp_path, capsys):
    """SIGTERM to the whole process group, as SLURM and `timeout` send it: the loader worker gets it too."""
    run = RunDirectory(tmp_path / "preempted")
    process = start(arguments(cache, run.path) + ["data.num_workers=1"])
    wait_for_checkpoint(process, run)
    signalled_after = step_of(run.last_checkpoint)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "preempted by SIGTERM" in stderr and f"resume={run.path}" in stderr
    saved = step_of(run.last_checkpoint)
    metrics = json.loads(run.metrics.read_text())
    assert signalled_after <= saved == metrics["global_step"] < STEPS and metrics["status"] == "preempted"
    [offline] = sorted((run.path / "wandb").glob("offline-run-*"))
    preempted = read_offline_run(offline)
    assert preempted.exit_code == 1 and preempted.preempting, "the W&B run is marked preempted"

    train_here([f"resume={run.path}"], capsys)
    assert json.loads(run.metrics.read_text())["global_step"] == STEPS


@pytest.mark.xdist_group("uninterrupted")  # its module fixture is built once, on one worker
def test_corrupt_last_checkpoint_falls_back_and_resume_keeps_its_config(uninterrupted, tmp_path, capsys):
    run = RunDirectory(tmp_path / "copy")
    shutil.copytree(uninterrupted.path, run.path)
    best = next(path for path in run.checkpoint_files() if path.name.startswith("best-step"))
    data = run.last_checkpoint.read_bytes()
    run.last_checkpoint.write_bytes(data[: len(data) // 2])

    _, refused = train_here([f"resume={run.path}", "optimizer.lr=0.5", "model=small"], capsys, code=2)
    assert len(refused.strip().splitlines()) == 1
    assert "optimizer.lr (run: 0.003, given: 0.5)" in refused and "model.depth" in refused

    stdout, _ = train_here([f"resume={run.path}", f"trainer.max_steps={STEPS + 6}"], capsys)
    assert f"checkpoint {run.last_checkpoint} is not a whole checkpoint" in stdout
    assert f"resuming from {best.name} instead" in stdout
    assert "trainer.max_steps 48 -> 54: the cosine learning-rate schedule is recomputed" in stdout
    metrics = json.loads(run.metrics.read_text())
    assert metrics["global_step"] == STEPS + 6 and step_of(run.last_checkpoint) == STEPS + 6


@pytest.mark.xdist_group("uninterrupted")  # its module fixture is built once, on one worker
def test_resume_latest_takes_the_newest_run_with_a_checkpoint_or_starts_fresh(uninterrupted, cache, tmp_path, capsys):
    root = tmp_path / "runs"
    (root / "9999-no-checkpoint").mkdir(parents=True)
    empty, _ = train_here(["resume=latest", *arguments(cache, root / "fresh", steps=2)], capsys)
    assert f"resume=latest: no run with a checkpoint under {root}; starting a new run" in empty
    assert json.loads((root / "fresh" / "metrics.json").read_text())["global_step"] == 2

    shutil.copytree(uninterrupted.path, root / "newest")
    os.utime(RunDirectory(root / "newest").last_checkpoint)  # the newest checkpoint of the three
    assert latest_run(root).path == root / "newest"
    assert runs_root(OmegaConf.create({"hydra": {"run": {"dir": str(root / "another")}}})) == root

    # a fixed run directory that holds a checkpoint (a requeued cluster job) continues itself, not the newest run
    train_here(["resume=latest", *arguments(cache, root / "fresh", steps=4)], capsys)
    assert json.loads((root / "fresh" / "metrics.json").read_text())["global_step"] == 4


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_divergence_stops_at_once_keeps_finite_weights_and_valid_json(cache, tmp_path, policy, capsys):
    run = RunDirectory(tmp_path / policy)
    _, stderr = train_here([*arguments(cache, run.path), "optimizer.lr=1000", "optimizer.warmup=0",
                            f"callbacks.divergence.policy={policy}", "callbacks.divergence.max_skips=2"], capsys, code=1)
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "training diverged at step" in line and ("loss nan" in line or "non-finite" in line)
    if policy == "skip":
        assert "after 3 non-finite steps in a row" in line
    metrics = json.loads(run.metrics.read_text())  # strict JSON: no bare NaN
    assert metrics["status"] == "diverged" and metrics["global_step"] < SAVE_EVERY * 2
    for checkpoint in run.checkpoint_files():
        assert all(torch.isfinite(value).all() for value in weights(checkpoint).values()), checkpoint
    [offline] = sorted((run.path / "wandb").glob("offline-run-*"))
    assert read_offline_run(offline).exit_code == 1


@pytest.mark.parametrize(
    "override, key",
    [
        ("masking.probability=1.5", "masking.probability"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr=abc", "optimizer.lr"),
        ("data.batch_size=0", "data.batch_size"),
        ("model.sequence_length=100000", "model.sequence_length"),
        ("model.heads=5", "model.heads"),
        ("trainer.max_steps=abc", "trainer.max_steps"),
        ("callbacks.checkpoint.every_n_train_steps=-5", "callbacks.checkpoint.every_n_train_steps"),
        ("trainer.devcies=2", "trainer.devices"),
    ],
)
def test_bad_values_fail_in_one_line_before_any_work(override, key, tmp_path, capsys):
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    started = time.monotonic()
    _, stderr = train_here([override, f"hydra.run.dir={run_dir}"], capsys, code=2,
                           environment={"UNDERTALE_CACHE": str(cache)})
    assert time.monotonic() - started < 10
    assert key in stderr and len(stderr.strip().splitlines()) <= 3 and "Traceback" not in stderr
    assert not cache.exists() and not run_dir.exists(), "nothing was built and no run directory was made"


@pytest.mark.e2e
def test_a_bad_value_is_one_line_and_exit_code_2_from_the_command_in_seconds(tmp_path):
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    started = time.monotonic()
    result = train(["masking.probability=1.5", f"hydra.run.dir={run_dir}"], {"UNDERTALE_CACHE": str(cache)})
    assert time.monotonic() - started < 10, "torch and Lightning are not loaded for a config mistake"
    assert result.returncode == 2 and "masking.probability" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3 and "Traceback" not in result.stderr
    assert not cache.exists() and not run_dir.exists(), "nothing was built and no run directory was made"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_wandb_server_falls_back_to_offline_quickly(capsys):
    started = time.monotonic()
    assert online_or_offline(f"http://127.0.0.1:{closed_port()}", timeout=1) == "offline"
    assert online_or_offline("https://wandb.example.invalid", timeout=1) == "offline"  # a name that never resolves
    assert time.monotonic() - started < 5
    assert "unreachable" in capsys.readouterr().err


@pytest.mark.e2e
def test_online_run_without_network_trains_offline(cache, tmp_path):
    run = RunDirectory(tmp_path / "online")
    environment = {"WANDB_MODE": "online", "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}",
                                 "WANDB_API_KEY": "x" * 40}
    started = time.monotonic()
    result = check(train(arguments(cache, run.path, steps=2), environment, timeout=120))
    assert time.monotonic() - started < 90
    assert "is unreachable" in result.stderr and "logging offline" in result.stderr
    [offline] = sorted((run.path / "wandb").glob("offline-run-*"))
    assert read_offline_run(offline).exit_code == 0


def test_checkpoint_problems_are_found_from_the_archive_directory(tmp_path):
    path = tmp_path / "whole.ckpt"
    torch.save({"weights": torch.zeros(256, 256)}, path)
    assert checkpoint_problem(path) is None
    data = path.read_bytes()
    for name, cut in (("half", len(data) // 2), ("tail", len(data) - 8), ("empty", 0)):
        (tmp_path / f"{name}.ckpt").write_bytes(data[:cut])
        assert checkpoint_problem(tmp_path / f"{name}.ckpt") is not None, name
    (tmp_path / "sharded.ckpt").mkdir()
    assert "without its .metadata" in checkpoint_problem(tmp_path / "sharded.ckpt")
    (tmp_path / "sharded.ckpt" / ".metadata").write_bytes(b"x")
    assert checkpoint_problem(tmp_path / "sharded.ckpt") is None


def test_checkpoint_write_killed_halfway_keeps_the_previous_file(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        io.save_checkpoint({"global_step": 2, "state": Unpicklable(), "padding": torch.zeros(1 << 20)}, path)
    assert torch.load(path, weights_only=False)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file is left behind"
