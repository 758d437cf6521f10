"""Benchmarks of function search (docs/search.md); the figures of benchmarks/README.md's search section.

    python benchmarks/search_bench.py all --model <run or export dir> [--work /tmp/search_bench]
    python benchmarks/search_bench.py index --model <dir>        # indexing functions/s (and a large binary)
    python benchmarks/search_bench.py query --dimensions 128 256 # exact and FAISS over 1M random unit vectors
    python benchmarks/search_bench.py rss --file <vectors.npy>   # peak RSS of exact search (run in its own process)
    python benchmarks/search_bench.py diff                        # one-to-one matching of two ~5,000-function sets

Each step prints one JSON line of its figures. Nothing here is a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from undertale.search.query import agreement, build_faiss, exact_topk, faiss_available, faiss_topk  # noqa: E402

LARGE = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"


def emit(step: str, figures: dict) -> dict:
    print(json.dumps({"step": step, **figures}), flush=True)
    return figures


def random_units(count: int, dimensions: int, seed: int, clusters: int = 0, block: int = 1 << 16) -> np.ndarray:
    """Unit vectors: uniform on the sphere, or around ``clusters`` random centres (closer to real embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dimensions)).astype(np.float32) if clusters else None
    out = np.empty((count, dimensions), dtype=np.float32)
    for start in range(0, count, block):
        rows = min(block, count - start)
        chunk = rng.standard_normal((rows, dimensions)).astype(np.float32)
        if centres is not None:
            chunk = centres[rng.integers(0, clusters, rows)] + 0.5 * chunk
        out[start:start + rows] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def write_vectors(path: Path, count: int, dimensions: int, seed: int, clusters: int = 0) -> Path:
    from numpy.lib.format import open_memmap

    if not path.is_file():
        out = open_memmap(path, mode="w+", dtype=np.float32, shape=(count, dimensions))
        out[:] = random_units(count, dimensions, seed, clusters)
        out.flush()
        del out
    return path


def bench_index(model: str, work: Path, large_sample: int) -> dict:
    """Functions/s of index.py on /usr/bin/ls (whole command: read, disassemble, embed, write), and the
    embedding of a large binary (libcrypto) on a sample of its functions."""
    import torch

    from undertale.search.index import build_index, read_binary
    from undertale.search.store import SearchIndex, load_encoder

    output = work / "ls.index"
    if output.exists():
        import shutil

        shutil.rmtree(output)
    started = time.perf_counter()
    build_index(["/usr/bin/ls"], model, str(output), progress=False)
    seconds = time.perf_counter() - started
    functions = SearchIndex.open(output).count
    figures = {"binary": "/usr/bin/ls", "functions": functions, "seconds": round(seconds, 1),
               "functions_per_s": round(functions / seconds, 1), "torch_threads": torch.get_num_threads()}
    if os.path.isfile(LARGE):
        started = time.perf_counter()
        rows, _ = read_binary(LARGE)
        read_seconds = time.perf_counter() - started
        encoder = load_encoder(model)
        rng = np.random.default_rng(0)
        sample = [rows[i] for i in rng.choice(len(rows), size=min(large_sample, len(rows)), replace=False)]
        started = time.perf_counter()
        encoder.embed([row["disassembly"] for row in sample])
        embed_seconds = time.perf_counter() - started
        per_second = len(sample) / embed_seconds
        figures["large"] = {"binary": LARGE, "functions": len(rows), "read_seconds": round(read_seconds, 1),
                            "embedded_sample": len(sample), "sample_seconds": round(embed_seconds, 1),
                            "functions_per_s": round(per_second, 1),
                            "whole_binary_seconds_estimate": round(read_seconds + len(rows) / per_second, 0)}
    return emit("index", figures)


def timed_queries(search, queries: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(first query ms, median ms of the rest, indices) of single-vector queries."""
    times, found = [], []
    for query in queries:
        started = time.perf_counter()
        _, indices = search(query[None, :])
        times.append(1000 * (time.perf_counter() - started))
        found.append(indices[0])
    return times[0], float(np.median(times[1:])), np.array(found)


def bench_query(work: Path, count: int, dimensions: int, queries: int, nprobes: list[int], clusters: int) -> dict:
    name = f"{'clustered' if clusters else 'uniform'}-{count}x{dimensions}"
    path = write_vectors(work / f"{name}.npy", count, dimensions, seed=dimensions, clusters=clusters)
    vectors = np.load(path, mmap_mode="r")
    rng = np.random.default_rng(1)
    # half random unit vectors, half near-duplicates of indexed vectors (a function compiled another way)
    members = np.asarray(vectors[rng.choice(count, queries // 2, replace=False)])
    noisy = members + 0.3 * rng.standard_normal(members.shape).astype(np.float32) / np.sqrt(dimensions)
    probe = np.concatenate([random_units(queries - queries // 2, dimensions, seed=2, clusters=0) if not clusters
                            else random_units(queries - queries // 2, dimensions, seed=dimensions, clusters=clusters),
                            noisy / np.linalg.norm(noisy, axis=1, keepdims=True)]).astype(np.float32)
    first, median, exact = timed_queries(lambda q: exact_topk(vectors, q, 10), probe)
    figures = {"vectors": name, "exact_first_ms": round(first, 1), "exact_median_ms": round(median, 1)}
    started = time.perf_counter()
    batch_scores, _ = exact_topk(vectors, probe, 10)
    figures["exact_batch_of_queries_ms"] = round(1000 * (time.perf_counter() - started), 1)
    if faiss_available():
        import faiss

        started = time.perf_counter()
        index = build_faiss(vectors)
        figures["faiss_build_s"] = round(time.perf_counter() - started, 1)
        figures["faiss_nlist"] = index.nlist
        figures["faiss_threads"] = faiss.omp_get_max_threads()
        half = queries // 2
        for nprobe in nprobes:
            _, median, approximate = timed_queries(lambda q: faiss_topk(index, q, 10, nprobe), probe)
            figures[f"nprobe{nprobe}"] = {"median_ms": round(median, 2),
                                          "top10_agreement": round(agreement(exact, approximate), 4),
                                          "agreement_random_queries": round(agreement(exact[:half], approximate[:half]), 4),
                                          "agreement_near_duplicates": round(agreement(exact[half:], approximate[half:]), 4)}
    return emit("query", figures)


def status_mib(field: str) -> int:
    """VmHWM (peak) or VmRSS of this process in MiB (/proc: ru_maxrss survives exec, VmHWM does not)."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024)
    return -1


def bench_rss(file: str, queries: int, release: str) -> dict:
    """Peak RSS of a fresh process that memory-maps ``file`` and runs single-vector exact queries."""
    before = status_mib("VmHWM")
    vectors = np.load(file, mmap_mode="r")
    rng = np.random.default_rng(3)
    probe = rng.standard_normal((queries, vectors.shape[1])).astype(np.float32)
    times = []
    for query in probe:
        started = time.perf_counter()
        exact_topk(vectors, query[None, :], 10, release={"auto": None, "yes": True, "no": False}[release])
        times.append(1000 * (time.perf_counter() - started))
    peak = status_mib("VmHWM")
    return emit("rss", {"file": file, "file_mib": round(os.path.getsize(file) / 2**20), "release": release,
                        "peak_rss_mib": peak, "rss_before_mapping_mib": before, "rss_after_mib": status_mib("VmRSS"),
                        "first_ms": round(times[0], 1), "median_ms": round(float(np.median(times[1:])), 1)})


def bench_diff(functions: int, dimensions: int) -> dict:
    """Matching cost of a whole-binary diff: two sets of ``functions`` vectors, 90% shared (perturbed, shuffled)."""
    from undertale.search.diff import match, tie_breaks

    rng = np.random.default_rng(4)
    left = random_units(functions, dimensions, seed=5, clusters=200)
    shared = int(0.9 * functions)
    order = rng.permutation(functions)
    right = np.concatenate([left[order[:shared]] + 0.05 * rng.standard_normal((shared, dimensions)).astype(np.float32)
                            / np.sqrt(dimensions), random_units(functions - shared, dimensions, seed=6, clusters=200)])
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    rows_left = [{"name": f"f{i}", "address": i} for i in range(functions)]
    rows_right = [{"name": f"f{order[j]}" if j < shared else f"g{j}", "address": j} for j in range(functions)]
    figures = {"functions": functions, "dimensions": dimensions}
    for matching in ("hungarian", "greedy"):
        started = time.perf_counter()
        scores = left @ right.T
        pairs = match(scores, 0.8, matching, tie_breaks(rows_left, rows_right))
        seconds = time.perf_counter() - started
        correct = sum(1 for i, j in pairs if j < shared and order[j] == i)
        figures[matching] = {"seconds": round(seconds, 2), "matched": len(pairs), "correct": correct,
                             "true_pairs": shared}
    return emit("diff", figures)


def machine() -> dict:
    info = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["all", "index", "query", "rss", "diff"])
    parser.add_argument("--model", help="a training run or export directory (index)")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "search_bench"))
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--dimensions", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--clustered", type=int, default=0, help="query: vectors around this many centres (0: uniform)")
    parser.add_argument("--file", help="rss: a vectors .npy file")
    parser.add_argument("--release", choices=["auto", "yes", "no"], default="auto")
    parser.add_argument("--large-sample", type=int, default=1000)
    parser.add_argument("--functions", type=int, default=5000)
    arguments = parser.parse_args()
    work = Path(arguments.work)
    work.mkdir(parents=True, exist_ok=True)
    emit("machine", machine())
    if arguments.step in ("index", "all"):
        if not arguments.model:
            parser.error("--model is required for index")
        bench_index(arguments.model, work, arguments.large_sample)
    if arguments.step in ("query", "all"):
        for dimensions in arguments.dimensions:
            bench_query(work, arguments.count, dimensions, arguments.queries, arguments.nprobe, arguments.clustered)
    if arguments.step == "rss":
        bench_rss(arguments.file, arguments.queries, arguments.release)
    if arguments.step == "all":
        for dimensions in arguments.dimensions:
            name = work / f"uniform-{arguments.count}x{dimensions}.npy"
            for release in ("auto", "yes"):
                subprocess.run([sys.executable, __file__, "rss", "--file", str(name), "--queries", "20",
                                "--release", release], check=True)
    if arguments.step in ("diff", "all"):
        for dimensions in arguments.dimensions:
            bench_diff(arguments.functions, dimensions)


if __name__ == "__main__":
    main()
