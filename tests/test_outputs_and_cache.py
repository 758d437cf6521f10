"""Outputs checked before any work, a full disk named in one line, a data cache that repairs itself, a waiting
run that says what it waits for (issue 29: findings 6, 7 and 8).

Read-only directories: ``chmod`` for an ordinary user; as root (who writes through permissions) a read-only bind
mount of the directory, when this process may mount, else the test is skipped. A full disk: a real 2 MiB tmpfs
(root with CAP_SYS_ADMIN, else skipped), and, anywhere, a real ``EFBIG`` from the kernel under a small
``RLIMIT_FSIZE`` (SIGXFSZ ignored) during the same ``torch.save`` the checkpoint writer makes.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf

from undertale.data import pipeline
from undertale.data.cache import cache_lock
from undertale.runtime.errors import OutputError
from undertale.runtime.outputs import check_writable, run_command
from undertale.training.checkpointing import AtomicCheckpointIO

from conftest import prepare_small
from helpers import BINARIES, ROOT, app_in_process, exit_code, script_environment, small, train_in_process

ROOT_USER = os.geteuid() == 0


def _mount(*arguments: str) -> bool:
    return subprocess.run(["mount", *arguments], capture_output=True).returncode == 0


@contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """``directory`` made read-only for this process and its children: ``chmod a-w`` for an ordinary user, a
    read-only bind mount as root; the test is skipped when neither is possible."""
    directory.mkdir(parents=True, exist_ok=True)
    if not ROOT_USER:
        mode = directory.stat().st_mode
        directory.chmod(0o555)
        try:
            yield directory
        finally:
            directory.chmod(mode)
        return
    if not _mount("--bind", str(directory), str(directory)):
        pytest.skip("root writes through permissions, and this process may not mount a read-only directory")
    try:
        if not _mount("-o", "remount,bind,ro", str(directory)):
            pytest.skip("root writes through permissions, and this process may not remount read-only")
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


@contextmanager
def tiny_disk(directory: Path, size: str = "2m") -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``directory`` (root with CAP_SYS_ADMIN only: else the test is skipped)."""
    directory.mkdir(parents=True, exist_ok=True)
    if not ROOT_USER or not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)):
        pytest.skip("a small filesystem needs root with CAP_SYS_ADMIN (mount -t tmpfs)")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def refused(folder: Path) -> str:
    """Why :func:`read_only` makes ``folder`` refuse a new file, as the commands say it."""
    if ROOT_USER:
        return f"{folder} is on a read-only filesystem"
    return f"{folder} does not allow writing (permission denied)"


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def content(path: Path) -> str:
    """A file's SHA256; a corpus manifest's fingerprint and shard records (it also holds when it was built)."""
    if path.name == "manifest.json":
        manifest = json.loads(path.read_text())
        return json.dumps([manifest["fingerprint"], manifest["shard_files"]])
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- finding 6: config mistakes and outputs, before any work ---------------------------------------------


def test_a_missing_data_path_is_one_line_before_any_work_and_makes_no_run_directory(cache, tmp_path, capsys):
    run_dir = tmp_path / "run"
    started = time.monotonic()
    code = exit_code(train_in_process, *small(cache), f"data.paths=[{BINARIES[0]},{tmp_path / 'no-such-binary'}]",
                     f"hydra.run.dir={run_dir}")
    stderr = capsys.readouterr().err
    assert code == 2 and error_lines(stderr) == [
        f"error: data.paths[1]: {tmp_path / 'no-such-binary'} does not exist; give existing ELF files, directories "
        "or globs"], stderr
    assert "Traceback" not in stderr and time.monotonic() - started < 10
    assert not run_dir.exists(), "no run directory is made for a config mistake"


def test_train_refuses_a_read_only_run_directory_and_cache_before_any_work(cache, tmp_path, capsys):
    with read_only(tmp_path / "locked") as locked:
        for arguments, expected in (
            ([f"hydra.run.dir={locked / 'run'}"], f"error: run directory {locked / 'run'} is not writable"),
            ([f"paths.cache_dir={locked / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"],
             f"error: data cache {locked / 'cache'} is not writable"),
        ):
            code = exit_code(train_in_process, *small(cache), *arguments)
            lines = error_lines(capsys.readouterr().err)
            assert code == 2 and len(lines) == 1 and lines[0].startswith(f"{expected}: {refused(locked)}; "), lines
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_a_read_only_run_before_any_work(trained_copy, capsys):
    from undertale.evaluation.entry import before_hydra, run_task

    with read_only(trained_copy) as run:
        started = time.monotonic()
        code = exit_code(app_in_process, "evaluate", run_task, f"run={run}", "logger=none", before=before_hydra)
        stdout, stderr = capsys.readouterr()
    assert code == 2 and error_lines(stderr) == [
        f"error: result file {run / 'evaluation.json'} is not writable: {refused(run)}; evaluate.py writes it into "
        "the run directory: copy the run to a writable place and evaluate the copy"], stderr
    assert "evaluate:" not in stdout, "nothing was evaluated"
    assert time.monotonic() - started < 10 and not (run / "evaluation.json").exists()


@pytest.mark.parametrize("command, output", [
    ("embed", "vectors.parquet"), ("export", "model"), ("index", "index"), ("search", "matches.json"),
])
def test_every_writing_command_checks_its_output_first(command, output, tmp_path, capsys):
    from importlib import import_module

    module = import_module(f"undertale.commands.{command}")
    work = getattr(module, command, None)  # embed, export, index: the check, then the command's work
    arguments = {
        "embed": ["run=/no/such/run", "binaries=[/usr/bin/ls]"],
        "export": ["run=/no/such/run"],
        "index": ["model=/no/such/run", "binaries=/usr/bin/ls"],
        "search": ["index=/no/such/index", "query=/usr/bin/ls"],
    }[command]
    with read_only(tmp_path / "locked") as locked:
        target = locked / "new" / output

        def run(cfg) -> int:
            return module.search_command(cfg) if work is None else run_command(work, cfg, output=cfg.output)

        if command == "index":  # its model= is also a config group of train.py's, registered in this process
            values = dict(argument.split("=", 1) for argument in arguments) | {"output": str(target)}
            code = run(OmegaConf.create(values))
        else:
            code = app_in_process(command, run, *arguments, f"output={target}")
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1, lines
    assert f"is not writable: {refused(locked)}" in lines[0], lines  # before the missing run or index is found


@pytest.mark.parametrize("command", ["embed", "export", "index", "search"])
def test_a_mistake_in_the_command_line_is_one_line(command, monkeypatch, capsys):
    from importlib import import_module

    monkeypatch.setattr(sys, "argv", [f"{command}.py", "outptu=x"])
    assert exit_code(import_module(f"undertale.commands.{command}").main) == 2
    assert error_lines(capsys.readouterr().err) == ["error: outptu is not a config key; did you mean output? "
                                                    "(to add a new key on purpose: +outptu=...)"]


def test_data_commands_check_their_outputs_in_a_real_process(cache, tmp_path):
    corpus = next((cache / "corpus").iterdir())
    with read_only(tmp_path / "locked") as locked:
        result = subprocess.run([sys.executable, "-m", "undertale.data", "tokenizer", str(corpus),
                                 str(locked / "tokenizer.json")], cwd=ROOT, env=script_environment(),
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: tokenizer file {locked / 'tokenizer.json'} is not writable: {refused(locked)}; choose another "
        "tokenizer file"], result.stderr


def test_check_writable_names_what_is_wrong(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutputError, match=r"cannot be created: .*a-file is a file, not a directory"):
        check_writable(tmp_path / "a-file" / "out.json")
    with pytest.raises(OutputError, match=r"is a directory; give a file name"):
        check_writable(tmp_path)
    assert check_writable(tmp_path / "new" / "deeper" / "out.json") == tmp_path / "new" / "deeper" / "out.json"
    assert not (tmp_path / "new").exists(), "checking creates nothing"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file"], "the probe file is removed"


# --- finding 6: a disk that fills during the work ------------------------------------------------------------


def test_a_full_disk_during_a_checkpoint_write_is_one_line_naming_the_checkpoint(cache, tmp_path, capsys):
    with tiny_disk(tmp_path / "small") as disk:  # room for the run's files, not for its 18 MB checkpoint
        run_dir = disk / "run"
        code = exit_code(train_in_process, *small(cache, steps=1, logger=None), f"hydra.run.dir={run_dir}")
        stderr = capsys.readouterr().err
        assert code == 2, stderr
        assert error_lines(stderr) == [f"error: disk full writing checkpoint {run_dir / 'checkpoints' / 'last.ckpt'} "
                                       f"(0 bytes free on {disk}); free space there or write elsewhere"], stderr
        assert "Traceback" not in stderr and "inline_container" not in stderr
        assert list((run_dir / "checkpoints").iterdir()) == [], "no temporary file is left on the full disk"


def test_torch_s_own_write_error_is_named_with_the_checkpoint(tmp_path):
    """A real kernel refusal (EFBIG under RLIMIT_FSIZE) inside torch.save, which torch reports as
    ``RuntimeError: [enforce fail at inline_container.cc...]``."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, limits[1]))
    try:
        with pytest.raises(OutputError) as raised:
            AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(1 << 16)}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert str(raised.value).startswith(f"file too large writing checkpoint {path}: it passes the file size limit")
    assert "inline_container" in str(raised.value.__cause__), "torch wrapped the kernel's error in its own"
    assert list(path.parent.iterdir()) == []


# --- finding 7: a cache that repairs itself -------------------------------------------------------------------


def entry_files(cache: Path) -> dict[str, Path]:
    """One file of each kind of cache entry: the tokenizer, the corpus manifest, a tokenized and a packed shard."""
    return {
        "tokenizer": next((cache / "tokenizers").glob("*-v*.json")),
        "manifest": next((cache / "corpus").glob("*/manifest.json")),
        "tokenized": next((cache / "tokenized").glob("*/validation/*.parquet")),
        "packed": next((cache / "packed").glob("*/train/*.parquet")),
    }


def test_corrupt_entries_are_named_once_rebuilt_and_the_run_succeeds(cache, tmp_path, capsys):
    copy = Path(shutil.copytree(cache, tmp_path / "cache", ignore=shutil.ignore_patterns(".prepare.lock")))
    # every entry of each kind is cut short (the shared cache may hold entries of other tests' settings too)
    kinds = {"tokenizers": "*-v*.json", "corpus": "*/manifest.json", "tokenized": "*/validation/*.parquet",
             "packed": "*/train/*.parquet"}
    damaged = {path.relative_to(copy): content(cache / path.relative_to(copy))
               for kind, pattern in kinds.items() for path in (copy / kind).glob(pattern)}
    for relative in damaged:
        path = copy / relative
        with open(path, "r+b") as handle:  # cut short, as a write killed halfway or a full disk leaves it
            handle.truncate(path.stat().st_size // 2)

    code = exit_code(train_in_process, *small(copy, steps=2, logger=None), f"hydra.run.dir={tmp_path / 'run'}")
    stderr = capsys.readouterr().err
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: cache entry")]
    assert len(warnings) == 4, warnings
    for kind in kinds:  # the run's one entry of each kind, named once and rebuilt byte for byte
        named = [line for line in warnings if line.startswith(f"warning: cache entry {kind}/")]
        assert len(named) == 1 and f" in {copy} is corrupt" in named[0] and "rebuilding it" in named[0], (kind, warnings)
        entry = Path(named[0].split()[3])
        rebuilt = [relative for relative in damaged if relative == entry or entry in relative.parents]
        assert rebuilt and all(content(copy / relative) == damaged[relative] for relative in rebuilt
                               if (copy / relative).stat().st_size), (kind, rebuilt)
    assert "JSONDecodeError" not in stderr and "EOF while parsing" not in stderr


def test_a_corrupt_tokenizer_given_by_the_user_is_one_line_naming_it(cache, tmp_path):
    broken = tmp_path / "tokenizer.json"
    broken.write_bytes(entry_files(cache)["tokenizer"].read_bytes()[:5000])
    with pytest.raises(ValueError, match=rf"tokenizer file {broken} cannot be read \(EOF while parsing"):
        pipeline.load_tokenizer(broken)


def test_stale_temporary_files_are_removed_and_unrecorded_entries_recorded(cache, tmp_path, capsys):
    copy = Path(shutil.copytree(cache, tmp_path / "cache", ignore=shutil.ignore_patterns(".prepare.lock")))
    files = entry_files(copy)
    stale = [files["tokenizer"].with_suffix(".json.tmp"), files["tokenized"].with_suffix(".parquet.tmp"),
             copy / "packed" / "interrupted.tmp" / "train" / "shard-00000.parquet"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 1000)
    record = files["tokenizer"].with_name(files["tokenizer"].stem + ".manifest.json")
    record.unlink()  # a tokenizer cached before records were kept
    (copy / ".verified.json").unlink()

    prepare_small(copy, packing=True)
    stderr = capsys.readouterr().err
    assert "removed 3 temporary file(s) of interrupted writes (3,000 bytes)" in stderr
    assert not any(path.exists() for path in stale) and not (copy / "packed" / "interrupted.tmp").exists()
    assert "warning" not in stderr and record.is_file(), "a whole tokenizer is recorded, not rebuilt"


def test_a_checkpoint_temporary_of_a_dead_writer_is_removed_and_others_kept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    left = folder / f".last.ckpt.{dead.pid}@{host}.tmp"
    own = folder / f".best.ckpt.{os.getpid()}@{host}.tmp"
    elsewhere = folder / f".last.ckpt.{dead.pid}@another-{host}.tmp"
    for path in (left, own, elsewhere):
        path.write_bytes(b"\0" * 100)
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, folder / "last.ckpt")
    assert sorted(path.name for path in folder.iterdir()) == sorted(["last.ckpt", own.name, elsewhere.name])


# --- finding 8: a run waiting for the cache lock says so ------------------------------------------------------


WAITER = """
import sys
from undertale.data import cache, pipeline
cache.WAIT_REPORT_SECONDS = 0.5
pipeline.prepare("parquet", sys.argv[1], directory=sys.argv[2], sequence_length=8, merges=16, tokenizer_functions=8)
print("prepared", flush=True)
"""


def first_lines(stream, count: int, timeout: float) -> list[str]:
    """Up to ``count`` lines of a child's pipe, or fewer when it writes nothing more for ``timeout`` seconds."""
    received, deadline = b"", time.monotonic() + timeout
    while received.count(b"\n") < count and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], deadline - time.monotonic())
        chunk = os.read(stream.fileno(), 4096) if ready else b""
        if not chunk:
            break
        received += chunk
    return received.decode().splitlines()[:count]


@pytest.mark.timeout(180)
def test_a_second_process_says_which_pid_holds_the_cache_lock(tmp_path):
    corpus = tmp_path / "corpus"
    for split in ("train", "validation"):
        (corpus / split).mkdir(parents=True)
        pq.write_table(pa.table({"disassembly": ["push rbp [NEXT] mov rbp rsp [NEXT] pop rbp [NEXT] ret"] * 8}),
                       corpus / split / "shard-00000.parquet")
    with cache_lock(tmp_path / "cache"):  # this process holds the lock, as a first run preparing the cache would
        waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(tmp_path / "cache"), str(corpus)], cwd=ROOT,
                                  env=script_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = first_lines(waiter.stderr, 2, timeout=60)
    stdout, rest = waiter.communicate(timeout=120)
    lock = tmp_path / "cache" / ".prepare.lock"
    assert len(lines) == 2, lines + [rest.decode()]
    assert lines[0].startswith(f"waiting for the cache lock held by PID {os.getpid()} ({lock})"), lines
    assert lines[1].startswith(f"still waiting for the cache lock held by PID {os.getpid()} ({lock})"), lines
    assert waiter.returncode == 0 and stdout.decode().endswith("prepared\n"), rest.decode()
