"""Corpus-build speed beside ``objdump -d`` on the same ELF files, in one run."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import tempfile
import time
from typing import Optional, Sequence

import numpy as np

from undertale.data.corpus.build import CorpusOptions, build_corpus
from undertale.data.corpus.inputs import expand_inputs, system_inputs
from undertale.runtime.environment import describe_machine
from undertale.data.corpus.elf import file_kind


def _objdump(path: str) -> int:
    """Instructions ``objdump -d -M intel`` prints for one file."""
    output = subprocess.run(
        ["objdump", "-d", "-M", "intel", "--no-show-raw-insn", path], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, check=False,
    ).stdout
    return output.count(b":\t")


def sample_elf_files(paths: Optional[Sequence[str]], max_files: int, seed: int = 0) -> list[str]:
    files = expand_inputs(paths) if paths else system_inputs()
    elf = [path for path in files if file_kind(path) == "elf"]
    if not elf:
        raise ValueError("no ELF files among the inputs")
    order = np.random.default_rng(seed).permutation(len(elf))[:max_files]
    return sorted(elf[i] for i in order)


def run_benchmark(paths: Optional[Sequence[str]], workers: Optional[int] = None, max_files: int = 200) -> dict:
    """Time ``objdump -d`` and the corpus build over the same files with the same worker count; print both."""
    if shutil.which("objdump") is None:
        raise ValueError("objdump is not installed (Debian: apt-get install binutils)")
    workers = workers or os.cpu_count() or 1
    files = sample_elf_files(paths, max_files)
    megabytes = sum(os.path.getsize(path) for path in files) / 1e6

    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        objdump_instructions = sum(pool.imap_unordered(_objdump, files))
    objdump_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        manifest = build_corpus(directory, files, CorpusOptions(), workers=workers, progress=False)
        corpus_seconds = time.perf_counter() - started
    corpus_instructions = manifest["counts"]["decoded_instructions"]

    result = {
        "machine": describe_machine(),
        "files": len(files),
        "megabytes": megabytes,
        "workers": workers,
        "objdump_instructions_per_s": objdump_instructions / objdump_seconds,
        "corpus_instructions_per_s": corpus_instructions / corpus_seconds,
        "objdump_seconds": objdump_seconds,
        "corpus_seconds": corpus_seconds,
    }
    result["ratio"] = result["corpus_instructions_per_s"] / result["objdump_instructions_per_s"]
    print(f"machine: {result['machine']}; {len(files)} ELF files, {megabytes:.0f} MB, {workers} workers each")
    print(f"{'':<34}{'seconds':>10}{'instructions':>16}{'instructions/s':>18}")
    print(
        f"{'objdump -d -M intel':<34}{objdump_seconds:>10.2f}{objdump_instructions:>16,}"
        f"{result['objdump_instructions_per_s']:>18,.0f}"
    )
    print(
        f"{'undertale corpus (decode+write)':<34}{corpus_seconds:>10.2f}{corpus_instructions:>16,}"
        f"{result['corpus_instructions_per_s']:>18,.0f}"
    )
    print(f"ratio (undertale / objdump, instructions per second): {result['ratio']:.2f}x")
    print(
        f"ratio (objdump seconds / undertale seconds, same files): {objdump_seconds / corpus_seconds:.2f}x "
        "(objdump also prints code outside functions: padding, PLT stubs)"
    )
    return result
