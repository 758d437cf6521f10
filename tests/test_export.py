"""export.py: a run as a Hugging Face-style directory, loaded three ways to the checkpoint's own outputs.

1. ``FunctionEncoder.from_pretrained`` (no Lightning) gives the vectors of ``FunctionEncoder.from_run``;
2. ``transformers``' ``AutoModel`` / ``AutoModelForMaskedLM`` (remote code) give the checkpoint's hidden states
   and logits, and the fill-mask pipeline fills ``[MASK]``;
3. ``safetensors`` into undertale's encoder class built from ``config.json`` gives its hidden states.

Both a pretraining run (the session's ``trained_run``) and a similarity run (a tiny one made here from it) export.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from undertale.inference.embedding import FunctionEncoder
from undertale.inference.export import export_command, export_run
from undertale.runtime.runs import RunDirectory

from helpers import ROOT, one_line_error, run_script

ATOL = 1e-5
# real instruction traces of different lengths: padding in a batch, and one longer than a 64-token window
TEXTS = [
    "push rbp [NEXT] mov rbp rsp [NEXT] mov dword ptr [ rbp - 20 ] edi [NEXT] pop rbp [NEXT] ret",
    " [NEXT] ".join(["mov rax qword ptr [ rbx + 8 ]", "add rax 1", "push rbp", "pop rbp", "cmp eax 4096"] * 8),
    "xor eax eax [NEXT] ret",
    "sub rsp 24 [NEXT] call 4198400 [NEXT] test eax eax [NEXT] je 4198512 [NEXT] add rsp 24 [NEXT] ret",
]


def make_similarity_run(pretrained: Path, directory: Path) -> Path:
    """A fine-tuned run's directory without fine-tuning: the pretrained encoder, a seeded projection head
    (``mean+max`` pooling), saved as train.py saves a ``task=similarity`` checkpoint."""
    from undertale.models.similarity import InstructionTraceTransformerEncoderForSimilarity
    from undertale.tasks.similarity import MODULE

    shutil.copytree(pretrained, directory, ignore=shutil.ignore_patterns("wandb", "checkpoints", "*.json"))
    shutil.copy(pretrained / "tokenizer.json", directory / "tokenizer.json")
    saved, _ = RunDirectory(pretrained).read()
    sizes = {key: value for key, value in saved["hyper_parameters"].items()
             if key in ("depth", "hidden_dimensions", "vocab_size", "sequence_length", "heads",
                        "intermediate_dimensions", "next_token_id", "dropout", "eps", "attention_dropout")}
    torch.manual_seed(0)
    model = InstructionTraceTransformerEncoderForSimilarity(**sizes, projection_size=32, pooling="mean+max")
    model.encoder.load_state_dict({key.removeprefix("encoder."): value for key, value in saved["state_dict"].items()
                                   if key.startswith("encoder.")})
    (directory / "checkpoints").mkdir()
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict(), "global_step": 3},
               directory / "checkpoints" / "last.ckpt")
    config = OmegaConf.load(directory / "config.yaml")
    config.model._target_ = MODULE
    config.task = {"_target_": "undertale.tasks.similarity.SimilarityTask", "pooling": "mean+max",
                   "projection_size": 32}
    OmegaConf.save(config, directory / "config.yaml")
    (directory / "metrics.json").write_text(json.dumps({"status": "finished", "global_step": 3, "val/mrr": 0.5}))
    return directory


@pytest.fixture(scope="module")
def runs(trained_run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    return {"maskedlm": trained_run, "similarity": make_similarity_run(trained_run, root / "similarity-run")}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory) -> dict[str, Path]:
    """Each run exported once; distinct directory names (transformers caches remote code by the name)."""
    root = tmp_path_factory.mktemp("exported")
    return {task: export_run(run, root / f"undertale-{task}-export") for task, run in runs.items()}


def test_the_export_writes_config_weights_tokenizer_card_and_remote_code(exported, runs):
    for task, directory in exported.items():
        names = {path.name for path in directory.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
                "configuration_undertale.py", "modeling_undertale.py", "encoder.py", "positions.py"} <= names
        config = json.loads((directory / "config.json").read_text())
        saved, _ = RunDirectory(runs[task]).read()
        assert config["model_type"] == "undertale" and config["task"] == task and config["torch_dtype"] == "float32"
        assert config["hidden_dimensions"] == saved["hyper_parameters"]["hidden_dimensions"]
        assert config["special_tokens"]["[MASK]"] == config["mask_token_id"] == 4 and config["pad_token_id"] == 0
        assert config["training"]["steps"] == saved["global_step"]
        assert ("AutoModelForMaskedLM" in config["auto_map"]) == (task == "maskedlm")
        card = (directory / "README.md").read_text()
        assert "license: mit" in card and f"steps: {saved['global_step']}" in card and "## Limitations" in card
        encoder = (directory / "encoder.py").read_text()
        assert "from .positions import" in encoder and "from undertale." not in encoder
    similarity = json.loads((exported["similarity"] / "config.json").read_text())
    assert (similarity["pooling"], similarity["projection_size"]) == ("mean+max", 32)
    assert not list(exported["maskedlm"].parent.glob(".*"))  # no temporary directory left beside the outputs


@pytest.mark.parametrize("task", ["maskedlm", "similarity"])
def test_function_encoder_from_pretrained_gives_the_vectors_of_from_run(exported, runs, task):
    cpu = torch.device("cpu")
    for windows in ("all+first", "first"):
        expected = FunctionEncoder.from_run(runs[task], device=cpu, windows=windows, batch_size=3).embed(TEXTS)
        loaded = FunctionEncoder.from_pretrained(exported[task], device=cpu, windows=windows, batch_size=3)
        assert np.allclose(loaded.embed(TEXTS), expected, atol=ATOL, rtol=0)
    assert loaded.pooling == ("mean+max" if task == "similarity" else "mean")


def test_from_pretrained_loads_without_lightning_or_transformers(exported):
    code = ("import sys; sys.modules['transformers'] = None\n"
            "from undertale.inference.embedding import FunctionEncoder\n"
            f"vectors = FunctionEncoder.from_pretrained({str(exported['similarity'])!r}).embed(['xor eax eax [NEXT] ret'])\n"
            "assert vectors.shape == (1, 64), vectors.shape\n"
            "assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def encoded(directory: Path) -> dict[str, torch.Tensor]:
    """TEXTS through the exported tokenizer, padded to the longest and cut at the window."""
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(str(directory))
    inputs = tokenizer(TEXTS, return_tensors="pt", padding=True, truncation=True)
    assert set(inputs) == {"input_ids", "attention_mask"} and (inputs["attention_mask"] == 0).any()
    return dict(inputs)


def test_transformers_auto_classes_equal_the_checkpoint(exported, runs):
    transformers = pytest.importorskip("transformers")
    for task, directory in exported.items():
        module = RunDirectory(runs[task]).load().module
        inputs = encoded(directory)
        # the exported tokenizer gives the ids of the run's own
        own = FunctionEncoder.from_run(runs[task], device=torch.device("cpu")).tokenizer.encode(TEXTS[0]).ids
        assert inputs["input_ids"][0, :len(own)].tolist() == own
        model = transformers.AutoModel.from_pretrained(str(directory), trust_remote_code=True).eval()
        with torch.no_grad():
            output = model(**inputs)
            expected = module.encoder(inputs["input_ids"], inputs["attention_mask"])
        assert torch.allclose(output.last_hidden_state, expected, atol=ATOL, rtol=0)
        if task == "similarity":  # one window: pooler_output is FunctionEncoder's vector of the first window
            first = FunctionEncoder.from_run(runs[task], device=torch.device("cpu"), windows="first")
            assert np.allclose(output.pooler_output.numpy(), first.embed(TEXTS), atol=ATOL, rtol=0)
        else:
            masked = transformers.AutoModelForMaskedLM.from_pretrained(str(directory), trust_remote_code=True).eval()
            with torch.no_grad():
                logits = masked(**inputs).logits
                assert torch.allclose(logits, module(inputs["input_ids"], inputs["attention_mask"]), atol=ATOL, rtol=0)


def test_the_fill_mask_pipeline_fills_an_instruction_trace(exported):
    transformers = pytest.importorskip("transformers")
    fill = transformers.pipeline("fill-mask", model=str(exported["maskedlm"]), trust_remote_code=True)
    filled = fill("push rbp [NEXT] mov rbp [MASK] [NEXT] pop rbp [NEXT] ret", top_k=3)
    assert len(filled) == 3 and all(candidate["token_str"] != "[MASK]" for candidate in filled)
    assert filled[0]["sequence"].startswith("push rbp [NEXT] mov rbp ")  # [NEXT] is kept when decoding


def test_plain_pytorch_loads_the_safetensors_into_the_encoder_class(exported, runs):
    from safetensors.torch import load_file

    from undertale.models.encoder import InstructionTraceTransformerEncoder

    for task, directory in exported.items():
        config = json.loads((directory / "config.json").read_text())
        encoder = InstructionTraceTransformerEncoder(**{key: config[key] for key in (
            "depth", "hidden_dimensions", "vocab_size", "sequence_length", "heads", "intermediate_dimensions",
            "next_token_id", "dropout", "eps", "attention_dropout")}).eval()
        state = load_file(str(directory / "model.safetensors"))
        encoder.load_state_dict({key.removeprefix("encoder."): value for key, value in state.items()
                                 if key.startswith("encoder.")})
        module = RunDirectory(runs[task]).load().module
        tokens = torch.tensor([[6, 7, 5, 8, 5, 9, 0, 0], [10, 5, 11, 12, 13, 5, 14, 15]])
        mask = (tokens != 0).long()
        with torch.no_grad():
            assert torch.allclose(encoder(tokens, mask), module.encoder(tokens, mask), atol=ATOL, rtol=0)


def test_the_export_needs_no_transformers(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    written = export_run(runs["maskedlm"], tmp_path / "plain")
    assert {"config.json", "model.safetensors", "tokenizer.json", "modeling_undertale.py", "README.md"} <= {
        path.name for path in written.iterdir()}


def command(**values) -> dict:
    return OmegaConf.create({"run": None, "output": None, "overwrite": False} | values)


def test_bad_input_is_one_error_line_and_nothing_half_written(runs, tmp_path, capsys):
    def fails(**values) -> str:
        assert export_command(command(**values)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    (tmp_path / "empty").mkdir()
    assert "not a run directory" in fails(run=str(tmp_path / "empty"), output=str(tmp_path / "out"))
    assert "does not exist" in fails(run=str(tmp_path / "nowhere"), output=str(tmp_path / "out"))
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert "overwrite=true" in fails(run=str(runs["maskedlm"]), output=str(full))
    assert (full / "keep.txt").read_text() == "mine"
    (tmp_path / "a-file").write_text("")
    assert "cannot write output" in fails(run=str(runs["maskedlm"]), output=str(tmp_path / "a-file" / "out"))
    assert not (tmp_path / "out").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file", "empty", "full"]  # no temporary left

    assert export_command(command(run=str(runs["maskedlm"]), output=str(full), overwrite=True)) == 0
    assert not (full / "keep.txt").exists() and (full / "model.safetensors").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file", "empty", "full"]


def test_the_command_line_reports_a_mistake_in_one_line(tmp_path):
    result = run_script("export.py", f"run={tmp_path / 'nowhere'}", f"output={tmp_path / 'out'}", check=False)
    assert "does not exist" in one_line_error(result)
    assert not (tmp_path / "out").exists()
