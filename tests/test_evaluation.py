"""Evaluation: target classes, per-class validation metrics, masking.exclude, and evaluate.py end to end."""

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from undertale.data.tokenizer import NEXT, train_tokenizer
from undertale.evaluation import entry
from undertale.metrics.token_classes import (
    CLASSES, MNEMONIC, NEXT as NEXT_CLASS, NUMBER, OTHER, REGISTER, UNKNOWN, classify, target_classes,
    token_class_table,
)
from undertale.models.maskedlm import MaskedLMCollator, MaskedLMMetrics
from undertale.models.masking import exclude_ids
from undertale.settings.masking import MaskingSettings
from undertale.training.wandb_offline import read_offline_run

from helpers import app_in_process, exit_code, one_line_error, run_script

NUMBERS = ("count", "share", "accuracy", "loss", "perplexity", "baseline_most_frequent", "baseline_class_most_frequent")


def evaluate_here(*arguments: str) -> None:
    """``python evaluate.py <arguments>``'s work in this process (its checks first; a mistake: SystemExit)."""
    app_in_process("evaluate", entry.run_task, *arguments, before=entry.before_hydra)


# --- target classes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("push rbp [NEXT] mov dword ptr [ rbp - 20 ] edi [NEXT] rep stosq [NEXT] ret",
     "mnemonic register [NEXT] mnemonic memory memory memory register memory number memory register [NEXT] "
     "mnemonic mnemonic [NEXT] mnemonic"),
    ("mov rax qword ptr fs : [ 40 ] [NEXT] lock cmpxchg qword ptr [ rdi ] rdx [NEXT] movaps xmmword ptr [ rsp ] xmm0",
     "mnemonic register memory memory register memory memory number memory [NEXT] mnemonic mnemonic memory memory "
     "memory register memory register [NEXT] mnemonic memory memory memory register memory register"),
    ("fxch st(1) [NEXT] vpxor ymm0 ymm0 zmm31 [NEXT] kmovw k1 r8d [NEXT] mov eax 1234 __56 [NEXT] lea rax [ rip + 8 ]",
     "mnemonic register [NEXT] mnemonic register register register [NEXT] mnemonic register register [NEXT] "
     "mnemonic register number number [NEXT] mnemonic register memory register memory number memory"),
    ("stp x29 x30 [ sp - 32 ] ! [NEXT] ld1 { v0.4s v1.4s } [ x1 ] [NEXT] add x0 x1 w2 uxtw 2 [NEXT] b.ne 64",
     "mnemonic register register memory register memory number memory memory [NEXT] mnemonic other register "
     "register other memory register memory [NEXT] mnemonic register register register other number [NEXT] "
     "mnemonic number"),
    ("frob [UNK] __12 [NEXT] [UNK] rax [NEXT] ldr q0 [ xzr ] [NEXT] fmov d1 s2",
     "mnemonic [UNK] number [NEXT] [UNK] register [NEXT] mnemonic register memory register memory [NEXT] "
     "mnemonic register register"),
])
def test_token_classes_of_known_tokens(text, expected):
    assert classify(text.split()) == expected.split()


def test_target_classes_of_a_packed_batch_from_a_tokenizer():
    tokenizer = train_tokenizer(["push rbp [NEXT] mov rbp rsp [NEXT] rep stosq [NEXT] ret"] * 2, merges=16,
                                sequence_length=16)
    table = token_class_table(tokenizer)
    assert len(table) == tokenizer.get_vocab_size()
    first, second = tokenizer.encode("push rbp [NEXT] rep stosq").ids[:5], tokenizer.encode("ret [NEXT] mov rbp 7").ids[:5]
    tokens = torch.tensor([first + second + [0] * 6, second + first + [0] * 6])
    mask = torch.tensor([[1] * 5 + [2] * 5 + [0] * 6] * 2)  # two functions packed per row, then padding
    targets = mask != 0
    got = target_classes(tokens, mask, targets, table).view(2, 10)
    one = [MNEMONIC, REGISTER, NEXT_CLASS, MNEMONIC, MNEMONIC]
    two = [MNEMONIC, NEXT_CLASS, MNEMONIC, REGISTER, NUMBER]  # the second function's first token: a mnemonic
    assert got.tolist() == [one + two, two + one]
    picked = torch.zeros_like(targets)
    picked[0, [1, 5]] = True
    assert target_classes(tokens, mask, picked, table).tolist() == [REGISTER, MNEMONIC]
    assert (CLASSES[OTHER], CLASSES[UNKNOWN]) == ("other", "[UNK]")


def test_per_class_states_are_summed_like_a_hand_count():
    metrics = MaskedLMMetrics(["a", "b", "c"])
    eye = torch.eye(4) * 5.0
    # batch 1: class a right, class b wrong; batch 2: class a wrong, class a right, class b right (c: no targets)
    metrics.update(eye[[0, 1]], torch.tensor([0, 2]), torch.tensor([0, 1]))
    metrics.update(eye[[3, 2, 1]], torch.tensor([1, 2, 1]), torch.tensor([0, 0, 1]))
    values = metrics.compute()
    assert metrics.class_total.tolist() == [3, 2, 0] and metrics.class_correct.tolist() == [2, 1, 0]
    assert values["accuracy"].item() == pytest.approx(3 / 5)
    assert values["accuracy/a"].item() == pytest.approx(2 / 3) and values["accuracy/b"].item() == pytest.approx(1 / 2)
    assert math.isnan(values["accuracy/c"].item()) and values["targets/c"].item() == 0
    losses = torch.nn.functional.cross_entropy(eye[[0, 1, 3, 2, 1]], torch.tensor([0, 2, 1, 2, 1]), reduction="none")
    assert values["loss/a"].item() == pytest.approx(losses[[0, 2, 3]].mean().item(), rel=1e-5)
    assert values["loss/b"].item() == pytest.approx(losses[[1, 4]].mean().item(), rel=1e-5)
    assert values["loss"].item() == pytest.approx(losses.mean().item(), rel=1e-5)
    overall_only = MaskedLMMetrics()
    overall_only.update(eye[[0, 1]], torch.tensor([0, 2]))
    assert set(overall_only.compute()) == {"loss", "accuracy", "perplexity", "targets"}


# --- masking.exclude ----------------------------------------------------------------------------------


def test_masking_exclude_keeps_tokens_out_of_the_targets():
    vocabulary = {"[PAD]": 0, "[UNK]": 1, "[SEP]": 2, "[CLS]": 3, "[MASK]": 4, NEXT: 5, "mov": 6}
    next_id = exclude_ids([NEXT], vocabulary)
    assert next_id == (5,)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(5, 64, (256, 128), generator=generator)  # [NEXT] (5) is about 1 in 59 of the tokens
    tokens[:, ::4] = 5  # and a quarter more
    mask = torch.ones_like(tokens)
    mask[:, 120:] = 0
    batch = {"tokens": tokens, "mask": mask, "seed": torch.tensor(7)}
    out = MaskedLMCollator(4, 64, probability=0.2, exclude_ids=next_id)(batch)
    targets = out["labels"] != -100
    assert targets.any() and not (targets & (tokens == 5)).any()
    eligible = (mask != 0) & (tokens != 5)
    assert not (targets & ~eligible).any()
    assert targets.sum().item() / eligible.sum().item() == pytest.approx(0.2, abs=0.01)
    # no exclusion draws exactly as before: the same seed masks the same positions
    plain, empty = MaskedLMCollator(4, 64, probability=0.2)(batch), MaskedLMCollator(4, 64, probability=0.2, exclude_ids=())(batch)
    assert all(torch.equal(plain[key], empty[key]) for key in plain)
    assert MaskingSettings().exclude == () and MaskingSettings(exclude=["[NEXT]"]).exclude == ("[NEXT]",)
    with pytest.raises(ValueError, match="exclude must be a list of token strings"):
        MaskingSettings(exclude="[NEXT]")
    with pytest.raises(ValueError, match=r"masking.exclude names 'NEXT'.*quote brackets"):
        exclude_ids(["NEXT"], vocabulary)


# --- a real run, evaluated --------------------------------------------------------------------------


@pytest.fixture
def trained(trained_copy) -> Path:
    """A copy of the shared 12-step training run (conftest), which keeps [UNK] out of its targets
    (masking.exclude): evaluate.py writes into the run it evaluates."""
    return trained_copy


def test_training_logs_per_class_validation_accuracy(trained):
    [offline] = sorted((trained / "wandb").glob("offline-run-*"))
    run = read_offline_run(offline)
    logged = {key for row in run.history for key in row}
    assert {f"val/accuracy/{name}" for name in ("next", "mnemonic", "register", "number", "memory")} <= logged
    assert "val/accuracy/unk" not in logged, "[UNK] is excluded from the targets"
    assert {"val/accuracy", "val/loss", "val/perplexity"} <= logged
    assert run.config["masking"]["exclude"] == ["[UNK]"]


def evaluation_numbers(result: dict) -> dict:
    return {"overall": {key: result["overall"][key] for key in NUMBERS},
            "classes": {name: {key: entry[key] for key in NUMBERS} for name, entry in result["classes"].items()}}


@pytest.mark.e2e
def test_evaluate_twice_gives_identical_numbers_per_class_with_baselines(trained, capsys):
    """Once as a command, once in this process."""
    first = run_script("evaluate.py", f"run={trained}", "batches=4")
    result = json.loads((trained / "evaluation.json").read_text())
    evaluate_here(f"run={trained}", "batches=4", "logger=none")
    second = capsys.readouterr().out
    assert evaluation_numbers(json.loads((trained / "evaluation.json").read_text())) == evaluation_numbers(result)

    assert {"overall", "classes", "data", "split", "checkpoint", "step"} <= set(result)
    assert result["split"] == "validation" and result["step"] == 12 and result["data"]["own"]
    assert result["checkpoint"] == str(trained / "checkpoints" / "last.ckpt")
    assert result["baseline_counts"] == "the run's training split"
    classes = result["classes"]
    assert list(classes) == ["next", "mnemonic", "register", "number", "memory", "other", "unk"]
    assert sum(entry["share"] for entry in classes.values()) == pytest.approx(1.0)
    assert sum(entry["count"] for entry in classes.values()) == result["overall"]["count"] > 0
    assert classes["unk"]["count"] == 0 and classes["unk"]["accuracy"] is None
    assert classes["next"]["baseline_most_frequent"] == 1.0 == classes["next"]["baseline_class_most_frequent"]
    assert classes["mnemonic"]["class_most_frequent_token"] == "mov"
    # the same 4 validation batches, masked with the same seeds, as the run's last validation
    metrics = json.loads((trained / "metrics.json").read_text())
    assert result["overall"]["accuracy"] == pytest.approx(metrics["val/accuracy"], abs=1e-6)
    assert result["overall"]["loss"] == pytest.approx(metrics["val/loss"], rel=1e-5)
    assert classes["next"]["accuracy"] == pytest.approx(metrics["val/accuracy/next"], abs=1e-6)

    for output in (first.stdout, second):
        header = next(line for line in output.splitlines() if line.startswith("class "))
        assert header.split()[:6] == ["class", "share", "targets", "accuracy", "loss", "perplexity"]
        rows = {line.split()[0] for line in output.splitlines() if line.strip()}
        assert {"overall", "[NEXT]", "mnemonic", "register", "number", "memory", "other", "[UNK]"} <= rows
    [offline] = sorted((trained / "evaluation" / "wandb").glob("offline-run-*"))
    logged = read_offline_run(offline)
    trained_id = json.loads((trained / "wandb.json").read_text())["id"]
    assert logged.job_type == "evaluate" and logged.group == trained_id and logged.exit_code == 0
    assert logged.summary["overall/accuracy"] == pytest.approx(result["overall"]["accuracy"])
    assert logged.summary["classes/mnemonic/share"] == pytest.approx(classes["mnemonic"]["share"])


def test_evaluate_held_out_binaries_with_the_run_tokenizer(trained, cache, capsys):
    tokenizers = sorted((cache / "tokenizers").iterdir())
    evaluate_here(f"run={trained}", "data=binaries", "data.paths=[/usr/bin/true]", "logger=none")
    printed = capsys.readouterr().out
    assert sorted((cache / "tokenizers").iterdir()) == tokenizers, "a tokenizer was trained"
    evaluation = json.loads((trained / "evaluation.json").read_text())
    assert evaluation["split"] == "all" and not evaluation["data"]["own"]
    assert evaluation["data"]["paths"] == ["/usr/bin/true"]
    assert Path(evaluation["data"]["prepared"]).is_relative_to(cache)
    assert evaluation["baseline_counts"] == "the run's training split"
    assert evaluation["overall"]["count"] > 0
    assert sum(entry["share"] for entry in evaluation["classes"].values()) == pytest.approx(1.0)
    assert "every split of /usr/bin/true" in printed


@pytest.mark.parametrize("case, message", [
    ("no run", "run=<run directory> is required"),
    ("no such run", "does not exist"),
    ("no checkpoint", "has no intact checkpoint"),
    ("no tokenizer", "has no tokenizer.json"),
    ("unknown split", "split=test is not a split"),
    ("typo", "spilt is not a config key; did you mean split?"),
])
def test_bad_inputs_are_one_line_errors(trained, tmp_path, case, message, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(trained / "config.yaml", partial)
    if case == "no checkpoint":
        shutil.copy(trained / "tokenizer.json", partial)
    if case == "no tokenizer":
        shutil.copytree(trained / "checkpoints", partial / "checkpoints")
    arguments = {
        "no run": [], "no such run": [f"run={tmp_path / 'missing'}"], "no checkpoint": [f"run={partial}"],
        "no tokenizer": [f"run={partial}"], "unknown split": [f"run={trained}", "split=test"],
        "typo": [f"run={trained}", "spilt=test"],
    }[case]
    code = exit_code(evaluate_here, *arguments)  # evaluate.py's work, in this process
    error = capsys.readouterr().err
    assert code == 2, error
    assert error.startswith("error: ") and message in error
    assert len(error.strip().splitlines()) == 1
    assert not (tmp_path / "missing").exists()


@pytest.mark.e2e
def test_a_bad_input_is_one_line_and_exit_code_2_from_the_command(trained_run):
    assert "split=test is not a split" in one_line_error(run_script("evaluate.py", f"run={trained_run}", "split=test",
                                                                    check=False))


def test_similarity_task_without_its_module_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, entry.SIMILARITY, None)  # as if the module were not installed
    with pytest.raises(SystemExit) as stopped:
        entry.run_task(OmegaConf.create({"task": "similarity"}))
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "similarity benchmark is not available" in error
    assert len(error.strip().splitlines()) == 1
