"""Build a corpus of instruction-trace functions from ELF binaries.

Output layout::

    OUTPUT_DIR/train/shard-00000.parquet ...
    OUTPUT_DIR/validation/shard-00000.parquet ...
    OUTPUT_DIR/manifest.json   written last: its presence marks a complete corpus

Files are decoded in parallel (a supervised process pool, :mod:`undertale.data.corpus.supervise`, or
Dask tasks with ``scheduler``: see :mod:`undertale.data.corpus.distributed`); functions are deduplicated
by a hash of their bytes; the train/validation split is by binary and deterministic for a seed
(by package for Debian corpora: :mod:`undertale.data.corpus.debian`). Each file is read within
``options.limits`` (:class:`~undertale.settings.data.FileLimits`): a file over one is skipped, and
counted by reason with the other skipped files.

Two hashes identify a corpus. ``key`` is the cache lookup key, cheap to compute before any work
(for files: their paths, sizes and mtimes; for Debian: the pinned package list). ``fingerprint`` is
content-based (:func:`content_fingerprint`): the SHA256 of every input's content, sorted, with
:data:`FORMAT_VERSION` and the build options; paths and mtimes are not part of it. The manifest lists
every input with its SHA256 and every shard with its size and SHA256 (``verify`` checks them). The
per-file limits are part of the key but not of the fingerprint: a file skipped for time or memory is no
input (it is listed with its reason, not in the fingerprint), so the fingerprint still says what was read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import time
from collections import Counter
from contextlib import closing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from undertale import __version__
from undertale.data.archive import file_sha256
from undertale.data.corpus.inputs import SYSTEM_DIRECTORIES, expand_inputs, system_inputs
from undertale.data.corpus.limits import OVER_TIME
from undertale.data.corpus.read import SCHEMA, FileResult, read_file
from undertale.data.corpus.supervise import SupervisedPool
from undertale.settings.data import FileLimits

SPLITS = ("train", "validation")
# Bump when the rows a build produces change for the same inputs: cached corpora are rebuilt.
# 3: manifests record inputs with their SHA256, shard digests and the content fingerprint.
FORMAT_VERSION = 3
MANIFEST = "manifest.json"


@dataclass
class CorpusOptions:
    """Parameters of a corpus build (recorded in the manifest and part of the cache key; all but ``limits``
    are part of the content fingerprint)."""

    seed: int = 0
    validation_fraction: float = 0.05
    max_functions: Optional[int] = None
    min_instructions: int = 1
    rows_per_shard: int = 50_000
    limits: FileLimits = field(default_factory=FileLimits)

    def __post_init__(self) -> None:
        if isinstance(self.limits, dict):  # read back from a manifest
            self.limits = FileLimits(**self.limits)


def content_options(options: CorpusOptions) -> dict:
    """The options that decide a corpus's content for the inputs it read (all but the per-file limits)."""
    return {name: value for name, value in asdict(options).items() if name != "limits"}


def split_of(paths: Sequence[str], seed: int, validation_fraction: float) -> dict[str, str]:
    """Assign each binary to ``train`` or ``validation``, deterministically for ``seed``.

    The ``ceil(fraction x count)`` binaries with the smallest seeded hash go to
    validation (at least one when the fraction is positive and there are two
    or more binaries), so small inputs still get a validation set.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be within [0, 1), got {validation_fraction}")
    ranked = sorted(paths, key=lambda path: hashlib.blake2b(f"{seed}:{path}".encode(), digest_size=8).digest())
    count = math.ceil(validation_fraction * len(ranked)) if len(ranked) > 1 else 0
    validation = set(ranked[:count])
    return {path: "validation" if path in validation else "train" for path in paths}


# Content hashes this worker process has already decoded during the current build: a function
# linked into many binaries is decoded once per worker, not once per binary.
_WORKER_SEEN: set[str] = set()


def _start_worker() -> None:
    _WORKER_SEEN.clear()


def _read_file_job(job: tuple[str, int], limits: FileLimits) -> FileResult:
    path, min_instructions = job
    return read_file(path, min_instructions, seen=_WORKER_SEEN, limits=limits)


def _file_pieces(result: FileResult) -> Iterator:
    return result.pieces()


def _file_joined(pieces: list) -> FileResult:
    return FileResult.assemble(pieces)[0]


def stopped_file(path: str, seconds: float) -> FileResult:
    """A file whose worker was killed after ``seconds`` of wall-clock time on it (stuck, or starved)."""
    return FileResult(path, error=f"{OVER_TIME}: still reading after {seconds:.0f} s of wall-clock time "
                                  "(3 x max_file_seconds + 30 s); its worker was stopped")


def _pool_results(jobs: list[tuple[str, int]], workers: int, limits: FileLimits) -> Iterator[FileResult]:
    """``read_file`` of each job on a supervised process pool, in job order; closing the iterator stops it.

    Raises:
        WorkerLost: a worker died (named, with its file and exit code or signal).
    """
    pool = SupervisedPool(
        functools.partial(_read_file_job, limits=limits), min(workers, len(jobs)), limits, initializer=_start_worker,
        describe=lambda job: job[0], split=_file_pieces, join=_file_joined,
        on_timeout=lambda job, item, seconds: stopped_file(job[0], seconds),
    )
    return pool.imap(jobs)


class ShardWriter:
    """Buffer rows and write them as numbered parquet shards, atomically (temporary name, then rename)."""

    def __init__(self, directory: Path, rows_per_shard: int):
        self.directory = directory
        self.rows_per_shard = rows_per_shard
        self.buffer: list[dict] = []
        self.shards: list[str] = []
        self.rows = 0
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, rows: Iterable[dict]) -> None:
        self.buffer.extend(rows)
        while len(self.buffer) >= self.rows_per_shard:
            self._write(self.buffer[: self.rows_per_shard])
            self.buffer = self.buffer[self.rows_per_shard :]

    def close(self) -> None:
        if self.buffer or not self.shards:
            self._write(self.buffer)
        self.buffer = []

    def _write(self, rows: list[dict]) -> None:
        path = self.directory / f"shard-{len(self.shards):05d}.parquet"
        temporary = path.with_suffix(".parquet.tmp")
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), temporary, compression="zstd")
        os.replace(temporary, path)
        self.shards.append(path.name)
        self.rows += len(rows)


def _fingerprint(files: Sequence[str], options: CorpusOptions) -> str:
    """The cache lookup key of a build from files: their paths, sizes and mtimes (cheap; not the content)."""
    digest = hashlib.sha256(json.dumps([__version__, FORMAT_VERSION, asdict(options)]).encode())
    for path in files:
        status = os.stat(path)
        digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def content_fingerprint(digests: Iterable[str], options: CorpusOptions, extra: Optional[dict] = None) -> str:
    """The content fingerprint of a corpus: SHA256 over :data:`FORMAT_VERSION`, the build options, ``extra``
    (for Debian: the pinned package list, which decides the split) and each input's SHA256, sorted.

    Paths, mtimes, the machine, the number of workers and the time are not part of it.
    """
    digest = hashlib.sha256(json.dumps(
        {"format": FORMAT_VERSION, "options": content_options(options), "extra": extra or {}}, sort_keys=True
    ).encode())
    for value in sorted(digests):
        digest.update(value.encode() + b"\n")
    return digest.hexdigest()


def manifest_fingerprint(manifest: dict) -> str:
    """:func:`content_fingerprint` of a corpus from what its manifest records (its inputs' SHA256 and options),
    so that ``verify`` recomputes exactly what the build computed."""
    parameters = manifest["parameters"]
    options = CorpusOptions(**{item.name: parameters[item.name] for item in fields(CorpusOptions) if item.name != "limits"})
    if manifest.get("source") == "debian":
        digests = [item["sha256"] for record in manifest["packages"] for item in record["files"] if item["sha256"]]
        extra = {"source": "debian", "max_member_bytes": manifest["max_member_bytes"],
                 "packages": sorted(f"{r['package']}:{r['arch']}={r['version']}" for r in manifest["packages"])}
        return content_fingerprint(digests, options, extra)
    return content_fingerprint([item["sha256"] for item in manifest["input_files"]], options)


def shard_digests(output: Path, shards: dict[str, list[str]]) -> dict[str, dict]:
    """``{"train/shard-00000.parquet": {"size": ..., "sha256": ...}, ...}`` of a corpus's shards."""
    return {
        f"{split}/{name}": {"size": (output / split / name).stat().st_size, "sha256": file_sha256(output / split / name)}
        for split in SPLITS
        for name in shards.get(split, [])
    }


def write_manifest(output: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (last: its presence marks a complete corpus)."""
    temporary = output / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=2))
    os.replace(temporary, output / MANIFEST)


class CorpusWriter:
    """Turns each input's :class:`FileResult` into rows of its split: global deduplication (a function
    already written is dropped; validation inputs come first, so a function in both splits stays in
    validation), ``max_functions`` budgets, running totals, skipped files with their reasons."""

    def __init__(self, output: Path, options: CorpusOptions, assigned: Sequence[str]):
        self.output = output
        (output / MANIFEST).unlink(missing_ok=True)
        for split in SPLITS:
            shutil.rmtree(output / split, ignore_errors=True)
        self.writers = {split: ShardWriter(output / split, options.rows_per_shard) for split in SPLITS}
        self.budgets = _budgets(options, list(assigned))
        self.seen: set[str] = set()
        self.skipped: dict[str, str] = {}
        self.totals: Counter = Counter()

    def add(self, result: FileResult, split: str) -> bool:
        """Take one file's rows; True when ``split`` has reached its ``max_functions`` budget."""
        if result.error is not None:
            self.skipped[result.path] = result.error
            return False
        totals, writer = self.totals, self.writers[split]
        totals["files"] += 1
        totals["decoded_instructions"] += result.instructions
        fresh = []
        for row in result.rows:
            if row["id"] not in self.seen:
                self.seen.add(row["id"])
                fresh.append(row)
        repeats = 0  # a function first met below min_instructions still makes its repeats duplicates
        for identity in result.filtered:
            repeats += identity in self.seen
            self.seen.add(identity)
        for identity in result.over_limit:  # counted once, whichever worker decoded it
            if identity in self.seen:
                repeats += 1
            else:
                totals["functions_over_limit"] += 1
            self.seen.add(identity)
        totals["duplicates"] += len(result.rows) - len(fresh) + result.duplicates + repeats
        budget = self.budgets[split]
        if budget is not None:
            fresh = fresh[: max(0, budget - writer.rows - len(writer.buffer))]
        totals["functions"] += len(fresh)
        totals["instructions"] += sum(row["instructions"] for row in fresh)
        totals["skipped_bytes"] += sum(row["skipped_bytes"] for row in fresh)
        writer.add(fresh)
        return budget is not None and writer.rows + len(writer.buffer) >= budget

    def full(self, split: str) -> bool:
        budget = self.budgets[split]
        return budget is not None and self.writers[split].rows + len(self.writers[split].buffer) >= budget

    def close(self) -> dict[str, list[str]]:
        """Write the last shards; returns the shard names of each split."""
        for writer in self.writers.values():
            writer.close()
        return {split: self.writers[split].shards for split in SPLITS}

    def counts(self) -> dict:
        return dict(self.totals) | {split: self.writers[split].rows for split in SPLITS}

    def skipped_reasons(self) -> dict[str, int]:
        return dict(Counter(reason.split(":")[0] for reason in self.skipped.values()).most_common())


def load_manifest(directory: str | os.PathLike) -> Optional[dict]:
    """The manifest of a complete corpus in ``directory``, or None."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    for split in SPLITS:
        for shard in manifest.get("shards", {}).get(split, []):
            if not (Path(directory) / split / shard).is_file():
                return None
    return manifest


def build_corpus(
    output: str | os.PathLike,
    paths: Optional[Sequence[str]] = None,
    options: Optional[CorpusOptions] = None,
    workers: Optional[int] = None,
    progress: bool = True,
    scheduler: Optional[str] = None,
) -> dict:
    """Disassemble ``paths`` (the system directories when empty) into parquet shards under ``output``.

    A complete corpus built from the same files and options is reused as is.
    The shards are the same whether files are decoded by the process pool or by Dask.

    Arguments:
        output: corpus directory.
        paths: files, directories or globs.
        options: seed, split, ``max_functions``, per-file limits.
        workers: processes (default: all cores); with ``scheduler="local"``, the Dask workers.
        progress: show a progress bar and print a summary.
        scheduler: decode files as Dask tasks: ``local`` (a ``LocalCluster``), a scheduler address
            (``tcp://host:8786``) or a scheduler file (``*.json``); None: the process pool.

    Returns:
        The manifest (also written to ``output/manifest.json``).

    Raises:
        FileNotFoundError: when an input path does not exist.
        ValueError: when no functions could be read from the inputs.
        WorkerLost: a worker process died or failed (named with its file); nothing is written.
    """
    options = options or CorpusOptions()
    output = Path(output)
    files = expand_inputs(paths) if paths else system_inputs()
    if not files:
        raise ValueError(f"no input files found in {', '.join(paths) if paths else 'the system directories'}")
    key = _fingerprint(files, options)
    existing = load_manifest(output)
    if existing is not None and existing.get("key") == key:
        if progress:
            print(f"corpus: reusing {output} ({existing['counts']['functions']:,} functions, "
                  f"fingerprint {existing.get('fingerprint')})")
        return existing

    splits = split_of(files, options.seed, options.validation_fraction)
    order = sorted(files, key=lambda path: hashlib.blake2b(f"order:{options.seed}:{path}".encode()).digest())
    corpus = CorpusWriter(output, options, [splits[path] for path in files])
    digests: dict[str, tuple[str, int]] = {}  # path -> (sha256, size) of every input read
    started = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    with _FileReader(scheduler, workers, options.limits) as reader, \
            tqdm(total=len(order), unit="file", desc="corpus", disable=not progress, dynamic_ncols=True) as bar:
        # Validation binaries first: a function found in both splits stays in validation (no leakage into
        # train), and a max_functions budget still leaves validation its share.
        for split in ("validation", "train"):
            jobs = [(path, options.min_instructions) for path in order if splits[path] == split]
            if not jobs:
                continue
            with closing(reader.read(jobs)) as results:
                for number, result in enumerate(results, 1):
                    bar.update()
                    if result.sha256 is not None:
                        digests[result.path] = (result.sha256, result.size)
                    full = corpus.add(result, split)
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    totals = corpus.totals
                    bar.set_postfix(
                        functions=f"{totals['functions']:,}",
                        fn_per_s=f"{totals['functions'] / elapsed:,.0f}",
                        insn_per_s=f"{totals['decoded_instructions'] / elapsed:,.0f}",
                    )
                    if full:
                        if progress:  # say why the workers stop before every file was read
                            tqdm.write(f"corpus: {split} has its share of max_functions ({corpus.budgets[split]:,}) "
                                       f"after file {number:,} of {len(jobs):,}; its other files are not read")
                        break
    if not corpus.totals["functions"]:
        reasons = Counter(reason.split(":")[0] for reason in corpus.skipped.values()).most_common(3)
        raise ValueError(f"no functions found in {len(files)} input file(s); most common reasons: {reasons}")
    shards = corpus.close()
    elapsed = time.perf_counter() - started
    # With max_functions, the files never read are not inputs of this corpus: the fingerprint covers those read.
    inputs = [{"path": path, "sha256": sha, "size": size} for path, (sha, size) in sorted(digests.items())]
    manifest = {
        "undertale_version": __version__,
        "format_version": FORMAT_VERSION,
        "source": "files",
        "key": key,
        "inputs": list(paths) if paths else list(SYSTEM_DIRECTORIES),
        "files": len(files),
        "parameters": asdict(options) | {"workers": reader.workers} | ({"scheduler": scheduler} if scheduler else {}),
        "counts": corpus.counts(),
        "input_files": inputs,
    }
    return finish_manifest(output, manifest, corpus, shards, elapsed, print if progress else None)


def finish_manifest(output: Path, manifest: dict, corpus: Any, shards: dict[str, list[str]], elapsed: float,
                    log: Optional[Callable[[str], None]]) -> dict:
    """Complete a build's manifest (skips, shards and their digests, time, the content fingerprint), write it
    last (its presence marks a complete corpus) and give its summary to ``log``."""
    manifest |= {
        "skipped_reasons": corpus.skipped_reasons(),
        "skipped_files": corpus.skipped,
        "shards": shards,
        "shard_files": shard_digests(output, shards),
        "seconds": round(elapsed, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest["fingerprint"] = manifest_fingerprint(manifest)
    write_manifest(output, manifest)
    if log is not None:
        log(summary(manifest, output))
    return manifest


class _FileReader:
    """Decodes files on the process pool, or on Dask when ``scheduler`` is set (connected on entry,
    closed on exit). :meth:`read` yields each job's :class:`FileResult` in job order."""

    def __init__(self, scheduler: Optional[str], workers: int, limits: FileLimits):
        self.scheduler = scheduler
        self.workers = workers  # how many files are decoded at once
        self.limits = limits
        self.dask: Any = None

    def __enter__(self) -> "_FileReader":
        if self.scheduler is not None:
            from undertale.data.corpus.distributed import DaskReader

            self.dask = DaskReader(self.scheduler, self.workers)
            self.workers = self.dask.workers
        return self

    def read(self, jobs: list[tuple[str, int]]) -> Iterator[FileResult]:
        if self.dask is not None:
            return self.dask.read(jobs, self.limits)
        return _pool_results(jobs, self.workers, self.limits)

    def __exit__(self, *exc_info: Any) -> None:
        if self.dask is not None:
            self.dask.close()


def _budgets(options: CorpusOptions, assigned: list[str]) -> dict[str, Optional[int]]:
    """Functions each split may take under ``max_functions`` (validation gets its fraction)."""
    if options.max_functions is None:
        return {split: None for split in SPLITS}
    validation = math.ceil(options.max_functions * options.validation_fraction) if "validation" in assigned else 0
    return {"validation": validation, "train": options.max_functions - validation}


def summary(manifest: dict, output: Path) -> str:
    """A few lines describing a finished corpus build."""
    counts = manifest["counts"]
    seconds = max(manifest["seconds"], 1e-9)
    lines = [
        f"corpus: {output}",
        f"  fingerprint {manifest.get('fingerprint')}",
        f"  {counts['functions']:,} functions ({counts['train']:,} train, {counts['validation']:,} validation), "
        f"{counts['instructions']:,} instructions from {counts['files']:,} files",
        f"  {counts.get('duplicates', 0):,} duplicate functions dropped, {counts.get('skipped_bytes', 0):,} "
        f"undecodable bytes skipped"
        + (f", {counts['functions_over_limit']:,} functions over max_function_instructions dropped"
           if counts.get("functions_over_limit") else ""),
        f"  {seconds:.1f} s: {counts['functions'] / seconds:,.0f} functions/s, "
        f"{counts['instructions'] / seconds:,.0f} instructions/s",
    ]
    if "packages_failed" in counts:
        lines.insert(2, f"  {counts['packages']:,} packages ({counts['deb_bytes'] / 1e6:,.1f} MB of .deb, "
                        f"{counts['downloaded_bytes'] / 1e6:,.1f} MB downloaded by this run), "
                        f"{counts['packages_failed']:,} failed")
    if manifest["skipped_reasons"]:
        reasons = ", ".join(f"{reason} ({count})" for reason, count in list(manifest["skipped_reasons"].items())[:4])
        lines.append(f"  skipped {len(manifest['skipped_files']):,} files: {reasons}")
    for spec, reason in manifest.get("failed_packages", {}).items():
        lines.append(f"  FAILED {reason if reason.startswith(spec) else f'{spec}: {reason}'}")
    return "\n".join(lines)
