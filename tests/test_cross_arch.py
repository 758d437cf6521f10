"""Function search across instruction sets: pairs cross-compiled for x86-64, AArch64 and i386, and fine-tuning on them.

Needs Debian's cross compilers (gcc-aarch64-linux-gnu, gcc-i686-linux-gnu); without them the build tests are
skipped, and the missing-compiler test still runs.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections import defaultdict
from pathlib import Path

import lightning
import pytest

from tests.conftest import generated_project
from tests.helpers import app_in_process, run_script, validation_mrr_before_and_after
from undertale.training.checks import compose_command_line

CROSS = ("aarch64-linux-gnu-gcc", "i686-linux-gnu-gcc")
needs_cross = pytest.mark.skipif(any(shutil.which(name) is None for name in CROSS),
                                 reason="Debian's gcc-aarch64-linux-gnu and gcc-i686-linux-gnu are not installed")
ELF_MACHINES = {62: "x86-64", 183: "aarch64", 3: "x86"}  # e_machine


@pytest.fixture(scope="module")
def cross_pairs(tmp_path_factory) -> Path:
    """Three generated projects at O0 and O3 for three instruction sets: two train, one validation."""
    from undertale.data.pairs.build import build_pairs

    root = tmp_path_factory.mktemp("cross")
    sources = [generated_project(root, name, 40, seed) for seed, name in enumerate(("alpha", "bravo", "charlie"))]
    build_pairs(root / "pairs", sources, levels=("O0", "O3"), targets="x86-64,aarch64,i386", workers=2,
                held_out={"validation": "charlie"}, progress=False, keep_objects=root / "objects")
    return root / "pairs"


@needs_cross
def test_every_group_holds_each_architecture_read_from_the_elf_header(cross_pairs):
    from undertale.data.pairs.build import load_pairs_manifest, read_pairs

    manifest = load_pairs_manifest(cross_pairs)
    assert manifest["architectures"] == {"aarch64-linux-gnu-gcc": ["aarch64"], "gcc": ["x86-64"],
                                         "i686-linux-gnu-gcc": ["x86"]}
    rows = [row for split in ("train", "validation") for row in read_pairs(cross_pairs, split).to_pylist()]
    architectures = defaultdict(set)  # (group, level) -> the instruction sets it was built for
    for row in rows:
        architectures[row["group"], row["level"]].add(row["architecture"])
    assert len({group for group, _ in architectures}) >= 100
    # every function at every level it has (a static helper is inlined away at -O3) on all three
    assert all(found == {"x86-64", "aarch64", "x86"} for found in architectures.values())
    assert sum(level == "O3" for _, level in architectures) >= 90
    # the column is the machine of the object file each compiler wrote
    objects = cross_pairs.parent / "objects"
    for compiler, architecture in (("gcc", "x86-64"), ("aarch64-linux-gnu-gcc", "aarch64"),
                                   ("i686-linux-gnu-gcc", "x86")):
        for path in (objects / compiler).rglob("*.o"):
            machine = struct.unpack_from("<H", path.read_bytes(), 18)[0]
            assert ELF_MACHINES[machine] == architecture, (path, machine)


def test_a_missing_cross_compiler_is_one_line_naming_its_package(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with gcc and without the cross compilers
    bin_dir.mkdir()
    os.symlink(shutil.which("gcc"), bin_dir / "gcc")
    source = generated_project(tmp_path, "alpha", 3, 0)
    result = run_script("-m", "undertale.data", "pairs", str(tmp_path / "out"), str(source),
                        "--targets", "x86-64,aarch64", env={"PATH": str(bin_dir)}, check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "aarch64-linux-gnu-gcc" in lines[0] and "gcc-aarch64-linux-gnu" in lines[0], lines
    wrong = run_script("-m", "undertale.data", "pairs", str(tmp_path / "out"), str(source), "--targets", "x86-64,mips",
                       check=False, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.strip() == (
        "error: unknown target 'mips'; targets are x86-64, aarch64, i386"), wrong.stderr
    assert not (tmp_path / "out").exists()


@needs_cross
def test_a_few_steps_on_cross_architecture_pairs_raise_validation_mrr_above_its_start(cross_pairs, trained_run):
    from hydra.utils import instantiate

    steps = 24
    cfg = compose_command_line([
        "task=similarity", f"pretrained={trained_run}", f"data.pairs={cross_pairs}", "data.levels=[O0,O3]",
        "data.architectures=[x86-64,aarch64]", "data.validation_architectures=[x86-64,arm64]",
        "data.validation_levels=[O3,O3]", "data.batch_size=8", "data.max_tokens=128", "trainer=cpu",
        "callbacks=none", f"trainer.max_steps={steps}", "optimizer.lr=1e-3", "optimizer.warmup=0",
    ])
    task = instantiate(cfg.task)
    task.check(cfg)
    lightning.seed_everything(0)
    parts = task.build(cfg, progress=False)
    queries, partners = parts.datamodule.validation_texts()
    assert len(queries) >= 20 and not any(query == partner for query, partner in zip(queries, partners))
    before, after = validation_mrr_before_and_after(parts, steps)
    assert after > before + 0.05, (before, after)


def test_an_architecture_the_pairs_lack_is_named_in_one_line(generated_pairs):
    from undertale.data.pairs.config import PairsDataConfig

    with pytest.raises(ValueError, match=r"^data.pairs=\S+ holds no aarch64 functions; it holds x86-64$"):
        PairsDataConfig(pairs=str(generated_pairs), levels=("O0", "O3"), architectures=("x86-64",),
                        validation_architectures=("x86-64", "arm64"), validation_levels=("O3", "O3"),
                        batch_size=8).check_pairs()


@needs_cross
def test_evaluate_compares_x86_64_with_each_other_instruction_set(cross_pairs, trained_copy, capsys):
    from undertale.evaluation.entry import before_hydra, run_task

    code = app_in_process("evaluate", run_task, "task=similarity", f"run={trained_copy}", f"pairs={cross_pairs}",
                          "split=validation", "projects=[charlie]", "pools=[8]", "logger=none", before=before_hydra)
    assert code == 0
    results = json.loads((trained_copy / "similarity.json").read_text())
    assert list(results["comparisons"]) == [
        "O0-O3 (gcc)", "x86-64/aarch64 -O0", "x86-64/aarch64 -O3", "x86-64 -O0/aarch64 -O3",
        "x86-64/i386 -O0", "x86-64/i386 -O3", "x86-64 -O0/i386 -O3"]
    assert results["projects"] == ["charlie"]
    cross = results["comparisons"]["x86-64/aarch64 -O3"]
    assert cross["pairs"] >= 20 and cross["identical"] == 0
    assert set(cross["systems"]) == {"model", "untrained", "tf-idf", "model+tf-idf"}
    assert "x86-64 -O0/aarch64 -O3" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exit:
        app_in_process("evaluate", run_task, "task=similarity", f"run={trained_copy}", f"pairs={cross_pairs}",
                       "split=validation", "comparisons=[x86-64:O2/aarch64:O2]", "logger=none", before=before_hydra)
    assert exit.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["error: comparison 'x86-64:O2/aarch64:O2': no functions at 'x86-64:O2'; the split has "
                     "aarch64:O0 (aarch64-linux-gnu-gcc), aarch64:O3 (aarch64-linux-gnu-gcc), i386:O0 "
                     "(i686-linux-gnu-gcc), i386:O3 (i686-linux-gnu-gcc), x86-64:O0 (gcc), x86-64:O3 (gcc)"], error


@needs_cross
def test_masked_lm_evaluation_reports_each_instruction_set_alone(cross_pairs, trained_copy, tmp_path, capsys):
    from undertale.evaluation.entry import before_hydra, run_task

    objects = cross_pairs.parent / "objects"
    paths = f"data.paths=[{objects / 'gcc' / 'O0'},{objects / 'aarch64-linux-gnu-gcc' / 'O0'}]"
    app_in_process("evaluate", run_task, f"run={trained_copy}", "data=binaries", paths,
                   f"paths.cache_dir={tmp_path / 'cache'}", "batches=2", "logger=none", before=before_hydra)
    result = json.loads((trained_copy / "evaluation.json").read_text())
    parts = result["architectures"]
    assert list(parts) == ["aarch64", "x86-64"]
    for part in parts.values():
        assert part["overall"]["count"] > 0 and set(part["classes"]) == set(result["classes"])
    assert parts["aarch64"]["overall"]["accuracy"] != parts["x86-64"]["overall"]["accuracy"]
    out = capsys.readouterr().out
    assert "per instruction set" in out and "aarch64" in out.split("per instruction set")[1]
