"""infer.py end to end (a Hydra app, conf/infer.yaml): real processes on a tiny model trained from real data,
and its refusals."""

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import lightning
import pytest
import torch

from undertale.data.datamodule import InstructionTraceDataModule
from undertale.data.tokenizer import MASK, NEXT, SPECIAL_TOKENS, load_tokenizer, special_ids
from undertale.inference.fill_mask import forbidden
from undertale.models.maskedlm import (
    InstructionTraceTransformerEncoderForMaskedLM,
    InstructionTraceTransformerEncoderForMaskedLMConfiguration as Sizes,
    MaskedLMCollator,
)

from conftest import ROOT, SEQUENCE_LENGTH, prepare_small

TEXT = "push rbp [NEXT] mov rbp [MASK] [NEXT] sub rsp 16 [NEXT] mov dword ptr [ rbp - 4 ] [MASK] [NEXT] ret"


@pytest.fixture(scope="module")
def run_dir(cache, tmp_path_factory) -> Path:
    """A run directory (checkpoints/last.ckpt, tokenizer.json) of a tiny model trained for 20 steps."""
    prepared = prepare_small(cache)
    ids = special_ids(load_tokenizer(prepared.tokenizer, SEQUENCE_LENGTH))
    sizes = Sizes.tiny if isinstance(Sizes.tiny, dict) else dataclasses.asdict(Sizes.tiny)
    lightning.seed_everything(0)
    model = InstructionTraceTransformerEncoderForMaskedLM(
        **(sizes | {"sequence_length": SEQUENCE_LENGTH}), vocab_size=ids["vocab_size"],
        next_token_id=ids["next_token_id"], mask_token_id=ids["mask_token_id"], lr=3e-3,
    )
    data = InstructionTraceDataModule(
        str(prepared.tokenized), MaskedLMCollator(ids["mask_token_id"], ids["vocab_size"]), batch_size=8,
        num_workers=0, seed=0,
    )
    trainer = lightning.Trainer(
        max_steps=20, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, limit_val_batches=0,
    )
    trainer.fit(model, datamodule=data)
    run = tmp_path_factory.mktemp("run")
    trainer.save_checkpoint(run / "checkpoints" / "last.ckpt")
    shutil.copyfile(prepared.tokenizer, run / "tokenizer.json")
    return run


@pytest.fixture(scope="module")
def bare_run(run_dir, tmp_path_factory) -> Path:
    """The same run without its tokenizer.json."""
    run = tmp_path_factory.mktemp("bare")
    (run / "checkpoints").mkdir()
    shutil.copyfile(run_dir / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    return run


def infer(*arguments: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), *arguments], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def refused(result: subprocess.CompletedProcess, *phrases: str) -> None:
    """Exit status 2, nothing on stdout, one short ``error:`` line naming every phrase."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)


def check_filled(given: str, filled: str) -> None:
    """Every word but the masks kept; each mask became one ordinary token."""
    words, out = given.split(), filled.split()
    assert len(out) == len(words), filled
    for word, new in zip(words, out):
        if word == MASK:
            assert new not in SPECIAL_TOKENS, filled
        else:
            assert new == word, filled


def test_fill_keeps_the_words_and_never_predicts_a_special_token(run_dir):
    result = infer(f"run={run_dir}", f"text={TEXT}", "top=3")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    filled, *lines = result.stdout.strip().splitlines()
    check_filled(TEXT, filled)
    assert len(lines) == TEXT.split().count(MASK)
    best = []
    for number, line in enumerate(lines, 1):
        label, _, listed = line.partition(": ")
        options = [item.split(" ") for item in listed.split(", ")]
        probabilities = [float(probability) for _, probability in options]
        assert label == f"{MASK} {number}" and len(options) == 3, line
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.001, line
        assert not {token for token, _ in options} & set(SPECIAL_TOKENS), line
        best.append(options[0][0])
    masks = [index for index, word in enumerate(TEXT.split()) if word == MASK]
    assert [filled.split()[index] for index in masks] == best


def test_special_tokens_and_word_start_continuations_are_never_chosen():
    vocabulary = {token: index for index, token in enumerate(SPECIAL_TOKENS + ["rax", "__7"])}

    class Vocabulary:  # the two methods of a tokenizer that ``forbidden`` uses
        def token_to_id(self, token):
            return vocabulary[token]

        def get_vocab(self):
            return vocabulary

    logits = torch.tensor([[9.0] * len(SPECIAL_TOKENS) + [1.0, 2.0]] * 2)
    allowed = forbidden(Vocabulary(), logits, [True, False])  # the first [MASK] begins a word, the second does not
    assert allowed.argmax(-1).tolist() == [vocabulary["rax"], vocabulary["__7"]]


def test_empty_text_is_refused(run_dir):
    refused(infer(f"run={run_dir}", "text=   "), "text is empty", MASK)


def test_text_without_mask_is_refused(run_dir):
    refused(infer(f"run={run_dir}", "text=push rbp [NEXT] mov rbp rsp"), f"no {MASK}", "e.g. text=")


def test_mask_beyond_the_sequence_length_is_refused(run_dir):
    text = " ".join(["push rbp", NEXT] * 30) + f" mov rbp {MASK}"  # 93 tokens, the model reads 64
    result = infer(f"run={run_dir}", f"text={text}")
    refused(result, "93 tokens", f"first {SEQUENCE_LENGTH}", f"1 of its 1 {MASK} tokens")


def test_explicit_tokenizer_serves_a_run_without_one_and_unknown_words_are_named(run_dir, bare_run):
    """One process for two checks (each model load costs seconds): ``tokenizer=`` and the [UNK] warning."""
    text = TEXT.replace("sub rsp", "frobnicate rsp")
    result = infer(f"run={bare_run}", f"tokenizer={run_dir / 'tokenizer.json'}", f"text={text}")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "'frobnicate'" in lines[0], result.stderr
    check_filled(text, result.stdout.strip())


def test_run_without_tokenizer_and_none_given_is_refused(bare_run):
    refused(infer(f"run={bare_run}", f"text={TEXT}"), f"{bare_run} has no tokenizer.json", "tokenizer=")
    refused(infer(f"ckpt_path={bare_run / 'checkpoints' / 'last.ckpt'}", f"text={TEXT}"), "looked for", "tokenizer=")


def test_missing_run_directory_and_checkpoint_are_refused(tmp_path):
    missing_run, missing_checkpoint = tmp_path / "nowhere", tmp_path / "no.ckpt"
    refused(infer(f"run={missing_run}", f"text={TEXT}"), f"run directory {missing_run} does not exist")
    refused(infer(f"ckpt_path={missing_checkpoint}", f"text={TEXT}"), f"checkpoint {missing_checkpoint} does not exist")


def test_unknown_argument_and_bad_top_are_refused(run_dir):
    refused(infer("text=x [MASK]", "colour=blue"), "colour is not a config key")
    refused(infer(f"run={run_dir}", "text=x [MASK]", "top=0"), "top must be a positive whole number")
    refused(infer(f"run={run_dir}", "text=x [MASK]", "top=many"), "top must be a positive whole number", "'many'")


def test_missing_run_is_one_line_and_hydra_writes_nothing(tmp_path):
    refused(infer(f"text={TEXT}", cwd=tmp_path), "give run=<run directory> or ckpt_path=<file.ckpt>")
    refused(infer(cwd=tmp_path), "text=... is required")
    assert list(tmp_path.iterdir()) == [], "infer.py wrote files (Hydra's outputs/ or .hydra/)"


def test_text_is_taken_as_written(run_dir):
    """Quotes, backslashes and ${...} in the text reach the model as given (Hydra would parse them otherwise)."""
    text = "mov rax [MASK] [NEXT] it's \\ ${x}"
    result = infer(f"run={run_dir}", f"text={text}")
    assert result.returncode == 0, result.stderr
    filled = result.stdout.strip()
    assert filled.split()[3:] == text.split()[3:] and filled.split()[:2] == ["mov", "rax"], filled
