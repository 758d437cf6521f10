"""The Hydra framework end to end: train.py runs, sweeps, DDP, resume, W&B offline runs, experiments."""

import json
import os
from pathlib import Path

import lightning
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.utils import get_object, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from undertale.data.datamodule import InstructionTraceDataModule
from undertale.data.tokenizer import load_tokenizer, special_ids
from undertale.models.maskedlm import (
    InstructionTraceTransformerEncoderForMaskedLM,
    InstructionTraceTransformerEncoderForMaskedLMConfiguration as Sizes,
    MaskedLMCollator,
)
from undertale.settings.optimizer import OptimizerSettings
from undertale.training.callbacks import DataEpoch
from undertale.settings.store import sizes_of
from undertale.training.checks import check_config
from undertale.runtime.errors import ConfigError
from undertale.training.wandb_offline import read_offline_run

from conftest import prepare_small
from helpers import CONF, ROOT, SEQUENCE_LENGTH, exit_code, one_line_error, run_script, small, train_in_process


def run_train(arguments: list[str], check: bool = True):
    return run_script("train.py", *arguments, check=check)


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_quickstart_end_to_end_and_inference(cache, tmp_path, capsys):
    """train.py's work in this process (the process itself: tests/test_reliability.py), then infer.py."""
    run_dir = tmp_path / "run"
    train_in_process(*small(cache), f"hydra.run.dir={run_dir}")
    stdout = capsys.readouterr().out
    assert f"run directory: {run_dir}" in stdout
    assert "always predicting the most frequent token" in stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 12 and 0.0 <= metrics["val/accuracy"] <= 1.0
    assert 0.0 < metrics["baseline/most_frequent_token_accuracy"] < 1.0
    for name in ("config.yaml", "overrides.yaml", "tokenizer.json", "environment.json", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["sequence_length"] == SEQUENCE_LENGTH
    assert "debug=smoke" in yaml.safe_load((run_dir / "overrides.yaml").read_text())
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["accelerator"] == "cpu"

    [offline] = offline_runs(run_dir)
    run = read_offline_run(offline)
    assert run.exit_code == 0 and run.run_id == metrics["wandb_id"]
    assert run.config["model"]["depth"] == Sizes.tiny["depth"] and run.config["seed"] == 0
    assert run.config["environment"]["git"].get("commit") and "torch" in run.config["environment"]["versions"]
    assert run.config["environment"]["hardware"]["cpu_count"] == os.cpu_count()
    logged = {key for row in run.history for key in row}
    assert {"train/loss", "train/lr", "train/tokens_per_sec", "val/loss", "val/accuracy", "val/perplexity"} <= logged
    assert run.summary["val/accuracy"] == pytest.approx(metrics["val/accuracy"])
    tables = sorted(offline.glob("files/media/table/probes_*.table.json"), key=lambda path: path.stat().st_mtime)
    probes = json.loads(tables[-1].read_text())
    assert probes["columns"] == ["step", "probe", "text", "prediction", "top"]
    assert {row[0] for row in probes["data"]} == {6, 12} and len(probes["data"]) == 26
    assert {row[1] for row in probes["data"]} >= {"simple-xor-self", "calling-conventions-register-preserved"}
    special = {"[PAD]", "[UNK]", "[SEP]", "[CLS]", "[MASK]"}
    assert all(not special & set(row[3].split()) for row in probes["data"]), "a mask is never filled with a special token"
    assert "probes at step 12:" in stdout and "simple-xor-self" in stdout

    filled = run_script("infer.py", f"run={run_dir}", "text=push rbp [NEXT] mov rbp [MASK] [NEXT] ret", timeout=120)
    words = filled.stdout.split()
    assert words[:4] == ["push", "rbp", "[NEXT]", "mov"] and words[-2:] == ["[NEXT]", "ret"]
    assert "[MASK]" not in words


def test_large_ddp_composes_with_the_right_numbers():
    from undertale.training.entry import before_hydra

    argv = ["train.py", "model=large", "trainer=ddp", "--cfg", "job"]
    assert before_hydra(argv) == argv, "Hydra's own flags pass through train.py's checks"
    with initialize_config_dir(str(CONF), version_base="1.3"):
        config = OmegaConf.to_container(compose("train", overrides=["model=large", "trainer=ddp"]), resolve=True)
    assert {key: config["model"][key] for key in Sizes.large.keys()} == Sizes.large.as_dict()
    assert config["model"]["_target_"] == "undertale.models.maskedlm.InstructionTraceTransformerEncoderForMaskedLM"
    assert (config["trainer"]["strategy"], config["trainer"]["devices"], config["trainer"]["accelerator"]) == (
        "ddp", -1, "gpu"
    )


def test_each_size_is_written_once_and_its_group_option_builds_it():
    """The model group is generated from the presets: no YAML copy exists, every preset is an option."""
    assert not list((CONF / "model").glob("*.yaml"))
    for name, size in Sizes.options.items():
        with initialize_config_dir(str(CONF), version_base="1.3"):
            config = compose("train", overrides=[f"model={name}"])
        optimizer = instantiate(config.optimizer).as_dict()
        model = instantiate(config.model)(vocab_size=64, next_token_id=5, mask_token_id=4, **optimizer) if name == "tiny" else None
        assert sizes_of(config.model) == size, name
        if model is not None:
            assert isinstance(model, InstructionTraceTransformerEncoderForMaskedLM)
            assert model.hparams.depth == size.depth and model.hparams.lr == config.optimizer.lr


def test_every_config_target_resolves_to_its_class():
    with initialize_config_dir(str(CONF), version_base="1.3"):
        config = compose("train")
    assert get_object(config.model._target_) is InstructionTraceTransformerEncoderForMaskedLM
    assert get_object(config.masking._target_) is MaskedLMCollator
    assert isinstance(instantiate(config.optimizer), OptimizerSettings)
    assert instantiate(config.optimizer).lr == 1e-3  # the quickstart's choice; the class keeps 1e-4
    assert OptimizerSettings().lr == 1e-4


@pytest.mark.parametrize("experiment", sorted(path.stem for path in (ROOT / "experiments").glob("*.yaml")))
def test_every_experiment_composes(experiment):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        config = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    assert config.task_name == experiment
    if experiment == "pretrain_medium":
        assert sizes_of(config.model) == Sizes.medium
        assert (config.optimizer.lr, config.optimizer.warmup, config.optimizer.schedule) == (1e-4, 0.025, "cosine")
        assert config.masking.probability == 0.15 and config.callbacks.early_stopping.monitor == "val/accuracy"
    if experiment == "masking_sweep":
        assert config.hydra.sweeper.params["masking.probability"] == "0.1,0.15,0.2,0.3"
    if experiment == "quickstart":
        with initialize_config_dir(str(CONF), version_base="1.3"):
            default = compose("train")
        assert {key: config[key] for key in default if key != "task_name" and key != "logger"} == {
            key: default[key] for key in default if key != "task_name" and key != "logger"
        }


@pytest.mark.parametrize(
    "override, message",
    [
        ("model=huge", "model=huge: no such option of model (options: large, medium, small, tiny, xl)"),
        ("model=tyni", "did you mean tiny?"),
        ("trainer.devcies=2", "trainer.devcies is not a config key; did you mean trainer.devices?"),
        ("optimizer.lrr=0.1", "optimizer.lrr is not a config key; did you mean optimizer.lr?"),
    ],
)
def test_config_typos_fail_fast_with_the_closest_valid_choice(override, message, tmp_path, capsys):
    assert exit_code(train_in_process, override, f"hydra.run.dir={tmp_path / 'run'}") == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.e2e
def test_a_config_typo_is_one_line_and_exit_code_2_from_the_command(tmp_path):
    line = one_line_error(run_train(["model=tyni", f"hydra.run.dir={tmp_path / 'run'}"], check=False))
    assert "did you mean tiny?" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.e2e
def test_multirun_gives_one_wandb_run_per_job_in_one_group(cache, tmp_path):
    sweep = tmp_path / "sweep"
    run_train(["-m", *small(cache, steps=6), "masking.probability=0.1,0.3", f"hydra.sweep.dir={sweep}"])
    runs = []
    for job in ("0", "1"):
        [offline] = offline_runs(sweep / job)
        runs.append(read_offline_run(offline))
        assert json.loads((sweep / job / "metrics.json").read_text())["global_step"] == 6
    assert runs[0].run_id != runs[1].run_id
    assert runs[0].group == runs[1].group == f"train-{sweep.name}"
    assert [run.config["masking"]["probability"] for run in runs] == [0.1, 0.3]
    assert "masking.probability=0.1" in runs[0].name and "masking.probability=0.3" in runs[1].name
    assert all(run.exit_code == 0 and run.history for run in runs)
    assert runs[0].summary["val/loss"] != runs[1].summary["val/loss"]


@pytest.mark.e2e
def test_failed_job_marks_its_run_failed_and_keeps_its_directory(cache, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train([*small(cache), "trainer.max_steps=-1", "trainer.max_epochs=-1", f"hydra.run.dir={run_dir}"],
                       check=False)
    assert result.returncode != 0 and "set trainer.max_steps" in result.stderr
    failed = json.loads((run_dir / "metrics.json").read_text())
    assert failed["status"] == "failed" and "set trainer.max_steps" in failed["error"]
    [offline] = offline_runs(run_dir)
    assert read_offline_run(offline).exit_code == 1
    assert (run_dir / "config.yaml").is_file() and (run_dir / "train.log").is_file()


@pytest.mark.e2e
def test_ddp_cpu_trains_with_two_processes_and_one_output_directory(cache, tmp_path):
    outputs = tmp_path / "outputs"
    run_dir = outputs / "run"
    run_train([*small(cache, steps=6), "trainer=ddp_cpu", f"hydra.run.dir={run_dir}"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 6
    assert [path.name for path in outputs.iterdir()] == ["run"]
    assert len(offline_runs(run_dir)) == 1


def losses_of(run_dir: Path) -> list[float]:
    lines = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("train/loss")
    return [float(row.split(",")[column]) for row in lines[1:] if row.split(",")[column]]


def test_same_seed_same_losses(cache, tmp_path):
    """Three runs in one process, one after the other (as the jobs of a sweep): seeds 0, 0 and 1."""
    for job, seed in (("0", 0), ("1", 0), ("2", 1)):
        train_in_process(*small(cache, steps=6, logger="csv"), f"seed={seed}", f"hydra.run.dir={tmp_path / job}")
    losses = [losses_of(tmp_path / job) for job in ("0", "1", "2")]
    assert len(losses[0]) >= 3
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


class RecordBatches(lightning.Callback):
    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        original = torch.where(batch["labels"] != -100, batch["labels"], batch["tokens"])
        self.batches.append(original.clone())


def test_resumed_training_reads_the_next_unseen_rows(cache, tmp_path):
    """Mid-epoch checkpoint, then resume: the data continues exactly where the full run would be."""
    prepared = prepare_small(cache)
    ids = special_ids(load_tokenizer(prepared.tokenizer, SEQUENCE_LENGTH))

    def fit(steps: int, ckpt_path=None, save_at=None) -> RecordBatches:
        lightning.seed_everything(0, workers=True)
        model = InstructionTraceTransformerEncoderForMaskedLM(
            **Sizes.tiny.replace(sequence_length=SEQUENCE_LENGTH), vocab_size=ids["vocab_size"],
            next_token_id=ids["next_token_id"], mask_token_id=ids["mask_token_id"],
        )
        data = InstructionTraceDataModule(
            str(prepared.tokenized), MaskedLMCollator(ids["mask_token_id"], ids["vocab_size"]), batch_size=8,
            num_workers=2, seed=0,
        )
        recorder = RecordBatches()
        trainer = lightning.Trainer(
            max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[recorder, DataEpoch()] + ([ModelCheckpoint(tmp_path, "mid", every_n_train_steps=save_at)] if save_at else []),
            limit_val_batches=0, enable_checkpointing=bool(save_at),
        )
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        return recorder

    full = fit(14)
    fit(8, save_at=5)  # a checkpoint taken mid-epoch, while training goes on
    resumed = fit(14, ckpt_path=tmp_path / "mid.ckpt")
    assert len(resumed.batches) == 9
    for expected, actual in zip(full.batches[5:], resumed.batches):
        assert torch.equal(expected, actual)


def group_options(group: str) -> list[str]:
    """A group's options: its YAML files and the nodes generated in Python (undertale.settings.store)."""
    generated = [name.removesuffix(".yaml") for name in ConfigStore.instance().list(group)] if ConfigStore.instance().repo.get(group) else []
    return sorted({path.stem for path in (CONF / group).glob("*.yaml")} | set(generated))


@pytest.mark.parametrize(
    "group", ["trainer", "optimizer", "masking", "data", "logger", "callbacks", "model", "task", "paths", "debug"],
)
def test_every_option_of_every_group_composes(group):
    options = group_options(group)
    assert options
    for option in options:
        overrides = [f"{group}={option}"]
        if option in ("binaries",):
            overrides.append("data.paths=[/usr/bin/ls]")
        if option == "parquet":
            overrides.append("data.directory=/tmp")
        if option == "debian":
            overrides.append(f"data.packages={ROOT / 'corpora' / 'debian-bookworm-small.txt'}")
        if option in ("pairs", "similarity"):  # fine-tuning's data and task: they need a pairs build to check
            overrides = ["task=similarity", "data.pairs=/nonexistent"]
        with initialize_config_dir(str(CONF), version_base="1.3"):
            config = compose("train", overrides=overrides)
        resolved = OmegaConf.to_container(config, resolve=True)
        if group == "debug":  # a _global_ package: it sets keys of other groups
            assert resolved["trainer"]["accelerator"] == "cpu" and resolved["model"]["depth"] == Sizes.tiny.depth
        else:
            assert resolved[group] is not None, option
        if option in ("pairs", "similarity"):
            with pytest.raises(ConfigError, match="data.pairs: /nonexistent does not exist"):
                check_config(config)
            continue
        check_config(config)
    if group == "model":
        assert options == sorted(Sizes.options)
    if group == "trainer":
        with initialize_config_dir(str(CONF), version_base="1.3"):
            config = compose("train", overrides=["trainer=ddp_cpu"])
        assert (config.trainer.accelerator, config.trainer.devices, config.trainer.strategy) == ("cpu", 2, "ddp")


def test_binaries_without_paths_fails_before_any_work(tmp_path, capsys):
    assert exit_code(train_in_process, "data=binaries", "logger=none", f"hydra.run.dir={tmp_path / 'run'}") == 2
    assert "data.paths is required for data=binaries" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_fsdp_wraps_each_encoder_layer_and_refuses_cpu():
    from lightning.pytorch.strategies import FSDPStrategy

    from undertale.models.encoder import EncoderLayer
    from undertale.runtime.errors import ConfigError

    with initialize_config_dir(str(CONF), version_base="1.3"):
        config = compose("train", overrides=["trainer=fsdp", "model=large", "trainer.strategy.activation_checkpointing=true"])
    strategy = instantiate(config.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy) and config.trainer.precision == "bf16-mixed"
    assert EncoderLayer in strategy.kwargs["auto_wrap_policy"]._module_classes
    assert strategy._state_dict_type == "sharded"
    with initialize_config_dir(str(CONF), version_base="1.3"):
        on_cpu = compose("train", overrides=["trainer=fsdp", "trainer.accelerator=cpu"])
    with pytest.raises(ConfigError, match="trainer=fsdp needs GPUs"):
        check_config(on_cpu)


@pytest.mark.parametrize("trainer, refused", [("ddp", True), ("fsdp", True), ("ddp_cpu", False), ("gpu", False)])
def test_plain_sweep_refuses_jobs_that_would_spawn_gpu_ranks(trainer, refused, monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    from undertale.runtime.errors import RunError
    from undertale.training.run import _check_launch

    for name in ("LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    with initialize_config_dir(str(CONF), version_base="1.3"):
        config = compose("train", overrides=[f"trainer={trainer}", "hydra.mode=MULTIRUN"], return_hydra_config=True)
    HydraConfig.instance().set_config(config)
    try:
        if refused:
            with pytest.raises(RunError, match="cannot start multi-GPU DDP/FSDP jobs"):
                _check_launch(config)
            monkeypatch.setenv("SLURM_PROCID", "0")  # under srun (the slurm launcher) every rank is started for it
        _check_launch(config)
    finally:
        HydraConfig.instance().cfg = None
