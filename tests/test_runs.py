"""One rule for every command that reads a run's checkpoint (RunDirectory.checkpoint), and one error (UsageError).

infer.py, evaluate.py's loader, FunctionEncoder.from_run (embed.py, the similarity benchmark) and
load_pretrained_encoder (fine-tuning's pretrained=) must choose the same checkpoint of the same run, warn the
same way when they skip one, and refuse a run without an intact checkpoint with a UsageError naming it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from undertale.data.tokenizer import load_tokenizer, special_ids
from undertale.evaluation import maskedlm as evaluation
from undertale.inference import fill_mask
from undertale.inference.embedding import FunctionEncoder
from undertale.models.similarity import InstructionTraceTransformerEncoderForSimilarity, load_pretrained_encoder
from undertale.runtime.errors import ConfigError, RunError, UsageError
from undertale.runtime.runs import RunDirectory

from conftest import ROOT

MARKED = "encoder.norm.weight"  # one tensor each copy fills with its own value, to tell the copies apart
TEXT = "push rbp [NEXT] mov rbp [MASK] [NEXT] ret"


def marked_copy(source: Path, target: Path, value: float, age: int) -> None:
    """``source`` saved again as ``target`` with ``MARKED`` filled with ``value`` and the step ``value``,
    modified ``age`` seconds ago."""
    saved = torch.load(source, map_location="cpu", weights_only=False)
    saved["state_dict"][MARKED].fill_(value)
    saved["global_step"] = int(value)
    torch.save(saved, target)
    stamp = target.stat().st_mtime - age
    os.utime(target, (stamp, stamp))


def truncate(path: Path, age: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    stamp = path.stat().st_mtime - age
    os.utime(path, (stamp, stamp))


@pytest.fixture(scope="module")
def damaged(trained_run, tmp_path_factory) -> Path:
    """A copy of the trained run whose two newest checkpoints (``last.ckpt`` and ``newer.ckpt``) are cut short:
    ``middle.ckpt`` (marked 2) is the newest intact one, ``oldest.ckpt`` (marked 1) an older one."""
    run = tmp_path_factory.mktemp("damaged") / "run"
    run.mkdir()
    for name in ("config.yaml", "tokenizer.json"):
        shutil.copy(trained_run / name, run / name)
    checkpoints = run / "checkpoints"
    checkpoints.mkdir()
    last = RunDirectory(trained_run).last_checkpoint
    marked_copy(last, checkpoints / "oldest.ckpt", 1.0, age=400)
    marked_copy(last, checkpoints / "middle.ckpt", 2.0, age=300)
    marked_copy(last, checkpoints / "newer.ckpt", 3.0, age=200)
    marked_copy(last, checkpoints / "last.ckpt", 4.0, age=100)
    truncate(checkpoints / "newer.ckpt", age=200)
    truncate(checkpoints / "last.ckpt", age=0)
    return run


@pytest.fixture(scope="module")
def hopeless(damaged, tmp_path_factory) -> Path:
    """The damaged run with every checkpoint cut short."""
    run = tmp_path_factory.mktemp("hopeless") / "run"
    shutil.copytree(damaged, run)
    for name in ("oldest.ckpt", "middle.ckpt"):
        truncate(run / "checkpoints" / name, age=0)
    return run


def one_warning(capsys, run: Path) -> str:
    """The one warning line printed since the last call: it names the run, both skipped files and the one used."""
    lines = capsys.readouterr().err.strip().splitlines()
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert len(warnings) == 1, lines
    warning = warnings[0]
    assert str(run) in warning and "last.ckpt" in warning and "newer.ckpt" in warning, warning
    assert warning.endswith("using middle.ckpt"), warning
    return warning


def marker(module: torch.nn.Module) -> float:
    return float(module.state_dict()[MARKED.removeprefix("encoder.")].flatten()[0])


def test_every_loader_falls_back_to_the_same_newest_intact_checkpoint(damaged, capsys):
    expected = damaged / "checkpoints" / "middle.ckpt"
    capsys.readouterr()

    # infer.py
    directory, checkpoint, _ = fill_mask.locate(None, str(damaged))
    assert checkpoint == expected
    warning = one_warning(capsys, damaged)
    model = fill_mask.load_model(directory, checkpoint, torch.device("cpu"))
    assert marker(model.encoder) == 2.0

    # evaluate.py
    run = RunDirectory(damaged)
    checkpoint = run.checkpoint()
    assert checkpoint == expected and one_warning(capsys, damaged) == warning
    vocab_size = special_ids(load_tokenizer(run.tokenizer))["vocab_size"]
    model, step = evaluation.load_model(run, checkpoint, vocab_size, torch.device("cpu"))
    assert step == 2 and marker(model.encoder) == 2.0

    # embed.py and the similarity benchmark
    encoder = FunctionEncoder.from_run(damaged, device=torch.device("cpu"))
    assert one_warning(capsys, damaged) == warning and marker(encoder.encoder) == 2.0

    # fine-tuning's pretrained=
    hyperparameters = torch.load(expected, map_location="cpu", weights_only=True)["hyper_parameters"]
    module = InstructionTraceTransformerEncoderForSimilarity(**hyperparameters)
    assert load_pretrained_encoder(module, run) == str(expected)
    assert one_warning(capsys, damaged) == warning and marker(module.encoder) == 2.0


def test_infer_command_falls_back_with_one_warning(damaged):
    result = subprocess.run([sys.executable, "infer.py", f"run={damaged}", f"text={TEXT}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and lines[0].endswith("using middle.ckpt"), lines
    assert len(result.stdout.split()) == len(TEXT.split())


def test_every_loader_refuses_a_run_without_an_intact_checkpoint(hopeless):
    named = f"run directory {hopeless} has no intact checkpoint"
    loaders = {
        "infer": lambda: fill_mask.locate(None, str(hopeless)),
        "evaluate": lambda: evaluation.evaluate(OmegaConf.create({"run": str(hopeless)}), []),
        "from_run": lambda: FunctionEncoder.from_run(hopeless),
        "pretrained": lambda: load_pretrained_encoder(None, RunDirectory(hopeless)),
    }
    for name, load in loaders.items():
        with pytest.raises(UsageError) as refused:
            load()
        message = str(refused.value)
        assert named in message and "last.ckpt" in message and "middle.ckpt" in message, (name, message)
        assert "\n" not in message, name


def test_infer_command_refuses_a_run_without_an_intact_checkpoint(hopeless, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "infer.py"), f"run={hopeless}", f"text={TEXT}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: run directory {hopeless} has no intact checkpoint")
    assert list(tmp_path.iterdir()) == [], "infer.py wrote files (Hydra's outputs/ or .hydra/)"


def test_last_checkpoint_wins_over_a_newer_one_and_a_given_file_is_verified(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    torch.save({"step": 1}, run.last_checkpoint)
    torch.save({"step": 2}, run.checkpoints / "best-step=2.ckpt")
    stamp = run.last_checkpoint.stat().st_mtime - 60
    os.utime(run.last_checkpoint, (stamp, stamp))
    warnings = []
    assert run.checkpoint(warnings.append) == run.last_checkpoint and warnings == []
    assert RunDirectory.locate(run.path, warnings.append) == (run, run.last_checkpoint)

    given = run.checkpoints / "best-step=2.ckpt"
    located, checkpoint = RunDirectory.locate(given)
    assert checkpoint == given and located.path == run.path.resolve()
    truncate(given, age=0)
    with pytest.raises(UsageError, match=f"checkpoint {given} is"):
        RunDirectory.locate(given)
    with pytest.raises(UsageError, match=f"checkpoint {tmp_path / 'no.ckpt'} does not exist"):
        RunDirectory.locate(tmp_path / "no.ckpt")
    with pytest.raises(UsageError, match=f"run directory {tmp_path / 'nowhere'} does not exist"):
        RunDirectory(tmp_path / "nowhere").checkpoint()
    empty = RunDirectory(tmp_path / "empty")
    empty.path.mkdir()
    with pytest.raises(UsageError, match=f"run directory {empty} has no intact checkpoint \\(none in"):
        empty.checkpoint()


def test_the_module_class_comes_from_the_run_config(tmp_path):
    run = RunDirectory(tmp_path)
    assert run.module_class().__name__ == "InstructionTraceTransformerEncoderForMaskedLM"  # no config.yaml
    target = "undertale.models.similarity.InstructionTraceTransformerEncoderForSimilarity"
    run.config.write_text(f"model:\n  _target_: {target}\n")
    assert run.module_class() is InstructionTraceTransformerEncoderForSimilarity
    run.config.write_text("model:\n  _target_: undertale.models.nothing.Here\n")
    with pytest.raises(UsageError, match="model._target_ undertale.models.nothing.Here is not a class"):
        run.module_class()


def test_every_expected_failure_is_a_usage_error_with_exit_code_2():
    for kind in (ConfigError, RunError):
        assert issubclass(kind, UsageError) and kind.exit_code == 2
    assert issubclass(UsageError, ValueError) and UsageError.exit_code == 2
