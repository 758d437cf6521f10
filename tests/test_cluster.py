"""Beyond one machine: submitit sweeps, Optuna search, two-node DDP (torchrun and SLURM variables), Dask corpus."""

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import lightning
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from undertale.data.config import DataConfig
from undertale.data.corpus.build import CorpusOptions, build_corpus
from undertale.training.wandb_offline import read_offline_run

from helpers import BINARIES as SMALL_BINARIES, CONF, ROOT, run_script, script_environment, small, start_script


class RowsSeen(lightning.Callback):
    """Test probe, added to a real run with ``+callbacks.rows``: the rows this rank trained on and its
    rank, written to ``<directory>/rank<global rank>.json`` when training ends."""

    def __init__(self, directory: str):
        self.directory = Path(directory)
        self.rows: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        original = torch.where(batch["labels"] != -100, batch["labels"], batch["tokens"])
        self.rows += [hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in original]

    def on_train_end(self, trainer, pl_module):
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"rank{trainer.global_rank}.json").write_text(json.dumps({
            "world_size": trainer.world_size, "node_rank": trainer.node_rank, "pid": os.getpid(),
            "range": list(trainer.datamodule.train_dataset.rank_range()), "rows": self.rows,
        }))


def overrides(cache: Path, steps: int, **replace: str) -> list[str]:
    """``small(cache, steps)`` with some keys set (``trainer="multinode"``): the last value of a key wins."""
    replace = {key.replace("__", "."): value for key, value in replace.items()}
    return small(cache, steps) + [f"{key}={value}" for key, value in replace.items()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def offline_run(job: Path):
    [directory] = sorted((job / "wandb").glob("offline-run-*"))
    return read_offline_run(directory)


# --- 1. SLURM sweeps ---------------------------------------------------------------------------

@pytest.mark.e2e
def test_local_submitit_sweep_runs_each_job_in_its_own_process(cache, tmp_path):
    sweep = tmp_path / "sweep"
    sweeper = start_script(
        "train.py", "-m", "hydra/launcher=local", "hydra.launcher.timeout_min=10",
        *overrides(cache, 4, trainer__val_check_interval="2"), "masking.probability=0.1,0.3",
        "hydra.job_logging.formatters.simple.format='[%(process)d] %(message)s'", f"hydra.sweep.dir={sweep}",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stdout, stderr = sweeper.communicate(timeout=600)
    assert sweeper.returncode == 0, f"{stdout[-3000:]}\n{stderr[-5000:]}"
    pids, runs = set(), []
    for job in (sweep / "0", sweep / "1"):
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "finished" and metrics["global_step"] == 4 and metrics["run_dir"] == str(job)
        pids |= set(re.findall(r"^\[(\d+)\] ", (job / "train.log").read_text(), flags=re.MULTILINE))
        runs.append(offline_run(job))
    assert len(pids) == 2 and str(sweeper.pid) not in pids, "each job in its own process, not the sweep's"
    submitted = [path.name for path in (sweep / ".submitit").iterdir() if path.name.isdigit()]
    assert len(submitted) == 2, "two submitit jobs (local job ids are their controllers' pids)"
    assert runs[0].run_id != runs[1].run_id and runs[0].group == runs[1].group == f"train-{sweep.name}"
    assert [run.config["masking"]["probability"] for run in runs] == [0.1, 0.3]
    assert all(run.exit_code == 0 for run in runs)


def sbatch_script(arguments: list[str], folder: Path) -> str:
    """The sbatch script hydra-submitit-launcher would submit for these overrides (no cluster needed)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    with initialize_config_dir(str(CONF), version_base="1.3"):
        config = compose("train", overrides=arguments, return_hydra_config=True)
    params = instantiate(config.hydra.launcher).params  # resolved against the trainer group
    # as BaseSubmititLauncher.launch builds its executor
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=params["max_num_timeout"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in base else f"slurm_{key}": value for key, value in params.items()
                                  if key not in ("submitit_folder", "max_num_timeout")})
    return executor._executor._make_submission_file_text("python -u -m submitit.core._submit FOLDER", "uid")


def test_slurm_preset_sizes_the_job_from_the_trainer_and_requeues_on_usr1(tmp_path, monkeypatch):
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit builds a SLURM executor only where srun exists
    (stub / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}{os.pathsep}{os.environ['PATH']}")
    script = sbatch_script(
        ["hydra/launcher=slurm", "trainer=multinode", "trainer.num_nodes=2", "trainer.devices=4",
         "hydra.launcher.partition=gpu"], tmp_path / "submitit",
    )
    lines = script.splitlines()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --signal=USR1@120", "#SBATCH --requeue", "#SBATCH --time=1440",
                 "#SBATCH --partition=gpu", "#SBATCH --open-mode=append"):
        assert line in lines, f"{line} not in:\n{script}"
    assert not any(line.startswith("#SBATCH --signal=USR2") for line in lines)
    setup, command = lines.index("export SUBMITIT_PREEMPT_SIGNAL=USR1"), next(
        index for index, line in enumerate(lines) if line.startswith("srun "))
    assert setup < command and "submitit.core._submit" in lines[command]

    single = sbatch_script(["hydra/launcher=slurm", "trainer=gpu"], tmp_path / "single").splitlines()
    assert {"#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=1"} <= set(single)


# --- 2. Optuna ---------------------------------------------------------------------------------

@pytest.mark.e2e
def test_optuna_search_finds_the_best_trial_and_logs_each_to_wandb(cache, tmp_path):
    sweep = tmp_path / "sweep"
    run_script("train.py", "-m", "hydra/sweeper=optuna_tpe", "hydra.sweeper.n_trials=3",
               *overrides(cache, 4, trainer__val_check_interval="2"),
               "optimizer.lr=tag(log,interval(1e-3,1e-2))", "masking.probability=interval(0.1,0.3)",
               f"hydra.sweep.dir={sweep}")
    jobs = sorted((path for path in sweep.iterdir() if path.name.isdigit()), key=lambda path: int(path.name))
    assert [job.name for job in jobs] == ["0", "1", "2"]
    accuracy = {job.name: json.loads((job / "metrics.json").read_text())["val/accuracy"] for job in jobs}
    runs = [offline_run(job) for job in jobs]
    assert len({run.run_id for run in runs}) == 3 and {run.group for run in runs} == {f"train-{sweep.name}"}

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optimizer.lr", "masking.probability"}
    assert results["best_value"] == pytest.approx(max(accuracy.values()))
    best = [job for job in jobs if accuracy[job.name] == pytest.approx(results["best_value"])]
    configs = [yaml.safe_load((job / "config.yaml").read_text()) for job in best]
    assert any(config["optimizer"]["lr"] == pytest.approx(results["best_params"]["optimizer.lr"])
               and config["masking"]["probability"] == pytest.approx(results["best_params"]["masking.probability"])
               for config in configs)
    lrs = [yaml.safe_load((job / "config.yaml").read_text())["optimizer"]["lr"] for job in jobs]
    assert len(set(lrs)) == 3 and all(1e-3 <= lr <= 1e-2 for lr in lrs)


def test_optuna_search_experiment_composes_a_seeded_maximising_search():
    with initialize_config_dir(str(CONF), version_base="1.3"):
        config = compose("train", overrides=["experiment=optuna_search"], return_hydra_config=True)
    sweeper = config.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 0
    assert (sweeper.n_jobs, str(config.hydra.mode)) == (1, "RunMode.MULTIRUN")
    assert set(sweeper.params) == {"optimizer.lr", "optimizer.warmup", "masking.probability"}
    assert "log" in sweeper.params["optimizer.lr"]


@pytest.mark.parametrize("overrides, direction", [
    (["hydra/sweeper=optuna_tpe"], "maximize"),                                    # task=maskedlm: val/accuracy, max
    (["hydra/sweeper=optuna_tpe", "task=similarity"], "maximize"),                 # val/mrr, max
    (["hydra/sweeper=optuna_tpe", "task.monitor=val/loss", "task.mode=min"], "minimize"),
    (["experiment=optuna_search", "task.monitor=val/loss", "task.mode=min"], "minimize"),
])
def test_the_sweepers_direction_follows_the_tasks_monitor_mode(overrides, direction):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        config = compose("train", overrides=overrides, return_hydra_config=True)
    assert config.hydra.sweeper.direction == direction
    sweeper = instantiate(config.hydra.sweeper)  # as Hydra builds it: the plugin gets the resolved value
    assert str(sweeper.sweeper.direction).endswith(direction)


# --- 3. Multi-node, for real -------------------------------------------------------------------

def _two_nodes(launch: str, cache: Path, tmp_path: Path) -> tuple[Path, Path]:
    run_dir, probe = tmp_path / "outputs" / "run", tmp_path / "rows"
    port = free_port()
    arguments = [
        "train.py", *overrides(cache, 4, trainer="multinode", trainer__accelerator="cpu", trainer__devices="1"),
        "+callbacks.rows._target_=test_cluster.RowsSeen", f"+callbacks.rows.directory={probe}",
        f"hydra.run.dir={run_dir}",
    ]
    tests = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    environment = script_environment({"PYTHONPATH": tests})
    if launch == "torchrun":
        commands = [([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                      "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                      *arguments, "trainer.num_nodes=2"], environment) for node in (0, 1)]
    else:  # what srun sets for one task on each of two nodes; trainer=multinode reads SLURM_NNODES
        slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242",
                 "SLURM_JOB_NAME": "train", "SLURM_NODELIST": "127.0.0.1", "SLURM_LOCALID": "0",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        commands = [([sys.executable, *arguments], environment | slurm | {"SLURM_PROCID": str(node),
                                                                            "SLURM_NODEID": str(node)})
                    for node in (0, 1)]
    logs = [tmp_path / f"node{node}.log" for node in (0, 1)]  # files, not pipes: neither node blocks on output
    handles = [log.open("w") for log in logs]
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
                 for (command, env), handle in zip(commands, handles)]
    try:
        for process in processes:
            process.wait(timeout=300)
    finally:
        for process, handle in zip(processes, handles):
            process.kill()
            handle.close()
    for process, log in zip(processes, logs):
        assert process.returncode == 0, f"{launch} node failed ({process.returncode}):\n{log.read_text()[-5000:]}"
    return run_dir, probe


@pytest.mark.e2e
@pytest.mark.parametrize("launch", ["torchrun", "slurm"])
def test_two_nodes_train_one_run_on_disjoint_rows(launch, cache, tmp_path):
    run_dir, probe = _two_nodes(launch, cache, tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 4 and metrics["status"] == "finished"
    assert [path.name for path in run_dir.parent.iterdir()] == ["run"], "one run directory"
    [offline] = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert read_offline_run(offline).run_id == metrics["wandb_id"]
    ranks = [json.loads((probe / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [rank["world_size"] for rank in ranks] == [2, 2] and {rank["node_rank"] for rank in ranks} == {0, 1}
    assert ranks[0]["pid"] != ranks[1]["pid"]
    (start0, stop0), (start1, stop1) = ranks[0]["range"], ranks[1]["range"]
    assert start0 < stop0 <= start1 < stop1, "each rank its own rows of the epoch"
    assert len(ranks[0]["rows"]) == len(ranks[1]["rows"]) == 4 * 16
    assert not set(ranks[0]["rows"]) & set(ranks[1]["rows"]), "no row trained on by both ranks"


# --- 4. Corpus builds on Dask ------------------------------------------------------------------

def comparable(manifest: dict) -> dict:
    """A manifest less what may differ between executors: timing, the scheduler and the instructions
    decoded (work done: each process-pool worker skips functions it decoded before; Dask workers do not)."""
    manifest = json.loads(json.dumps(manifest))
    for key in ("seconds", "created"):
        manifest.pop(key)
    manifest["parameters"].pop("scheduler", None)
    manifest["counts"].pop("decoded_instructions")
    return manifest


def assert_same_corpus(first: Path, second: Path) -> None:
    one, two = (json.loads((path / "manifest.json").read_text()) for path in (first, second))
    assert comparable(one) == comparable(two)
    for split in ("train", "validation"):
        assert one["shards"][split]
        for shard in one["shards"][split]:
            same = pq.read_table(first / split / shard).equals(pq.read_table(second / split / shard))
            assert same, f"{split}/{shard} differs"


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


@pytest.mark.parametrize("options", [
    CorpusOptions(validation_fraction=0.25, min_instructions=4),  # repeats of filtered functions count as duplicates
    CorpusOptions(validation_fraction=0.25, max_functions=600, rows_per_shard=100),  # stops early; several shards
], ids=["min-instructions", "budget"])
def test_dask_corpus_equals_the_process_pool_corpus(options, dask_cluster, tmp_path):
    pool = build_corpus(tmp_path / "pool", SMALL_BINARIES, options, workers=2, progress=False)
    dask = build_corpus(tmp_path / "dask", SMALL_BINARIES, options, workers=2, progress=False,
                        scheduler=dask_cluster.scheduler_address)
    assert_same_corpus(tmp_path / "pool", tmp_path / "dask")
    assert dask["parameters"]["scheduler"] == dask_cluster.scheduler_address and dask["counts"]["duplicates"] > 0
    one = build_corpus(tmp_path / "one", SMALL_BINARIES, options, workers=1, progress=False)
    assert comparable(one) | {"parameters": None} == comparable(pool) | {"parameters": None}, "any worker count"


def test_corpus_command_with_a_local_dask_cluster(tmp_path):
    options = CorpusOptions(validation_fraction=0.25)
    build_corpus(tmp_path / "pool", SMALL_BINARIES, options, workers=2, progress=False)
    result = run_script("-m", "undertale.data", "corpus", str(tmp_path / "dask"), *SMALL_BINARIES,
                        "--validation-fraction", "0.25", "--scheduler", "local", "--workers", "2", timeout=300)
    assert "functions" in result.stdout
    assert_same_corpus(tmp_path / "pool", tmp_path / "dask")
    assert json.loads((tmp_path / "dask" / "manifest.json").read_text())["parameters"]["scheduler"] == "local"


def test_data_scheduler_builds_tokenizes_and_packs_on_dask_like_the_process_pool(dask_cluster, tmp_path):
    settings = dict(source="binaries", paths=SMALL_BINARIES[:2], max_functions=500, tokenizer_functions=500)
    local = DataConfig(**settings, cache_dir=str(tmp_path / "local")).prepare(64, progress=False)
    data = DataConfig(**settings, cache_dir=str(tmp_path / "dask"), scheduler=dask_cluster.scheduler_address,
                      tokenizer=str(local.tokenizer))  # one tokenizer: BPE training breaks ties arbitrarily
    prepared = data.prepare(64, progress=False)
    manifest = json.loads((prepared.corpus / "manifest.json").read_text())
    assert manifest["parameters"]["scheduler"] == dask_cluster.scheduler_address
    assert len(list((tmp_path / "dask" / "corpus").iterdir())) == 1
    distributed = pytest.importorskip("distributed")
    with distributed.Client(dask_cluster) as client:  # the scheduler ran one task per shard of each step
        ran = client.run_on_scheduler(lambda dask_scheduler: set(dask_scheduler.task_prefixes))
    assert {"read_file", "tokenize_shard", "pack_shard"} <= ran, ran
    for name in ("tokenized", "packed"):  # tokenized and packed on Dask, shard by shard: the same rows
        ours, theirs = (sorted((tmp_path / side / name).rglob("*.parquet")) for side in ("dask", "local"))
        assert ours and len(ours) == len(theirs)
        for one, two in zip(ours, theirs):
            assert one.name == two.name and pq.read_table(one).equals(pq.read_table(two)), f"{name}: {one}"


def test_unreachable_scheduler_is_one_line(tmp_path):
    result = run_script("-m", "undertale.data", "corpus", str(tmp_path / "c"), "/usr/bin/ls",
                        "--scheduler", f"tcp://127.0.0.1:{free_port()}", check=False, timeout=120,
                        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})  # not the default 30 s
    assert result.returncode == 2 and result.stderr.startswith("error: cannot use the Dask scheduler")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c" / "manifest.json").exists()
