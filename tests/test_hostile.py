"""Hostile inputs and lost workers in the corpus build (issue 29, findings 2 and 4).

Crafted ELF files (compiled here, then patched): a 762 KB static binary whose function symbols claim
4 GB sizes, the same binary with every function running to the end of ``.text``, and an object file whose
``.text`` is a compressed section that unpacks to 1 GiB. Real processes and signals: a worker killed with
``kill -9`` while it reads ``cc1`` (gcc's compiler proper: seconds of work), a parent whose SIGTERM handler
ignores the signal (as submitit's does), a worker stuck in a sleep. And a seeded fuzzer: hundreds of
mutants of real ELF files read in this process, each within the limits and without a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from undertale.data.corpus.build import CorpusOptions, build_corpus
from undertale.data.corpus.limits import OVER_MEMORY, OVER_SECTION, OVER_TIME, OVERLAPPING
from undertale.data.corpus.read import FileResult, read_bytes, read_file
from undertale.data.corpus.supervise import SupervisedPool
from undertale.runtime.errors import WorkerLost
from undertale.data.corpus.verify import verify_corpus
from undertale.settings.data import DataSettings, FileLimits

from helpers import BINARIES, start_script

PROGRAM = r"""
static int square(int x) { return x * x; }
int scaled(int a, int b) { return square(a) + b * 3; }
int main(int argc, char **argv) { return scaled(argc, (int)(long)argv[0][0]); }
"""
SHF_COMPRESSED = 0x800
GIB = 1 << 30


def _compile(directory: Path, name: str, *flags: str) -> Path:
    source = directory / "program.c"
    source.write_text(PROGRAM)
    output = directory / name
    result = subprocess.run(["gcc", "-O1", *flags, "-o", str(output), str(source)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"gcc {' '.join(flags)} failed here: {result.stderr.strip()[:200]}")
    return output


def _text_symbols(data: bytes) -> tuple[list[tuple[int, int]], int, int]:
    """(offset of st_size, start in .text) of every sized function symbol of ``.text``, and .text's address and size."""
    import io

    elf = ELFFile(io.BytesIO(data))
    text = elf.get_section_by_name(".text")
    index = next(i for i, section in enumerate(elf.iter_sections()) if section.name == ".text")
    table = elf.get_section_by_name(".symtab")
    found = []
    for number, symbol in enumerate(table.iter_symbols()):
        if symbol["st_info"]["type"] == "STT_FUNC" and symbol["st_size"] and symbol["st_shndx"] == index:
            found.append((table["sh_offset"] + number * table["sh_entsize"] + 16, symbol["st_value"] - text["sh_addr"]))
    return found, text["sh_addr"], text["sh_size"]


def _with_symbol_sizes(static: Path, target: Path, size_of) -> Path:
    data = bytearray(static.read_bytes())
    symbols, _, text_size = _text_symbols(bytes(data))
    for at, start in symbols:
        struct.pack_into("<Q", data, at, size_of(start, text_size))
    target.write_bytes(bytes(data))
    return target


def _deflate_zeros(size: int, piece: int = 4 << 20) -> bytes:
    """A zlib stream of ``size`` zero bytes, made of one compressed piece repeated (cheap: about 1 MB per GiB)."""
    compressor = zlib.compressobj(9)
    first = compressor.compress(bytes(piece)) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(bytes(piece)) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert first[2:] == again, "a full flush resets deflate: the same piece compresses to the same bytes"
    checksum = (size % 65521) << 16 | 1  # Adler-32 of zeros: A stays 1, B counts the bytes
    return first + again * (size // piece - 1) + b"\x03\x00" + struct.pack(">I", checksum)


def _compressed_text(object_file: Path, target: Path, unpacked: int = GIB) -> Path:
    """``object_file`` with its ``.text`` replaced by a compressed section (SHF_COMPRESSED, ELFCOMPRESS_ZLIB)
    that unpacks to ``unpacked`` zero bytes."""
    import io

    data = bytearray(object_file.read_bytes())
    elf = ELFFile(io.BytesIO(bytes(data)))
    index = next(i for i, section in enumerate(elf.iter_sections()) if section.name == ".text")
    header = elf["e_shoff"] + index * elf["e_shentsize"]
    body = struct.pack("<IIQQ", 1, 0, unpacked, 16) + _deflate_zeros(unpacked)
    offset = len(data) + (-len(data) % 16)
    data += bytes(offset - len(data)) + body
    flags, = struct.unpack_from("<Q", data, header + 8)
    struct.pack_into("<Q", data, header + 8, flags | SHF_COMPRESSED)
    struct.pack_into("<QQ", data, header + 24, offset, len(body))  # sh_offset, sh_size
    target.write_bytes(bytes(data))
    return target


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("hostile")
    static = _compile(directory, "static", "-static")
    objects = _compile(directory, "program.o", "-c")
    return {
        "static": static,
        # every function claims 4 GB (the file: 762 KB, over 2 minutes and 6 GB before the fix)
        "huge_symbols": _with_symbol_sizes(static, directory / "huge-symbols", lambda start, end: 0xFFFF_FFFF),
        # every function runs to the end of .text: sizes inside the section, but quadratic work
        "overlapping": _with_symbol_sizes(static, directory / "overlapping", lambda start, end: end - start),
        "bomb": _compressed_text(objects, directory / "bomb.o"),
        "object": objects,
    }


def test_symbol_sizes_of_4_gb_are_cut_at_the_next_function(hostile):
    started = time.perf_counter()
    result = read_file(str(hostile["huge_symbols"]))
    seconds = time.perf_counter() - started
    plain = read_file(str(hostile["static"]))
    assert result.error is None and plain.error is None
    assert len(result.rows) == len(plain.rows) > 1000  # the same functions, none lost, none run together
    symbols, address, text_size = _text_symbols(hostile["huge_symbols"].read_bytes())
    starts = sorted({address + start for _, start in symbols})
    by_start = {row["address"]: row for row in result.rows}
    for start, following in zip(starts, starts[1:]):
        assert by_start[start]["size"] <= following - start  # cut at the next function, not at the 4 GB claim
    assert max(row["size"] for row in result.rows) < text_size
    assert seconds < 15, f"{seconds:.1f} s"


def test_hostile_files_are_skipped_and_counted_by_reason(hostile, tmp_path):
    inputs = [str(hostile[name]) for name in ("huge_symbols", "overlapping", "bomb")] + ["/usr/bin/true"]
    started = time.perf_counter()
    manifest = build_corpus(tmp_path / "corpus", inputs, CorpusOptions(validation_fraction=0.0), workers=2,
                            progress=False)
    seconds = time.perf_counter() - started
    skipped = manifest["skipped_files"]
    assert skipped[str(hostile["overlapping"])].startswith(f"{OVERLAPPING}: the functions add up to ")
    assert skipped[str(hostile["bomb"])] == (f"{OVER_SECTION}: section .text unpacks to 1,073,741,824 bytes, more "
                                             "than 256 MiB (max_section_mb)")
    assert manifest["skipped_reasons"] == {OVERLAPPING: 1, OVER_SECTION: 1}
    assert manifest["counts"]["files"] == 2 and manifest["counts"]["functions"] > 1000
    # what a file is decides these skips: the files are inputs of the corpus, as a file that is not ELF is
    assert {item["path"] for item in manifest["input_files"]} == set(inputs)
    assert seconds < 20, f"{seconds:.1f} s"


# memory: the 1 GiB section unpacked past the worker's address-space cap (a resident-memory growth limit on
# the static binary alone would depend on what the worker's allocator reuses, and flake)
@pytest.mark.parametrize("file, limits, reason", [
    ("static", FileLimits(max_file_seconds=0.05), OVER_TIME),
    ("bomb", FileLimits(max_file_memory_mb=64, max_section_mb=4096), OVER_MEMORY)])
def test_a_file_over_its_time_or_memory_is_skipped_and_no_input(hostile, tmp_path, file, limits, reason):
    """What time and memory a file takes depends on the machine: a file skipped for them is left out of the
    inputs and the fingerprint, so the corpus is the one built without it (fingerprint and shards alike)."""
    static, true = str(hostile[file]), "/usr/bin/true"
    options = CorpusOptions(validation_fraction=0.0, limits=limits)
    manifest = build_corpus(tmp_path / "limited", [static, true], options, workers=1, progress=False)
    assert manifest["skipped_files"][static].startswith(f"{reason}: "), manifest["skipped_files"]
    assert manifest["skipped_reasons"] == {reason: 1}
    assert [item["path"] for item in manifest["input_files"]] == [true]
    without = build_corpus(tmp_path / "without", [true], options, workers=1, progress=False)
    assert manifest["fingerprint"] == without["fingerprint"]
    assert verify_corpus(tmp_path / "limited", log=lambda line: None) == []


def test_a_function_over_the_instruction_limit_is_dropped_and_counted(hostile, tmp_path):
    plain = read_file(str(hostile["object"]))
    longest = max(plain.rows, key=lambda row: row["instructions"])
    limits = FileLimits(max_function_instructions=longest["instructions"] - 1)
    limited = read_file(str(hostile["object"]), limits=limits)
    assert longest["id"] in limited.over_limit and longest["id"] not in {row["id"] for row in limited.rows}
    assert len(limited.rows) + len(limited.over_limit) == len(plain.rows)
    manifest = build_corpus(tmp_path / "corpus", [str(hostile["object"])], CorpusOptions(limits=limits), workers=1,
                            progress=False)
    assert manifest["counts"]["functions_over_limit"] == len(limited.over_limit)


def test_a_runaway_allocation_fails_at_the_workers_hard_memory_cap(hostile, tmp_path):
    """The section limit lifted, the 1 GiB unpacks in one call that no check interrupts: the worker's address
    space cap (its size + 2 x max_file_memory_mb) makes it a MemoryError, and the file a skipped one."""
    limits = FileLimits(max_file_memory_mb=64, max_section_mb=4096)
    manifest = build_corpus(tmp_path / "corpus", [str(hostile["bomb"]), "/usr/bin/true"],
                            CorpusOptions(validation_fraction=0.0, limits=limits), workers=1, progress=False)
    assert manifest["skipped_reasons"] == {"over memory limit": 1}, manifest["skipped_files"]
    assert manifest["counts"]["files"] == 1


def test_a_debian_package_is_read_again_without_the_file_its_worker_was_stopped_on(hostile, tmp_path):
    from test_debian import make_deb

    from undertale.data.corpus.debian import Pin, _read_job, _stopped

    deb = tmp_path / "hostile.deb"
    deb.write_bytes(make_deb("hostile", "1.0", {"usr/bin/true": Path("/usr/bin/true").read_bytes(),
                                               "usr/bin/overlapping": hostile["overlapping"].read_bytes(),
                                               "usr/lib/bomb.o": hostile["bomb"].read_bytes()}))
    pin = Pin("hostile", "1.0")
    job = (str(deb), pin, None, 1, 256 << 20, FileLimits(), {})
    first = _read_job(job)
    assert {item.path.split(":", 1)[1]: (item.error or "read").split(":")[0] for item in first.files} == {
        "/usr/bin/true": "read", "/usr/bin/overlapping": OVERLAPPING, "/usr/lib/bomb.o": OVER_SECTION}
    # its worker stopped after 200 s on /usr/bin/true: the package again, without that file
    retry = _stopped(job, "/usr/bin/true", 200.0)
    again = _read_job(retry.job)
    stopped = next(item for item in again.files if item.path.endswith(":/usr/bin/true"))
    assert stopped.error.startswith(f"{OVER_TIME}: still reading after 200 s") and stopped.sha256 is None
    # stopped again on a file already left out (or before any file): the package fails, named
    failed = _stopped(retry.job, "/usr/bin/true", 200.0)
    assert failed.error.startswith("hostile:amd64=1.0: over time limit: ") and failed.error.endswith("(/usr/bin/true)")


@pytest.mark.e2e
def test_the_default_limits_handle_the_hostile_files_from_the_command_line(hostile, tmp_path):
    started = time.perf_counter()
    process = start_script("-m", "undertale.data", "corpus", str(tmp_path / "corpus"), str(hostile["huge_symbols"]),
                           str(hostile["overlapping"]), str(hostile["bomb"]), "/usr/bin/true", "--workers", "2",
                           "--max-file-seconds", "45", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=120)
    seconds = time.perf_counter() - started
    assert process.returncode == 0, err[-3000:]
    limits = json.loads((tmp_path / "corpus" / "manifest.json").read_text())["parameters"]["limits"]
    assert limits == {**dataclasses.asdict(FileLimits()), "max_file_seconds": 45.0}
    [skipped] = [line for line in out.splitlines() if "skipped" in line and "files:" in line]
    assert skipped.strip().startswith("skipped 2 files: ") and "overlapping functions (1)" in skipped
    assert "over section size limit (1)" in skipped
    assert seconds < 40, f"{seconds:.1f} s"


def test_the_limits_are_data_settings_checked_by_name():
    settings = DataSettings(max_file_seconds=30, max_file_memory_mb=512)
    assert settings.limits == FileLimits(max_file_seconds=30, max_file_memory_mb=512)
    with pytest.raises(ValueError, match="max_file_memory_mb must be a positive integer, got 0"):
        DataSettings(max_file_memory_mb=0)
    with pytest.raises(ValueError, match="max_file_seconds must be a positive number of seconds, got 'x'"):
        FileLimits(max_file_seconds="x")


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.e2e
def test_kill_9_of_a_worker_stops_the_build_in_seconds_naming_it(tmp_path):
    compiler = subprocess.run(["gcc", "-print-prog-name=cc1"], capture_output=True, text=True).stdout.strip()
    if not os.path.isfile(compiler):
        pytest.skip("no cc1 (gcc's compiler proper) to keep a worker busy")
    compiler = os.path.realpath(compiler)
    output = tmp_path / "corpus"
    process = start_script("-m", "undertale.data", "corpus", str(output), compiler, "--workers", "1",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (workers := _children(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers, "no worker started"
        time.sleep(1.0)  # well into the file (seconds of work: millions of instructions)
        assert process.poll() is None
        os.kill(workers[0], signal.SIGKILL)
        killed = time.monotonic()
        out, err = process.communicate(timeout=30)
        seconds = time.monotonic() - killed
    finally:
        if process.poll() is None:
            process.kill()
    assert seconds < 5, f"the build took {seconds:.1f} s to notice"
    assert process.returncode == 1
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert errors == [f"error: corpus worker pid {workers[0]} was killed by signal 9 (SIGKILL; the out-of-memory "
                      f"killer or kill -9) while reading {compiler}; the build stopped (no manifest written): rerun "
                      "to build again"], err[-2000:]
    assert "Traceback" not in err
    assert not (output / "manifest.json").exists()


IGNORING_PARENT = """
import signal, sys
# what submitit's job environment installs: SIGTERM is logged and ignored, and pool workers inherit it
signal.signal(signal.SIGTERM, lambda *_: print("submitit WARNING - Bypassing signal SIGTERM", flush=True))
from undertale.data.corpus.build import CorpusOptions, build_corpus
manifest = build_corpus(sys.argv[1], sys.argv[2:], CorpusOptions(max_functions=50), workers=2)
print("functions", manifest["counts"]["functions"])
"""


@pytest.mark.e2e
def test_workers_tear_down_under_a_parent_that_ignores_sigterm(tmp_path):
    """The build stops early (max_functions), which tears the pool down while workers are busy: under
    multiprocessing.Pool, SIGTERM that submitit's inherited handler ignores, and a wait forever."""
    started = time.perf_counter()
    process = start_script("-c", IGNORING_PARENT, str(tmp_path / "corpus"), *BINARIES,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-3000:]
    assert "functions 50" in out and "Bypassing" not in out
    assert "has its share of max_functions" in out  # why the workers stopped early is said
    assert time.perf_counter() - started < 40


def _handlers(_: object) -> dict[str, object]:
    return {name: signal.getsignal(getattr(signal, name)) for name in ("SIGTERM", "SIGINT", "SIGUSR1")}


def _slow(job: int) -> int:
    if job == 1:
        time.sleep(600)  # stuck without using the processor: only the wall clock sees it
    if job == 2:
        raise ValueError("a bug in the worker")
    return job * 10


def test_pool_workers_reset_the_signal_handlers_they_inherit():
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        with SupervisedPool(_handlers, 1) as pool:
            [handlers] = list(pool.imap([0]))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert handlers == {"SIGTERM": signal.SIG_DFL, "SIGINT": signal.SIG_IGN, "SIGUSR1": signal.SIG_IGN}


def test_a_stuck_worker_is_stopped_and_a_failing_one_named():
    pool = SupervisedPool(_slow, 2, hang_seconds=1.0, on_timeout=lambda job, item, seconds: f"stopped {job}",
                          describe=lambda job: f"job-{job}")
    started = time.perf_counter()
    assert list(pool.imap([0, 1, 3])) == [0, "stopped 1", 30]
    assert time.perf_counter() - started < 10 and not pool.workers
    with pytest.raises(WorkerLost, match=r"corpus worker pid \d+ failed \(ValueError: a bug in the worker "
                                         r"\(test_hostile.py:\d+\)\) while reading job-2"):
        list(SupervisedPool(_slow, 1, describe=lambda job: f"job-{job}").imap([0, 2, 3]))


class _Client:
    def __init__(self, workers: set[str]):
        self.workers = workers

    def nthreads(self) -> dict[str, int]:
        return {address: 1 for address in self.workers}


class _Future:
    def __init__(self, outcomes: list):
        self.outcomes, self.cancelled = outcomes, False

    def result(self, timeout: float):
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def cancel(self) -> None:
        self.cancelled = True


def test_dask_names_a_worker_that_left_and_stops_when_a_tasks_workers_keep_dying(capsys):
    distributed = pytest.importorskip("distributed")
    from undertale.data.corpus.distributed import DaskReader

    reader = DaskReader.__new__(DaskReader)  # no cluster: a client that reports workers leaving
    reader.client, reader.scheduler = _Client({"tcp://b:2"}), "tcp://s:8786"
    reader._known, reader._empty_since = {"tcp://a:1", "tcp://b:2"}, None
    future = _Future([TimeoutError(), distributed.KilledWorker("read_file-1", "tcp://a:1", 3)])
    with pytest.raises(WorkerLost, match=r"^Dask workers died more than 3 times running the task of /bin/x \(the "
                                         r"last: tcp://a:1\); the build stopped \(no manifest written\)$"):
        reader._result(future, ("/bin/x", 1), lambda job: job[0], None, None)
    assert "warning: Dask worker tcp://a:1 left while waiting for /bin/x" in capsys.readouterr().err
    stuck = _Future([TimeoutError()])
    skipped = reader._result(stuck, ("/bin/y", 1), lambda job: job[0], 0.0, lambda job, seconds: f"stopped {job[0]}")
    assert skipped == "stopped /bin/y" and stuck.cancelled


# --- fuzzing the reader -------------------------------------------------------------------------------

FUZZ_LIMITS = FileLimits(max_file_seconds=2.0, max_file_memory_mb=256, max_section_mb=16,
                         max_function_instructions=10_000)
# what a mutant may be skipped as; not "failed to read: ..." (an exception the reader did not expect)
EXPECTED = ("not an ELF file", "unsupported architecture", "corrupt or unreadable ELF", "over time limit",
            "over memory limit", "over section size limit")


def _mutant(base: bytes, rng: random.Random) -> bytes:
    """One seeded mutation of an ELF64 image: header or section-table bytes flipped, a truncation, or a huge
    count, size, offset or flag written where the reader trusts the file."""
    data = bytearray(base)
    shoff, = struct.unpack_from("<Q", data, 40)
    shentsize, shnum = struct.unpack_from("<HH", data, 58)
    table = range(shoff, min(len(data), shoff + shentsize * shnum)) if shoff < len(data) else range(64)
    kind = rng.randrange(7)
    if kind == 0:  # flip bytes of the ELF header
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(64)] ^= 1 << rng.randrange(8)
    elif kind == 1:  # flip bytes of the section header table
        for _ in range(rng.randint(1, 8)):
            data[rng.choice(table)] ^= 1 << rng.randrange(8)
    elif kind == 2:  # truncate
        del data[rng.randrange(1, len(data)):]
    elif kind == 3:  # huge counts: sections, their entry size, program headers
        field, size = rng.choice([(60, "<H"), (58, "<H"), (56, "<H"), (62, "<H"), (40, "<Q")])
        struct.pack_into(size, data, field, rng.choice([0, 0xFFFF, 0xFF00, 1 << 15, (len(data) - 8) & 0xFFFF])
                         if size == "<H" else rng.choice([0, len(data) - 16, 1 << 62]))
    elif kind == 4 and shnum:  # a section's size, offset, entry size or link made huge or odd
        header = shoff + rng.randrange(shnum) * shentsize
        field = rng.choice([24, 32, 40, 56])  # sh_offset, sh_size, sh_link/sh_info, sh_entsize
        value = rng.choice([1 << 63, (1 << 64) - 1, 1 << 32, len(data), 0, 0xFFFF_FFFF])
        if header + field + 8 <= len(data):
            struct.pack_into("<Q", data, header + field, value)
    elif kind == 5 and shnum:  # a section marked compressed, or its type changed
        header = shoff + rng.randrange(shnum) * shentsize
        if header + 16 <= len(data):
            if rng.random() < 0.5:
                flags, = struct.unpack_from("<Q", data, header + 8)
                struct.pack_into("<Q", data, header + 8, flags | SHF_COMPRESSED)
            else:
                struct.pack_into("<I", data, header + 4, rng.choice([2, 3, 8, 11, 0x6FFFFFFF]))
    else:  # random bytes anywhere: symbol tables, unwind tables, code
        for _ in range(rng.randint(1, 32)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def test_fuzzed_elf_files_are_read_within_limits_without_a_traceback(hostile, tmp_path):
    archive = tmp_path / "library.a"
    subprocess.run(["ar", "rcs", str(archive), str(hostile["object"])], check=True)
    bases = [Path("/usr/bin/true").read_bytes(), hostile["object"].read_bytes(), archive.read_bytes()]
    rng = random.Random(29)
    outcomes: dict[str, int] = {}
    slowest = 0.0
    started = time.perf_counter()
    for number in range(360):
        base = bases[number % len(bases)]
        if base.startswith(b"!<arch>"):  # mutate the ELF member inside the archive
            start = base.index(b"\x7fELF")
            mutant = base[:start] + _mutant(base[start:], rng)
        else:
            mutant = _mutant(base, rng)
        began = time.thread_time()
        result = read_bytes(mutant, f"mutant-{number}", limits=FUZZ_LIMITS)
        slowest = max(slowest, time.thread_time() - began)
        assert isinstance(result, FileResult)
        if result.error is not None:
            assert "\n" not in result.error and result.error.startswith(EXPECTED), (number, result.error)
            assert not result.rows
        reason = "read" if result.error is None else result.error.split(":")[0]
        outcomes[reason] = outcomes.get(reason, 0) + 1
    assert slowest < FUZZ_LIMITS.max_file_seconds + 0.5, f"one mutant took {slowest:.1f} processor seconds"
    assert outcomes["read"] > 100 and sum(outcomes.values()) - outcomes["read"] > 50, outcomes
    assert time.perf_counter() - started < 30


def test_the_data_settings_limits_reach_the_corpus_build(monkeypatch):
    import undertale.data.config as config
    from undertale.data.config import DataConfig

    seen = {}
    monkeypatch.setattr(config, "prepare", lambda **arguments: seen.update(arguments))
    DataConfig(source="binaries", paths=["/usr/bin/ls"], max_file_seconds=30, max_function_instructions=99).prepare(64)
    limits = seen["corpus_options"].limits
    assert (limits.max_file_seconds, limits.max_function_instructions) == (30, 99)


def test_train_reports_a_lost_worker_in_one_line_with_exit_code_1(monkeypatch, capsys):
    from omegaconf import OmegaConf

    import undertale.training.run as run
    from undertale.training.entry import run_job

    line = "corpus worker pid 77 was killed by signal 9 (SIGKILL) while reading /usr/bin/x; the build stopped"

    def lose_a_worker(cfg):
        raise WorkerLost(line)

    monkeypatch.setattr(run, "train", lose_a_worker)
    with pytest.raises(SystemExit) as exit:
        run_job(OmegaConf.create({"task": {"monitor": "val/accuracy"}}))
    assert exit.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {line}"]
