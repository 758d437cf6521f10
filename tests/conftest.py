"""Shared fixtures: a small, real data cache that the end-to-end tests train on."""

import os
import random
from pathlib import Path

import pytest

from undertale.settings.store import register_configs
from undertale.data.corpus.build import CorpusOptions
from undertale.data.pipeline import PreparedData, prepare

register_configs()  # the generated config groups (model sizes, optimizer, masking, data), as train.py does

ROOT = Path(__file__).resolve().parents[1]
BINARIES = ["/usr/bin/ls", "/usr/bin/cp", "/usr/bin/grep", "/usr/bin/sort"]
SEQUENCE_LENGTH = 64
MAX_FUNCTIONS = 3000


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject.toml's default): one worker per core, at most 4.

    Each worker's torch already uses every core, and the end-to-end tests start processes of their own
    (DDP ranks, sweep jobs); more workers would only crowd them. Session fixtures are built once per worker.
    """
    return max(1, min(os.cpu_count() or 1, 4))


def prepare_small(cache: Path, packing: bool = False) -> PreparedData:
    """The data ``small`` asks for, prepared (or reused) in ``cache``."""
    return prepare(
        "binaries", cache, paths=BINARIES, sequence_length=SEQUENCE_LENGTH, tokenizer_functions=MAX_FUNCTIONS,
        corpus_options=CorpusOptions(seed=0, validation_fraction=0.05, max_functions=MAX_FUNCTIONS),
        packing=packing, progress=False,
    )


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """A data cache prepared once, exactly as the small training runs ask for it (see ``small``)."""
    directory = tmp_path_factory.mktemp("cache")
    prepare_small(directory, packing=True)
    return directory


def small(cache: Path, steps: int = 12) -> list[str]:
    """Overrides that shrink the quickstart to seconds: a few binaries, short sequences, few steps."""
    return [
        "trainer=cpu", "callbacks=none", f"paths.cache_dir={cache}",
        f"data.paths=[{','.join(BINARIES)}]", f"data.max_functions={MAX_FUNCTIONS}",
        f"data.tokenizer_functions={MAX_FUNCTIONS}", "data.batch_size=16", "data.num_workers=0",
        f"model.sequence_length={SEQUENCE_LENGTH}", f"trainer.max_steps={steps}", "trainer.val_check_interval=6",
        "trainer.limit_val_batches=4", "trainer.log_every_n_steps=2", "optimizer.lr=3e-3",
    ]


@pytest.fixture(scope="session")
def trained_run(cache, tmp_path_factory) -> Path:
    """One real 12-step training run (tiny model, ``[UNK]`` kept out of the targets) that read-only tests share."""
    import subprocess
    import sys

    run_dir = tmp_path_factory.mktemp("shared") / "run"
    environment = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, "train.py", *small(cache), 'masking.exclude=["[UNK]"]', f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


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
def generated_pairs(tmp_path_factory) -> Path:
    """Three generated projects at O0 and O3: two train, one validation (split by project)."""
    root = tmp_path_factory.mktemp("projects")
    sources = [generated_project(root, name, 60, seed) for seed, name in enumerate(("alpha", "bravo", "charlie"))]
    output = root / "pairs"
    from undertale.data.pairs.build import build_pairs

    manifest = build_pairs(output, sources, levels=("O0", "O3"), compilers=("gcc",), split=(0.6, 0.4, 0.0),
                           workers=2, progress=False)
    assert len(manifest["projects"]["train"]) == 2 and len(manifest["projects"]["validation"]) == 1
    return output
