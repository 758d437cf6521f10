"""Shared fixtures: a small, real data cache, a short trained run and generated pairs, each built once per
session (by the first xdist worker that needs it, under a file lock; the others reuse it: tests/helpers.py)."""

import os
import random
from pathlib import Path

import pytest

from undertale.settings.store import register_configs
from undertale.data.corpus.build import CorpusOptions
from undertale.data.pipeline import PreparedData, prepare

from helpers import BINARIES, MAX_FUNCTIONS, SEQUENCE_LENGTH, shared_directory, small, train_in_process
from helpers import ROOT  # noqa: F401  (tests import ROOT and small from here too)

register_configs()  # the generated config groups (model sizes, optimizer, masking, data), as train.py does


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject.toml's default): one worker per core, at most 4.

    Each worker's torch already uses every core, and the end-to-end tests start processes of their own
    (DDP ranks, sweep jobs); more workers would only crowd them. Session fixtures are built once per session.
    """
    return max(1, min(os.cpu_count() or 1, 4))


def prepare_small(cache: Path, packing: bool = False) -> PreparedData:
    """The data ``small`` (debug=smoke on the test binaries) asks for, prepared (or reused) in ``cache``."""
    return prepare(
        "binaries", cache, paths=BINARIES, sequence_length=SEQUENCE_LENGTH, tokenizer_functions=MAX_FUNCTIONS,
        corpus_options=CorpusOptions(seed=0, validation_fraction=0.05, max_functions=MAX_FUNCTIONS),
        packing=packing, progress=False,
    )


@pytest.fixture(scope="session")
def cache(tmp_path_factory, worker_id) -> Path:
    """A data cache prepared once, exactly as the small training runs ask for it (see ``small``)."""
    return shared_directory(tmp_path_factory, worker_id, "cache", lambda path: prepare_small(path, packing=True))


@pytest.fixture(scope="session")
def trained_run(cache, tmp_path_factory, worker_id) -> Path:
    """One real 12-step training run (tiny model, ``[UNK]`` kept out of the targets, W&B offline) that read-only
    tests share; a test that writes into a run works on a copy (``trained_copy``)."""
    def build(directory: Path) -> None:
        train_in_process(*small(cache), 'masking.exclude=["[UNK]"]', f"hydra.run.dir={directory / 'run'}")

    return shared_directory(tmp_path_factory, worker_id, "shared", build) / "run"


@pytest.fixture
def trained_copy(trained_run, tmp_path) -> Path:
    """A copy of the shared run for a test that writes into it (evaluation.json, similarity.json)."""
    import shutil

    return Path(shutil.copytree(trained_run, tmp_path / "trained"))


# --- pairs compiled from generated C projects (task=similarity, examples) ----------------------------

TEMPLATES = [
    "int {name}(const int *v, int n, int k) {{ int acc = {a}; for (int i = 0; i < n; i++) {{ acc = acc {op} "
    "(v[i] * {b}); if (acc > {c}) acc -= k; }} return acc; }}",
    "unsigned {name}(const char *s) {{ unsigned h = {a}u; while (*s) {{ h = (h << {b}) {op} (unsigned char)*s++; "
    "if (h & {c}u) h ^= 0x5bd1e995u; }} return h; }}",
    "int {name}(int x, int y) {{ switch (x % {b}) {{ case 0: return y {op} {a}; case 1: return y * {c}; "
    "case 2: return {name}_helper(x - 1, y); default: return x {op} y; }} }}",
    "long {name}(long n) {{ long a = {a}, b = {b}; for (long i = 0; i < n; i++) {{ long t = a {op} b; a = b; "
    "b = t % {c}; }} return a; }}",
    "void {name}(int *v, int n) {{ for (int i = 1; i < n; i++) {{ int key = v[i], j = i - 1; "
    "while (j >= 0 && v[j] {cmp} key) {{ v[j + 1] = v[j] {op} {a}; j--; }} v[j + 1] = key + {b}; }} }}",
]


def generated_project(root: Path, name: str, functions: int, seed: int) -> Path:
    """A C project of ``functions`` functions from varied templates, constants and operators."""
    rng = random.Random(seed)
    lines = []
    for index in range(functions):
        template = TEMPLATES[index % len(TEMPLATES)]
        function = f"{name}_{index}"
        if "_helper" in template:
            lines.append(f"static int {function}_helper(int x, int y) {{ return x * {rng.randint(2, 9)} + y; }}")
        lines.append(template.format(name=function, a=rng.randint(1, 999), b=rng.randint(2, 7), c=rng.randint(100, 9999),
                                     op=rng.choice(["+", "^", "-", "|"]), cmp=rng.choice([">", "<"])))
    (root / name).mkdir(parents=True)
    (root / name / f"{name}.c").write_text("\n".join(lines) + "\n")
    return root / name


@pytest.fixture(scope="session")
def generated_pairs(tmp_path_factory, worker_id) -> Path:
    """Three generated projects at O0 and O3: two train, one validation (split by project)."""
    def build(root: Path) -> None:
        from undertale.data.pairs.build import build_pairs

        sources = [generated_project(root, name, 60, seed) for seed, name in enumerate(("alpha", "bravo", "charlie"))]
        manifest = build_pairs(root / "pairs", sources, levels=("O0", "O3"), compilers=("gcc",),
                               split=(0.6, 0.4, 0.0), workers=2, progress=False)
        assert len(manifest["projects"]["train"]) == 2 and len(manifest["projects"]["validation"]) == 1

    return shared_directory(tmp_path_factory, worker_id, "projects", build) / "pairs"
