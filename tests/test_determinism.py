"""Reproducible data: the same corpus gives a byte-identical tokenizer, tokenized shards and packed shards,
whatever the threads (``RAYON_NUM_THREADS``), processes, workers or cache directory."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pytest

from undertale.data.corpus.build import CorpusOptions, build_corpus
from undertale.data.encode import tokenize_corpus
from undertale.data.packing import pack_directory
from undertale.data.parquet import parquet_files
from undertale.data.pipeline import prepare, training_texts
from undertale.data.tokenizer import train_tokenizer

BINARIES = ["/usr/bin/ls", "/usr/bin/cp"]
FUNCTIONS = 1500
LENGTH = 64

# trains on the corpus's texts exactly as the pipeline does and prints the saved JSON's sha256
TRAIN = """
import hashlib, sys
from pathlib import Path
from undertale.data.pipeline import training_texts
from undertale.data.tokenizer import train_tokenizer
train_tokenizer(training_texts(Path(sys.argv[1]), {functions}), sequence_length={length}).save(sys.argv[2])
print(hashlib.sha256(Path(sys.argv[2]).read_bytes()).hexdigest())
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A small corpus of real functions from this machine's binaries (train and validation shards)."""
    missing = [path for path in BINARIES if not Path(path).is_file()]
    if missing:
        pytest.skip(f"needs {missing}")
    directory = tmp_path_factory.mktemp("determinism") / "corpus"
    build_corpus(directory, BINARIES, CorpusOptions(seed=0, validation_fraction=0.2, max_functions=FUNCTIONS),
                 workers=2, progress=False)
    return directory


@pytest.fixture(scope="module")
def model(corpus):
    return train_tokenizer(training_texts(corpus, FUNCTIONS), sequence_length=LENGTH)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shard_digests(directory: Path) -> dict[str, str]:
    """Every parquet shard under ``directory`` (relative path) -> sha256 of its bytes."""
    return {str(path.relative_to(directory)): sha256(path) for path in parquet_files(directory)}


class PoolRunner:
    """The runner interface of ``DaskReader`` (``map``: results in job order) on a pool of ``workers`` processes."""

    def __init__(self, workers: int):
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def map(self, function: Callable[..., Any], jobs: Iterable[tuple]) -> Iterator[Any]:
        return self.pool.map(function, *zip(*jobs))

    def close(self) -> None:
        self.pool.shutdown()


def test_tokenizer_is_identical_across_processes_and_threads(corpus, tmp_path):
    here = tmp_path / "here.json"
    train_tokenizer(training_texts(corpus, FUNCTIONS), sequence_length=LENGTH).save(str(here))
    digests = {"this process": sha256(here)}
    script = TRAIN.format(functions=FUNCTIONS, length=LENGTH)
    for threads in ("1", "2"):
        output = tmp_path / f"rayon-{threads}.json"
        result = subprocess.run([sys.executable, "-c", script, str(corpus), str(output)], capture_output=True,
                                text=True, timeout=120, env={**os.environ, "RAYON_NUM_THREADS": threads})
        assert result.returncode == 0, result.stderr[-3000:]
        digests[f"RAYON_NUM_THREADS={threads}"] = result.stdout.split()[-1]
        assert digests[f"RAYON_NUM_THREADS={threads}"] == sha256(output)
    assert len(set(digests.values())) == 1, digests


def test_tokenizer_ids_follow_counts_then_text():
    texts = ["mov rax rbx [NEXT] ret", "mov rbx rax [NEXT] ret", "push rbp [NEXT] pop rbp [NEXT] ret",
             "jmp 77 [NEXT] jmp 77"]
    vocabulary = train_tokenizer(texts, merges=24, sequence_length=8).get_vocab()
    # special tokens, the number alphabet, its merges, then whole words by count (descending), equal counts by text
    first_ids = [vocabulary[token] for token in ("[PAD]", "[NEXT]", "0", "9", "__0", "__9", "77")]
    assert first_ids == [0, 5, 6, 15, 16, 25, 26]
    words = sorted((token for token in vocabulary if vocabulary[token] > 26), key=vocabulary.get)
    assert words == ["ret", "jmp", "mov", "rax", "rbp", "rbx"]  # push and pop are seen once: [UNK]


def test_pipeline_builds_identical_files_in_two_caches(corpus, tmp_path):
    builds = [prepare("parquet", tmp_path / name, directory=str(corpus), sequence_length=LENGTH,
                      tokenizer_functions=FUNCTIONS, packing=True, progress=False) for name in ("one", "two")]
    assert builds[0].tokenizer != builds[1].tokenizer
    assert sha256(builds[0].tokenizer) == sha256(builds[1].tokenizer)
    for step in ("tokenized", "packed"):
        first, second = ([path for path in (tmp_path / name / step).iterdir() if path.is_dir()]
                         for name in ("one", "two"))
        assert len(first) == len(second) == 1, step
        assert first[0].name == second[0].name, step  # both cache keys name content, not paths or times
        digests = shard_digests(first[0])
        assert digests == shard_digests(second[0]) and len(digests) == len(parquet_files(corpus)), step


@pytest.mark.parametrize("workers", [1, 2])
def test_tokenized_and_packed_shards_do_not_depend_on_workers(corpus, model, tmp_path, workers):
    tokenize_corpus(corpus, model, tmp_path / "alone" / "tokenized", progress=False)
    pack_directory(tmp_path / "alone" / "tokenized", tmp_path / "alone" / "packed", progress=False)
    runner = PoolRunner(workers)
    try:
        tokenize_corpus(corpus, model, tmp_path / "pool" / "tokenized", progress=False, runner=runner)
        pack_directory(tmp_path / "pool" / "tokenized", tmp_path / "pool" / "packed", progress=False, runner=runner)
    finally:
        runner.close()
    for step in ("tokenized", "packed"):
        alone, pooled = shard_digests(tmp_path / "alone" / step), shard_digests(tmp_path / "pool" / step)
        assert alone == pooled and len(alone) == len(parquet_files(corpus)), step


@pytest.mark.slow
def test_two_fresh_caches_give_the_same_fingerprint_tokenizer_and_first_20_losses(tmp_path):
    """The reproducibility promise end to end: nothing shared but the inputs and the seed."""
    import json

    from helpers import small, train_in_process

    for name in ("one", "two"):
        train_in_process(*small(tmp_path / f"cache-{name}", steps=20, logger="csv"), "trainer.log_every_n_steps=1",
                         f"hydra.run.dir={tmp_path / name}")
    [first, second] = [json.loads(next((tmp_path / f"cache-{name}" / "corpus").glob("*/manifest.json")).read_text())
                       for name in ("one", "two")]
    assert first["fingerprint"] == second["fingerprint"]
    assert sha256(tmp_path / "one" / "tokenizer.json") == sha256(tmp_path / "two" / "tokenizer.json")
    losses = [losses_of(tmp_path / name) for name in ("one", "two")]
    assert len(losses[0]) >= 20 and losses[0][:20] == losses[1][:20]


def losses_of(run_dir: Path) -> list[float]:
    lines = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("train/loss")
    return [float(row.split(",")[column]) for row in lines[1:] if row.split(",")[column]]
