"""A resumed run continues its history: the run's own loggers, CSV rows and W&B steps kept, metrics.json's latest
values of every metric, the final summary line. One real preemption (SIGTERM to a train.py process) and two
resumes in this process: the run as it was (CSV and W&B) and a copy made CSV-only."""

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from undertale.runtime.errors import UsageError
from undertale.runtime.runs import RunDirectory
from undertale.training.loggers import build_loggers
from undertale.training.resume import restore_config
from undertale.training.wandb_offline import read_offline_run

from helpers import exit_code, small, start_script, train_in_process

VALIDATE_EVERY = 6  # trainer.val_check_interval (steps, counted over the whole run)
SAVE_EVERY = 7  # last.ckpt after the first validation: the signal, sent then, stops training at step 8
SUMMARY = "always predicting the most frequent token"  # in the masked-LM task's final line


def rows(run: RunDirectory) -> list[dict[str, str]]:
    with run.csv_metrics.open(newline="") as file:
        return list(csv.DictReader(file))


def validations(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key.startswith("val/")}


def resume_here(run: RunDirectory, steps: int, capsys) -> str:
    """``python train.py resume=<run> trainer.max_steps=<steps>`` in this process; its stdout."""
    ended = exit_code(train_in_process, f"resume={run.path}", f"trainer.max_steps={steps}")
    out, err = capsys.readouterr()
    assert ended == 0, f"exit {ended}:\n{out[-3000:]}\n{err[-3000:]}"
    return out


@pytest.mark.e2e
def test_a_preempted_run_resumes_with_its_own_loggers_and_keeps_their_history(cache, tmp_path, capsys):
    run = RunDirectory(tmp_path / "run")
    process = start_script(
        "train.py", *small(cache, steps=40, logger="[csv,wandb]"), "trainer.log_every_n_steps=1",
        f"trainer.val_check_interval={VALIDATE_EVERY}", f"callbacks.checkpoint.every_n_train_steps={SAVE_EVERY}",
        f"hydra.run.dir={run.path}", stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not run.last_checkpoint.is_file():
            assert process.poll() is None, process.communicate(timeout=10)[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    preempted = json.loads(run.metrics.read_text())
    saved = preempted["global_step"]  # the checkpoint's step: the resumed run trains step `saved` next
    assert preempted["status"] == "preempted" and validations(preempted), "a validation ran before the preemption"
    before = [row for row in rows(run) if int(row["step"]) < saved]
    end = saved + 1  # a resumed session of one step, which ends off a validation step
    assert end % VALIDATE_EVERY, f"the signal stopped training only at step {saved}"
    csv_only = RunDirectory(tmp_path / "csv-only")  # the same run, had it logged to CSV alone
    shutil.copytree(run.path, csv_only.path)
    shutil.rmtree(csv_only.wandb_directory)
    csv_only.wandb_file.unlink()
    config = OmegaConf.load(csv_only.config)
    config.logger = {"csv": config.logger.csv}
    OmegaConf.save(config, csv_only.config)

    stdout = resume_here(run, end, capsys)

    after = rows(run)
    assert after[: len(before)] == before, "the rows before the preemption are kept as they were"
    steps = [int(row["step"]) for row in after if row["train/loss"]]
    assert steps == list(range(end)), "one training row per step, continuing after the preemption"
    assert not any(row["val/loss"] for row in after[len(before):]), "the resumed session ran no validation"
    metrics = json.loads(run.metrics.read_text())
    assert metrics["status"] == "finished" and metrics["global_step"] == end
    assert validations(metrics) == validations(preempted), "metrics.json keeps the last validation"
    assert SUMMARY in stdout, "the final summary line is printed after a resume"

    first, resumed = [read_offline_run(path) for path in run.offline_runs()]
    assert first.run_id == resumed.run_id == run.wandb_run()["id"] == metrics["wandb_id"]
    first_steps, resumed_steps = [[row["_step"] for row in one.history] for one in (first, resumed)]
    assert resumed_steps == list(range(max(first_steps) + 1, max(first_steps) + 1 + len(resumed_steps))), \
        "W&B's step counter continues after the preempted session's, so the synced history appends"
    assert [row["trainer/global_step"] for row in resumed.history] == list(range(saved, end))
    assert resumed.summary["val/accuracy"] == pytest.approx(preempted["val/accuracy"])
    offline = run.offline_runs()[0]
    data = next(offline.glob("run-*.wandb")).read_bytes()
    cut = tmp_path / "cut" / offline.name
    cut.mkdir(parents=True)
    (cut / "run-cut.wandb").write_bytes(data[: len(data) // 2])  # a session killed while writing it
    history = read_offline_run(cut).history
    assert history == first.history[: len(history)]

    stdout = resume_here(csv_only, end, capsys)
    assert not csv_only.wandb_directory.exists() and not csv_only.wandb_file.exists(), \
        "a CSV-only run resumed gets no W&B run"
    assert "wandb_id" not in json.loads(csv_only.metrics.read_text())
    assert rows(csv_only)[: len(before)] == before and SUMMARY in stdout


def test_a_resumed_run_has_the_loggers_of_its_config_unless_logger_is_given():
    saved = OmegaConf.create({"seed": 0, "logger": {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger"}}})
    given = OmegaConf.create({"seed": 0, "logger": {"wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger"}}})
    config, notes = restore_config(saved, given, ["resume=outputs/run"])
    assert list(config.logger) == ["csv"] and notes == []
    config, notes = restore_config(saved, given, ["resume=outputs/run", "logger=wandb"])
    assert list(config.logger) == ["wandb"] and notes == ["logger: csv -> wandb for this session"]
    config, _ = restore_config(saved, OmegaConf.create({"seed": 0, "logger": {}}), ["resume=outputs/run", "logger=none"])
    assert list(config.logger) == []
    with pytest.raises(UsageError, match=r"seed \(run: 0, given: 1\).*logger=<option>"):
        restore_config(saved, OmegaConf.merge(given, {"seed": 1}), ["resume=outputs/run", "seed=1"])


def test_tensorboard_hides_what_a_killed_session_logged_after_the_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunDirectory(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    config = OmegaConf.create({"tensorboard": {"_target_": "lightning.pytorch.loggers.TensorBoardLogger",
                                               "name": "tensorboard", "version": ""}})
    [killed] = build_loggers(config, run.path, {})
    for step in range(10):  # its checkpoint was saved after step 7
        killed.log_metrics({"train/loss": float(step)}, step)
    killed.finalize("failed")
    torch.save({"global_step": 7}, run.last_checkpoint)
    [resumed] = build_loggers(config, run.path, {}, resumed_from=run.last_checkpoint)
    for step in (7, 8):
        resumed.log_metrics({"train/loss": 100.0 + step}, step)
    resumed.finalize("success")
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("train/loss")] == \
        [(step, float(step)) for step in range(7)] + [(7, 107.0), (8, 108.0)]
