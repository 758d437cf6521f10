"""Runs nobody watches: a loader worker that fails or dies ends the run at once in one line, a stop signal saves at
the step and exits without validating, Ctrl-C does the same once and aborts on the second, redirected output shows
periodic step lines, and a resumed run counts its steps, epochs and progress on from its checkpoint.

Real processes and real signals, on the shared session cache (a test that damages data damages a copy)."""

import csv
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import IterableDataset, get_worker_info

from undertale.data.workers import LoaderFailed, PreemptibleLoader, loader_failure
from undertale.runtime.runs import RunDirectory
from undertale.training.callbacks import ProgressBar

from helpers import ROOT, exit_code, small, start_script, train_in_process

STEP_LINE = re.compile(r"^step (\d+)/(\d+)  loss \d+\.\d+  [\d,]+ tokens/s  elapsed \d+:\d\d:\d\d  ETA \d+:\d\d:\d\d$")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


class Training:
    """``train.py`` in a process group of its own (as a cluster job step or a terminal's foreground job), its
    stdout lines read as they come, its stderr into a file."""

    def __init__(self, arguments: list[str], directory: Path):
        self.stderr_path = directory / "stderr.txt"
        with self.stderr_path.open("w") as stderr:
            self.process = start_script("train.py", *arguments, stdout=subprocess.PIPE, stderr=stderr,
                                        start_new_session=True)
        self.lines: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def read_until(self, prefix: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError(f"no line {prefix!r} in {timeout} s:\n{self.stderr[-3000:]}") from None
            if line is None:
                ended = self.process.wait(timeout=60)
                raise AssertionError(f"train.py ended ({ended}) before {prefix!r}:\n{self.stderr[-3000:]}")
            self.lines.append(line)
            if line.startswith(prefix):
                return

    def signal(self, signum: int) -> float:
        os.killpg(self.process.pid, signum)  # the whole group: the loader worker gets it too
        return time.monotonic()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)

    def wait(self, timeout: float = 60) -> int:
        try:
            self.process.wait(timeout=timeout)
        finally:
            self.stop()
        self._reader.join(timeout=10)
        while (line := self._lines.get_nowait() if not self._lines.empty() else None) is not None:
            self.lines.append(line)
        return self.process.returncode

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


def test_a_loader_worker_that_cannot_read_its_shard_ends_the_run_in_one_line(cache, tmp_path, capsys):
    """A damaged shard the cache's own checks miss (its size and modification time unchanged). train.py used to
    print the worker's traceback and then wait forever in multiprocessing's exit handler (that wait is
    ``test_a_process_that_exits_while_its_loader_runs_does_not_wait_for_the_workers``)."""
    copy = Path(shutil.copytree(cache, tmp_path / "cache"))  # never damage the shared cache
    shards = sorted(copy.glob("packed/*/train/shard-00000.parquet"))
    assert shards, "the session cache has packed shards"
    for shard in shards:
        stat = shard.stat()
        data = bytearray(shard.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 4096] = random.Random(0).randbytes(len(data[middle:middle + 4096]))
        shard.write_bytes(bytes(data))
        os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    run = RunDirectory(tmp_path / "run")

    started = time.monotonic()
    code = exit_code(train_in_process, *small(copy, steps=4, logger=None), "data.num_workers=2",
                     f"hydra.run.dir={run.path}")
    stderr = capsys.readouterr().err
    assert time.monotonic() - started < 60, "the run ends once the worker fails"
    assert code == 2, f"exit {code}:\n{stderr[-3000:]}"
    [line] = error_lines(stderr)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert re.match(r"error: loader worker \d \(pid \d+\) failed: OSError: cannot read .*shard-00000\.parquet "
                    r"\(row group \d+\): .+; the shard is damaged: delete .+ and run again to rebuild it$", line), line
    assert any(str(shard) in line for shard in shards), line
    assert json.loads(run.metrics.read_text())["status"] == "failed"


@pytest.mark.e2e
def test_ctrl_c_saves_at_the_step_stops_without_validating_and_the_run_resumes_counting_on(cache, tmp_path, capsys):
    """The signal path that SIGTERM and SIGUSR1 share (Preemption), by Ctrl-C: the terminal signals its whole
    foreground group, loader worker included. Output redirected, as under nohup or SLURM: step lines on stdout."""
    run = RunDirectory(tmp_path / "run")
    # no validation is due before step 1000: one after the signal would be the stop's own (Lightning's default)
    training = Training([*small(cache, steps=200, logger="csv"), "data.num_workers=1", "trainer.log_every_n_steps=2",
                         "trainer.val_check_interval=1000", f"hydra.run.dir={run.path}"], tmp_path)
    training.read_until("step 4/200")
    signalled = training.signal(signal.SIGINT)
    code = training.wait()
    seconds = time.monotonic() - signalled
    stderr = training.stderr

    assert code == 128 + signal.SIGINT, f"exit {code}:\n{stderr[-3000:]}"
    assert seconds < 30, f"{seconds:.1f} s from Ctrl-C to exit"
    assert not error_lines(stderr) and "Traceback" not in stderr, stderr[-3000:]
    metrics = json.loads(run.metrics.read_text())
    saved = metrics["global_step"]
    assert metrics["status"] == "interrupted" and saved >= 4 and metrics["epoch"] == 0
    assert f"interrupted by SIGINT (Ctrl-C) at step {saved}: saved {run.last_checkpoint}; " \
           f"continue with: python train.py resume={run.path}" in stderr
    assert torch.load(run.last_checkpoint, map_location="cpu", weights_only=False)["global_step"] == saved
    assert not [key for key in metrics if key.startswith("val/")], "no validation after the signal"
    with run.csv_metrics.open(newline="") as file:
        assert not [row for row in csv.DictReader(file) if row.get("val/loss")], "no validation after the signal"
    assert not any(line.startswith(("validation at step", "probes at step")) for line in training.lines)

    steps = [STEP_LINE.match(line) for line in training.lines]
    assert [int(found[1]) for found in steps if found] == list(range(2, saved + 1, 2)), training.lines
    assert all(found[2] == "200" for found in steps if found)
    log = (run.path / "train.log").read_text()
    assert re.search(r"step 4/200  loss \d", log), "train.log has the step lines too"

    ended = exit_code(train_in_process, f"resume={run.path}", f"trainer.max_steps={saved + 2}", "data.num_workers=0")
    stdout = capsys.readouterr().out
    assert ended == 0, stdout[-3000:]
    metrics = json.loads(run.metrics.read_text())
    assert metrics["global_step"] == saved + 2 and metrics["status"] == "finished"
    assert metrics["epoch"] == 0, "the epoch that max_steps cut short is not counted as done"
    checkpoint = torch.load(run.last_checkpoint, map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 0 and checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 0
    resumed = [int(found[1]) for found in map(STEP_LINE.match, stdout.splitlines()) if found]
    assert resumed and all(saved < step <= saved + 2 for step in resumed), stdout[-3000:]


@pytest.mark.e2e
def test_a_second_ctrl_c_aborts_at_once_without_saving(cache, tmp_path):
    run = RunDirectory(tmp_path / "run")
    # steps of a fraction of a second (model=small, 4 rows), so that the second Ctrl-C comes before the step ends
    training = Training([*small(cache, steps=200, logger="csv"), "model=small", "data.batch_size=4",
                         "data.num_workers=1", "trainer.log_every_n_steps=1", f"hydra.run.dir={run.path}"], tmp_path)
    training.read_until("step 1/200")
    signalled = training.signal(signal.SIGINT)
    deadline = time.monotonic() + 30
    while "Ctrl-C again aborts at once" not in training.stderr:  # the first one was handled
        assert time.monotonic() < deadline and training.process.poll() is None, training.stderr[-3000:]
        time.sleep(0.01)
    training.signal(signal.SIGINT)
    code = training.wait()
    seconds = time.monotonic() - signalled
    stderr = training.stderr

    assert code == 128 + signal.SIGINT and seconds < 20, f"exit {code} after {seconds:.1f} s:\n{stderr[-3000:]}"
    assert "aborted by a second Ctrl-C at step" in stderr
    assert not error_lines(stderr) and "Traceback" not in stderr, stderr[-3000:]
    assert json.loads(run.metrics.read_text())["status"] == "aborted"
    assert not run.last_checkpoint.exists()


class Numbers(IterableDataset):
    """0, 1, 2, ... from each loader worker; worker ``fails`` raises (or is killed) at its third item."""

    def __init__(self, fails: int = -1, how: str = "raise"):
        self.fails, self.how = fails, how

    def __iter__(self):
        worker = get_worker_info().id
        for index in range(10_000):
            if worker == self.fails and index == 2:
                if self.how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise ZeroDivisionError("a bug in the worker")
            yield torch.tensor([index])


def test_a_loader_worker_that_dies_or_raises_is_named_and_its_loader_ends():
    for how, code, said in (("kill", 2, "was killed by SIGKILL (out of memory?"),
                            ("raise", 1, "failed: ZeroDivisionError: a bug in the worker")):
        loader = PreemptibleLoader(Numbers(fails=1, how=how), batch_size=None, num_workers=2)
        batches = iter(loader)
        workers = list(batches._workers)
        with pytest.raises((RuntimeError, LoaderFailed)) as raised:  # torch reports a death from its SIGCHLD handler
            for _ in batches:
                pass
        failure = loader_failure(raised.value)
        assert isinstance(failure, LoaderFailed) and failure.exit_code == code, raised.value
        assert str(failure).startswith(f"loader worker 1 (pid {workers[1].pid}) ") and said in str(failure), failure
        assert how == "kill" or "Traceback" in failure.details
        deadline = time.monotonic() + 10
        while any(worker.is_alive() for worker in workers):
            assert time.monotonic() < deadline, "the loader's other worker is ended too"
            time.sleep(0.05)


@pytest.mark.e2e
def test_a_process_that_exits_while_its_loader_runs_does_not_wait_for_the_workers():
    """Its workers let the first SIGTERM pass, which is what multiprocessing's exit handler sends them."""
    script = (
        "import sys\n"
        "from torch.utils.data import IterableDataset\n"
        "from undertale.data.workers import PreemptibleLoader\n"
        "class Numbers(IterableDataset):\n"
        "    def __iter__(self):\n"
        "        return iter(range(10 ** 9))\n"
        "batches = iter(PreemptibleLoader(Numbers(), batch_size=None, num_workers=2))\n"
        "next(batches)\n"
        "sys.exit(3)\n"
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3 and time.monotonic() - started < 30, result.stderr[-3000:]


def test_the_progress_bar_of_a_resumed_run_counts_its_epoch_on_from_where_it_stopped():
    def trainer(processed: int, epoch_starting: bool) -> SimpleNamespace:
        epochs = SimpleNamespace(ready=2 if epoch_starting else 1, started=1)
        return SimpleNamespace(
            num_training_batches=1000, max_steps=361, global_step=341, accumulate_grad_batches=1,
            fit_loop=SimpleNamespace(epoch_progress=SimpleNamespace(current=epochs), epoch_loop=SimpleNamespace(
                batch_progress=SimpleNamespace(current=SimpleNamespace(processed=processed)))))

    bar = ProgressBar()
    bar._trainer = trainer(processed=341, epoch_starting=False)  # resumed at batch 341 of a 1000-batch epoch
    assert bar.total_train_batches == 361, "341 batches done and 20 to go, not 341/20"
    bar._trainer = trainer(processed=1000, epoch_starting=True)  # a new epoch: its batches count from 0
    assert bar.total_train_batches == 20
