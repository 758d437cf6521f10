"""Data commands: build a corpus, train a tokenizer, tokenize, benchmark, build a function-pairs dataset.

    python -m undertale.data corpus OUTPUT_DIR [PATHS ...] [--workers N] [--max-functions N] [--seed S]
                                    [--validation-fraction F] [--scheduler local|ADDRESS|FILE.json]
    python -m undertale.data corpus OUTPUT_DIR --packages LIST [--mirror URL] [--suite bookworm] [--cache DIR]
                                    [--allow-missing] [--workers N] ...
        per-file limits (either form): [--max-file-seconds S] [--max-file-memory-mb MIB] [--max-section-mb MIB]
                                       [--max-function-instructions N]
    python -m undertale.data verify CORPUS_DIR [--cache DIR] [--no-inputs]
    python -m undertale.data tokenizer CORPUS_DIR OUTPUT_FILE [--vocabulary-size N] [--sequence-length L]
    python -m undertale.data tokenize CORPUS_DIR TOKENIZER OUTPUT_DIR [--sequence-length L]
    python -m undertale.data benchmark [PATHS ...] [--workers N] [--max-files N]
    python -m undertale.data pairs OUTPUT SOURCES... [--levels O0,O1,O2,O3] [--compilers gcc,clang]
                                   [--targets x86-64,aarch64,i386 (instead of --compilers)]
                                   [--split 0.7,0.15,0.15] [--seed S] [--workers N] [--cflags="..."] [--build COMMAND]
                                   [--keep-objects DIR] [--validation-projects A,B --test-projects C,D]
    python -m undertale.data stage DATASET_DIR SRC_DIR [--mirror URL] [--build OUTPUT] [--workers N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from undertale.data.corpus.build import CorpusOptions, build_corpus
from undertale.runtime.errors import WorkerLost
from undertale.data.encode import tokenize_corpus
from undertale.data.pipeline import training_texts
from undertale.settings.data import DEFAULT_MERGES, FileLimits
from undertale.data.tokenizer import DEFAULT_SEQUENCE_LENGTH, load_tokenizer, train_tokenizer
from undertale.runtime.errors import report_usage_error
from undertale.runtime.outputs import check_writable, expected_failure
from undertale.runtime.program import program_name


def _corpus(args: argparse.Namespace) -> int:
    """Build a corpus; exit code 1 after one ``error:`` line when a worker process died or failed."""
    limits = FileLimits(args.max_file_seconds, args.max_file_memory_mb, args.max_section_mb,
                        args.max_function_instructions)
    options = CorpusOptions(
        seed=args.seed, validation_fraction=args.validation_fraction, max_functions=args.max_functions, limits=limits
    )
    try:
        if args.packages is None:
            for flag, value in (("--mirror", args.mirror), ("--cache", args.cache),
                                ("--allow-missing", args.allow_missing)):
                if value:
                    raise ValueError(f"{flag} needs --packages LIST")
            build_corpus(args.output, args.paths, options, workers=args.workers, scheduler=args.scheduler)
            return 0
        if args.paths:
            raise ValueError("give either PATHS or --packages LIST, not both")
        if args.scheduler:
            raise ValueError("--scheduler is not supported with --packages (the Debian build uses a process pool)")
        from undertale.data.corpus.debian import build_debian_corpus, parse_list

        pins = parse_list(args.packages)  # a syntax error stops here, before any work
        build_debian_corpus(args.output, pins, options, workers=args.workers, mirror=args.mirror, suite=args.suite,
                            cache_dir=args.cache, allow_missing=args.allow_missing, source_file=args.packages)
    except WorkerLost as error:
        print(f"error: {error}", file=sys.stderr)
        return WorkerLost.exit_code
    return 0


def _verify(args: argparse.Namespace) -> int:
    from undertale.data.corpus.verify import verify_corpus

    return 1 if verify_corpus(args.corpus, cache=args.cache, inputs=not args.no_inputs) else 0


def _tokenizer(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    texts = training_texts(Path(args.corpus), args.functions)
    if not texts:
        raise ValueError(f"{args.corpus}: no functions to train a tokenizer on")
    tokenizer = train_tokenizer(texts, args.vocabulary_size, args.sequence_length)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(args.output)
    print(
        f"tokenizer: {tokenizer.get_vocab_size():,} tokens from {len(texts):,} functions in "
        f"{time.perf_counter() - started:.1f} s -> {args.output}"
    )


def _tokenize(args: argparse.Namespace) -> None:
    tokenizer = load_tokenizer(args.tokenizer, args.sequence_length)
    counts = tokenize_corpus(args.corpus, tokenizer, args.output)
    rate = counts["tokens"] / max(counts["seconds"], 1e-9)
    print(f"tokenize: {counts['rows']:,} functions, {counts['tokens']:,} tokens, {rate:,.0f} tokens/s -> {args.output}")


def _benchmark(args: argparse.Namespace) -> None:
    from undertale.data.corpus.benchmark import run_benchmark

    run_benchmark(args.paths, workers=args.workers, max_files=args.max_files)


def _pairs(args: argparse.Namespace) -> None:
    from undertale.data.pairs.build import build_pairs

    held_out = {split: names for split, names in (("validation", args.validation_projects), ("test", args.test_projects))
                if names is not None}
    build_pairs(
        args.output, args.sources, levels=args.levels, compilers=args.compilers, split=args.split, seed=args.seed,
        workers=args.workers, cflags=args.cflags, keep_objects=args.keep_objects, build=args.build,
        held_out=held_out or None, targets=args.targets,
    )


def _stage(args: argparse.Namespace) -> None:
    from undertale.data.pairs.stage import run

    run(args.dataset, args.src, mirror=args.mirror, build=args.build, workers=args.workers)


def _join_cflags(argv: list[str]) -> list[str]:
    """``--cflags -DX`` as ``--cflags=-DX``: argparse would take a lone ``-DX`` for an option."""
    joined = list(argv)
    for index in range(len(joined) - 2, -1, -1):
        if joined[index] == "--cflags":
            joined[index : index + 2] = ["--cflags=" + joined[index + 1]]
    return joined


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog=program_name("python -m undertale.data"), description="undertale data commands")
    commands = root.add_subparsers(dest="command", required=True)

    corpus = commands.add_parser("corpus", help="disassemble ELF binaries into parquet shards")
    corpus.add_argument("output", help="corpus directory to write")
    corpus.add_argument("paths", nargs="*", help="files, directories or globs (default: the system directories)")
    corpus.add_argument(
        "--workers", type=int, default=None, help="processes, or Dask workers with --scheduler local (default: cores)"
    )
    corpus.add_argument(
        "--scheduler", default=None, metavar="local|ADDRESS|FILE.json",
        help="decode files as Dask tasks: local (a LocalCluster), a scheduler address (tcp://host:8786) or a "
        "scheduler file; default: a process pool",
    )
    corpus.add_argument("--max-functions", type=int, default=None, help="stop after this many unique functions")
    corpus.add_argument("--seed", type=int, default=0, help="seed of the file order and the split")
    corpus.add_argument("--validation-fraction", type=float, default=0.05,
                        help="share of binaries (of packages, with --packages) held out")
    corpus.add_argument("--packages", default=None, metavar="LIST",
                        help="build from pinned Debian binary packages: a file of name=version or "
                             "name:arch=version lines (arch amd64 (default), arm64, i386); see docs/corpus.md")
    corpus.add_argument("--mirror", default=None, metavar="URL",
                        help="Debian mirror (default: the one in /etc/apt, else https://deb.debian.org/debian)")
    corpus.add_argument("--suite", default="bookworm", help="suite whose Packages index resolves the pins")
    corpus.add_argument("--cache", default=None, metavar="DIR",
                        help="where .deb files are kept as DIR/debs/<sha256>.deb (default: $UNDERTALE_CACHE, "
                             "else ~/.cache/undertale)")
    corpus.add_argument("--allow-missing", action="store_true",
                        help="succeed although packages failed (they are listed in the manifest); default: exit 2 "
                             "after building the others")
    limits = FileLimits()  # a file over one of these is skipped and counted by reason in the manifest
    corpus.add_argument("--max-file-seconds", type=float, default=limits.max_file_seconds, metavar="S",
                        help=f"processor seconds one input file may take (default {limits.max_file_seconds:g})")
    corpus.add_argument("--max-file-memory-mb", type=int, default=limits.max_file_memory_mb, metavar="MIB",
                        help=f"memory one input file may add to its worker (default {limits.max_file_memory_mb})")
    corpus.add_argument("--max-section-mb", type=int, default=limits.max_section_mb, metavar="MIB",
                        help=f"size of any one section of a file, after decompression (default {limits.max_section_mb})")
    corpus.add_argument("--max-function-instructions", type=int, default=limits.max_function_instructions,
                        metavar="N", help="instructions per function; a longer one is dropped and counted "
                                          f"(default {limits.max_function_instructions:,})")
    corpus.set_defaults(run=_corpus)

    verify = commands.add_parser("verify", help="check a corpus's shards (and its inputs, where available) "
                                                "against its manifest; exit 0 OK, 1 FAILED")
    verify.add_argument("corpus", help="corpus directory")
    verify.add_argument("--cache", default=None, metavar="DIR",
                        help="the cache holding debs/<sha256>.deb (default: the one the manifest records)")
    verify.add_argument("--no-inputs", action="store_true", help="check the shards and the fingerprint only")
    verify.set_defaults(run=_verify)

    tokenizer = commands.add_parser("tokenizer", help="train a tokenizer on a corpus")
    tokenizer.add_argument("corpus", help="corpus directory (or any parquet shards with a disassembly column)")
    tokenizer.add_argument("output", help="tokenizer.json to write")
    tokenizer.add_argument(
        "--vocabulary-size", type=int, default=DEFAULT_MERGES,
        help=f"byte-pair budget for numbers; whole tokens come on top (default {DEFAULT_MERGES})",
    )
    tokenizer.add_argument("--sequence-length", type=int, default=DEFAULT_SEQUENCE_LENGTH, help="fixed token length")
    tokenizer.add_argument("--functions", type=int, default=50_000, help="functions sampled for training")
    tokenizer.set_defaults(run=_tokenizer)

    tokenize = commands.add_parser("tokenize", help="add fixed-length tokens and mask to corpus shards")
    tokenize.add_argument("corpus", help="corpus directory")
    tokenize.add_argument("tokenizer", help="tokenizer.json")
    tokenize.add_argument("output", help="directory for tokenized shards")
    tokenize.add_argument("--sequence-length", type=int, default=None, help="override the tokenizer's length")
    tokenize.set_defaults(run=_tokenize)

    benchmark = commands.add_parser("benchmark", help="corpus build speed beside objdump -d on the same files")
    benchmark.add_argument("paths", nargs="*", help="files, directories or globs (default: the system directories)")
    benchmark.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    benchmark.add_argument("--max-files", type=int, default=200, help="ELF files sampled (default 200)")
    benchmark.set_defaults(run=_benchmark)

    pairs = commands.add_parser(
        "pairs", help="compile C projects at several optimisation levels into a function-pairs dataset"
    )
    pairs.add_argument("output", help="directory to write (train/ validation/ test/ manifest.json)")
    pairs.add_argument("sources", nargs="*", help="project directories, or .c files (their directory is the project)")
    pairs.add_argument("--levels", default="O0,O1,O2,O3", help="optimisation levels among O0 O1 O2 O3 Os")
    pairs.add_argument("--compilers", default="gcc,clang", help="compilers; those not on PATH are skipped")
    pairs.add_argument("--targets", default=None, metavar="ISAS",
                       help="instruction sets instead of --compilers, e.g. x86-64,aarch64,i386: each built by gcc or "
                            "Debian's cross compiler for it (gcc-aarch64-linux-gnu, gcc-i686-linux-gnu); a missing one "
                            "is an error naming its package")
    pairs.add_argument("--split", default=None,
                       help="train,validation,test fractions of the projects (default 0.7,0.15,0.15)")
    pairs.add_argument("--seed", type=int, default=0, help="seed of the project split")
    pairs.add_argument("--validation-projects", default=None, metavar="NAMES",
                       help="split by name instead: these projects (comma-separated names) are the validation "
                            "split, those of --test-projects the test split, every other project train; a split "
                            "whose option is left out is empty")
    pairs.add_argument("--test-projects", default=None, metavar="NAMES", help="the test split's projects, by name")
    pairs.add_argument("--workers", type=int, default=None, help="parallel compilations (default: all cores)")
    pairs.add_argument("--cflags", default="", help='extra compiler flags, e.g. --cflags="-DNDEBUG -std=gnu99"')
    pairs.add_argument("--build", default=None, metavar="COMMAND",
                       help='build each project with its own command instead of compiling each .c file, e.g. '
                            '--build "make CC={cc} CFLAGS=-{level}" (run in a copy of the project per compiler and level)')
    pairs.add_argument("--keep-objects", default=None, metavar="DIR", help="keep the object files in DIR")
    pairs.set_defaults(run=_pairs)

    stage = commands.add_parser(
        "stage", help="download pinned Debian source packages and stage their C projects as a dataset description says"
    )
    stage.add_argument("dataset", help="dataset directory: dataset.yaml and projects/<name>.yaml")
    stage.add_argument("src", help="where the packages are downloaded and unpacked; SRC/stage/<name> is staged")
    stage.add_argument("--mirror", default=None, metavar="URL",
                       help="Debian mirror (default: the one in /etc/apt, else https://deb.debian.org/debian)")
    stage.add_argument("--build", default=None, metavar="OUTPUT",
                       help="then build the pairs dataset into OUTPUT with the dataset's split, levels, compilers, "
                            "cflags (without it the pairs command is printed)")
    stage.add_argument("--workers", type=int, default=None,
                       help="parallel compilations of --build (default: all cores)")
    stage.set_defaults(run=_stage)
    return root


# where each subcommand writes: (argument, what it is, a directory); checked before any work
OUTPUTS = {
    "corpus": (("output", "corpus directory", True), ("cache", "--cache", True)),
    "tokenizer": (("output", "tokenizer file", False),),
    "tokenize": (("output", "output directory", True),),
    "pairs": (("output", "pairs directory", True), ("keep_objects", "--keep-objects", True)),
    "stage": (("src", "source directory", True), ("build", "--build", True)),
}


def check_outputs(args: argparse.Namespace) -> None:
    """Every output of the subcommand (:data:`OUTPUTS`) can be written, before any work.

    Raises:
        OutputError: naming the output and why it cannot be written.
    """
    for name, what, directory in OUTPUTS.get(args.command, ()):
        value = getattr(args, name, None)
        if value:
            check_writable(value, what, directory=directory)


def main(argv=None) -> int:
    """Run one data command; its exit code (2 after one ``error:`` line for a mistake, an output that cannot be
    written, or a disk that fills)."""
    args = parser().parse_args(_join_cflags(list(sys.argv[1:] if argv is None else argv)))
    try:
        check_outputs(args)
        code = args.run(args)
    except Exception as error:
        stop = expected_failure(error)
        if stop is not None:
            return report_usage_error(stop)
        if not isinstance(error, (ValueError, FileNotFoundError)):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
