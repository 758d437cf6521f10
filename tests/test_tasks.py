"""The task group: a third task from outside the package (a module, a data module and a YAML file) runs
through train.py unchanged; the tasks' monitors drive checkpoints and sweeps."""

import json
import shutil

import pytest

from undertale.settings.store import call_with_offered
from undertale.training.checks import compose_command_line

from helpers import ROOT, one_line_error, run_script, train_in_process

EXAMPLE = ROOT / "examples" / "optimisation_levels"


def test_each_task_sets_the_checkpoint_monitor_and_its_data():
    pretraining = compose_command_line([])
    assert pretraining.callbacks.checkpoint.monitor == "val/accuracy"
    assert pretraining.data._target_.endswith("DataConfig")
    finetuning = compose_command_line(["task=similarity"])
    assert finetuning.callbacks.checkpoint.monitor == "val/mrr"
    assert finetuning.data._target_.endswith("PairsDataConfig")
    assert finetuning.callbacks.probes is None
    assert (pretraining.task_name, finetuning.task_name) == ("train", "similarity")


def test_offered_values_go_only_to_the_parameters_a_class_names():
    import functools

    def build(vocab_size, lr, levels=("O0",)):
        return vocab_size, lr, levels

    offered = {"vocab_size": 7, "lr": 0.1, "depth": 2, "levels": ("wrong",)}
    assert call_with_offered(functools.partial(build, levels=("O3",)), offered) == (7, 0.1, ("O3",))
    # a key the node leaves null (callbacks.checkpoint.dirpath: null) is offered too
    assert call_with_offered(functools.partial(build, lr=None), offered) == (7, 0.1, ("wrong",))


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_a_third_task_from_outside_the_package_trains_through_train_py(generated_pairs, trained_run, tmp_path,
                                                                        monkeypatch):
    """train.py's work in this process, the example's package on the path; its one-line mistake from train.py."""
    run_dir = tmp_path / "levels"
    monkeypatch.syspath_prepend(str(EXAMPLE))
    train_in_process(f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]", "task=levels",
                     f"task.tokenizer={trained_run / 'tokenizer.json'}", f"task.datamodule.pairs={generated_pairs}",
                     "task.module.levels=[O0,O3]", "model.sequence_length=64", "trainer=cpu", "trainer.max_steps=6",
                     "trainer.val_check_interval=3", "logger=csv", f"hydra.run.dir={run_dir}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["global_step"] == 6
    assert metrics["task"] == "ComposedTask" and 0 <= metrics["val/accuracy"] <= 1
    assert any(path.name.startswith("best-step") for path in (run_dir / "checkpoints").iterdir())
    # a mistake in the example's YAML is one line before any work, as for the built-in tasks
    missing = run_script("train.py", f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]", "task=levels",
                         "task.tokenizer=/nonexistent.json", f"task.datamodule.pairs={generated_pairs}",
                         env={"PYTHONPATH": str(EXAMPLE)}, check=False, timeout=120)
    assert "task.tokenizer=/nonexistent.json does not exist" in one_line_error(missing)
