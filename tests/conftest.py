"""Shared fixtures: a small, real data cache that the end-to-end tests train on."""

from pathlib import Path

import pytest

from undertale.config import register_configs
from undertale.data.corpus import CorpusOptions
from undertale.data.pipeline import PreparedData, prepare

register_configs()  # the generated config groups (model sizes, optimizer, masking, data), as train.py does

ROOT = Path(__file__).resolve().parents[1]
BINARIES = ["/usr/bin/ls", "/usr/bin/cp", "/usr/bin/grep", "/usr/bin/sort"]
SEQUENCE_LENGTH = 64
MAX_FUNCTIONS = 3000


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
    import os
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
