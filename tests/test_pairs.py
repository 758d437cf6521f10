"""Function-pairs dataset: small C projects compiled at several optimisation levels, split by project."""

import json
import shutil
from pathlib import Path

import pytest

from undertale.data.__main__ import main as data_main
from undertale.data.corpus.read import SCHEMA as CORPUS_SCHEMA
from undertale.data.pairs.build import build_pairs, read_pairs
from undertale.data.pairs.discover import SPLITS, assign_splits, split_counts

from helpers import one_line_error, run_script

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

LEVELS = ("O0", "O2", "O3")

PROJECTS = {
    "alpha/math.c": """
        static __attribute__((noinline)) int helper(int x, int y) { return x * y + (x ^ y); }
        int add(int a, int b) { return a + b; }
        int scale(int a, int b) { return helper(a, b) * 3 + helper(b, a); }
    """,
    "alpha/util/strings.c": """
        static __attribute__((noinline)) int helper(const char *s, int c) { int n = 0; for (; *s; s++) n += *s == c; return n; }
        int count_chars(const char *s, int c) { return helper(s, c) + helper(s, c + 1); }
    """,
    "alpha/broken.c": "int broken(int x) { return x + }\n",
    "beta/list.c": """
        struct node { struct node *next; int value; };
        int list_sum(struct node *n) { int s = 0; for (; n; n = n->next) s += n->value; return s; }
        int list_length(struct node *n) { int c = 0; while (n) { c++; n = n->next; } return c; }
    """,
    "beta/.pc/fix-sum.patch/list.c": "int patched_copy(void) { return 0; }\n",  # hidden directory: left out
    "gamma/gamma.h": "#define GAMMA_MULTIPLIER 2654435761u\n",
    # <gamma.h> is found through -I<project root>
    "gamma/src/hash.c": """
        #include <gamma.h>
        unsigned hash(const char *s) { unsigned h = 0; while (*s) h = (h ^ (unsigned char)*s++) * GAMMA_MULTIPLIER; return h; }
    """,
}

# group -> the function name expected at every level
EXPECTED = {
    "alpha/math.c:add": "add",
    "alpha/math.c:scale": "scale",
    "alpha/math.c:helper": "helper",
    "alpha/util/strings.c:count_chars": "count_chars",
    "alpha/util/strings.c:helper": "helper",
    "beta/list.c:list_sum": "list_sum",
    "beta/list.c:list_length": "list_length",
    "gamma/src/hash.c:hash": "hash",
}


def write_projects(root: Path) -> list[str]:
    for relative, text in PROJECTS.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return [str(root / name) for name in ("alpha", "beta", "gamma")]


def all_rows(output: Path) -> dict[str, list[dict]]:
    return {split: read_pairs(output, split).to_pylist() for split in SPLITS}


def run_cli(*arguments: str):
    return run_script("-m", "undertale.data", "pairs", *arguments, check=False, timeout=120)


def cli_here(*arguments: str) -> int:
    """``python -m undertale.data pairs <arguments>`` in this process; its exit code."""
    try:
        return data_main(["pairs", *arguments])
    except SystemExit as stop:  # argparse's own mistakes
        return stop.code


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("projects")
    sources = write_projects(root)
    output = root / "pairs"
    manifest = build_pairs(output, sources, levels=LEVELS, compilers=("gcc",), workers=2, progress=False)
    return root, sources, output, manifest


def test_functions_at_every_level_share_one_group(built):
    _, _, output, manifest = built
    rows = [row for split_rows in all_rows(output).values() for row in split_rows]
    levels_of: dict[str, set[str]] = {}
    for row in rows:
        assert row["name"] == EXPECTED[row["group"]], row["group"]
        levels_of.setdefault(row["group"], set()).add(row["level"])
    assert levels_of == {group: set(LEVELS) for group in EXPECTED}
    # the two static helpers of one project are two groups (the file is part of the group)
    assert len({row["group"] for row in rows if row["name"] == "helper"}) == 2
    assert manifest["counts"]["groups"] == manifest["counts"]["complete_groups"] == len(EXPECTED)
    assert manifest["counts"]["functions"] == len(rows) == len(EXPECTED) * len(LEVELS)


def test_columns_are_the_corpus_columns_plus_pair_keys(built):
    root, _, output, _ = built
    table = read_pairs(output, "train")
    assert table.schema.names == CORPUS_SCHEMA.names + ["group", "level", "compiler", "project", "file"]
    rows = [row for split_rows in all_rows(output).values() for row in split_rows]
    for row in rows:
        project, file = row["group"].split(":")[0].split("/", 1)
        assert (row["project"], row["file"], row["compiler"]) == (project, file, "gcc")
        assert row["level"] in LEVELS and row["architecture"] == "x86-64"
        assert row["source"] == str(root / project / file)
        assert row["instructions"] == row["disassembly"].count("[NEXT]") + 1 > 0
    o0 = {row["group"]: row for row in rows if row["level"] == "O0"}
    o2 = {row["group"]: row for row in rows if row["level"] == "O2"}
    assert o0["alpha/math.c:add"]["disassembly"].startswith("push rbp [NEXT] mov rbp rsp")
    assert o2["alpha/math.c:add"]["instructions"] < o0["alpha/math.c:add"]["instructions"]


def test_broken_file_is_listed_with_its_error_and_the_rest_built(built):
    _, _, output, manifest = built
    failed = manifest["failed"]
    assert [(item["project"], item["file"], item["level"]) for item in failed] == [
        ("alpha", "broken.c", level) for level in LEVELS
    ]
    for item in failed:
        assert item["error"].startswith("broken.c:1:") and "error:" in item["error"]
    assert manifest["counts"]["failed_compilations"] == len(LEVELS)
    files = {row["file"] for row in read_pairs(output, manifest_split(manifest, "alpha")).to_pylist()}
    assert files == {"math.c", "util/strings.c"}


def manifest_split(manifest: dict, project: str) -> str:
    [split] = [split for split in SPLITS if project in manifest["projects"][split]]
    return split


def test_projects_never_straddle_splits(built):
    _, _, output, manifest = built
    found = {split: {row["project"] for row in rows} for split, rows in all_rows(output).items()}
    assert found == {split: set(manifest["projects"][split]) for split in SPLITS}
    assert sorted(name for names in found.values() for name in names) == ["alpha", "beta", "gamma"]
    assert all(found.values()), "three projects at 0.7/0.15/0.15 give every split one"
    for split in SPLITS:
        assert manifest["counts"]["splits"][split]["functions_by_compiler_level"]["gcc"]["O2"] > 0
    # deterministic from the seed and the names, not their order
    assert assign_splits(["gamma", "alpha", "beta"], (0.7, 0.15, 0.15), 0) == {
        name: manifest_split(manifest, name) for name in ("alpha", "beta", "gamma")
    }


def test_split_counts_give_each_nonzero_fraction_a_project():
    assert split_counts(1, (0.7, 0.15, 0.15)) == [1, 0, 0]
    assert split_counts(2, (0.7, 0.15, 0.15)) == [1, 1, 0]
    assert split_counts(3, (0.7, 0.15, 0.15)) == [1, 1, 1]
    assert split_counts(10, (0.7, 0.15, 0.15)) == [7, 2, 1]
    assert split_counts(5, (0.8, 0.2, 0.0)) == [4, 1, 0]
    assert split_counts(1, (0.0, 0.0, 1.0)) == [0, 0, 1]
    assert all(sum(split_counts(n, (0.7, 0.15, 0.15))) == n for n in range(1, 50))


def test_same_arguments_reuse_the_output_and_a_cut_build_is_not_complete(built, tmp_path, capsys):
    _, sources, output, manifest = built
    again = build_pairs(output, sources, levels=LEVELS, compilers=("gcc",), workers=2, progress=True)
    assert again["created"] == manifest["created"] and "pairs: reusing" in capsys.readouterr().out
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="no complete pairs dataset"):
        read_pairs(copy, "train")
    rebuilt = build_pairs(copy, sources, levels=LEVELS, compilers=("gcc",), workers=2, progress=False)
    assert rebuilt["counts"]["functions"] == manifest["counts"]["functions"]


def test_one_project_and_a_missing_compiler(built, tmp_path, capsys):
    root = built[0]
    # a project whose only file fails takes no place in a split
    sources = [str(root / "beta" / "list.c"), str(root / "alpha" / "broken.c")]
    manifest = build_pairs(
        tmp_path / "one", sources, levels="O0,O1", compilers="gcc,no-such-cc-xyz",
        workers=1, keep_objects=tmp_path / "objects",
    )
    out, err = capsys.readouterr()
    assert "compiler 'no-such-cc-xyz' not found on PATH; skipped" in err
    assert "only one project: everything is in train" in out
    assert "projects without functions (in no split): alpha" in out
    assert manifest["projects"] == {"train": ["beta"], "validation": [], "test": []}
    assert manifest["counts"]["splits"]["test"]["functions"] == 0
    assert manifest["compilers"] == ["gcc"] and manifest["compilers_missing"] == ["no-such-cc-xyz"]
    assert not (tmp_path / "one" / "validation").exists() and not (tmp_path / "one" / "test").exists()
    assert read_pairs(tmp_path / "one", "test").num_rows == 0
    assert (tmp_path / "objects" / "gcc" / "O1" / "beta" / "list.o").is_file()


def test_read_pairs_columns_and_complete_groups(tmp_path):
    # gcc defines __OPTIMIZE__ at -O1 and above: the second function exists at O2 only, its group is not complete
    project = tmp_path / "delta"
    project.mkdir()
    (project / "d.c").write_text(
        "int always(int x) { return x * 7; }\n"
        "#ifdef __OPTIMIZE__\nint optimised_only(int x) { return x - 1; }\n#endif\n"
    )
    output = tmp_path / "pairs"
    build_pairs(output, [str(project)], levels=("O0", "O2"), compilers=("gcc",), workers=1, progress=False)
    assert sorted(read_pairs(output, "train", columns=["name"]).column("name").to_pylist()) == [
        "always", "always", "optimised_only",
    ]
    complete = read_pairs(output, "train", columns=["group", "level"], complete=True).to_pylist()
    assert complete == [{"group": "delta/d.c:always", "level": "O0"}, {"group": "delta/d.c:always", "level": "O2"}]
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        read_pairs(output, "dev")


def test_cli_passes_cflags_and_prints_a_summary(built, tmp_path, capsys):
    project = tmp_path / "epsilon"
    project.mkdir()
    (project / "e.c").write_text("#ifdef EXTRA\nint extra(int x) { return x + EXTRA; }\n#endif\nint base(void) { return 1; }\n")
    assert data_main(["pairs", str(tmp_path / "out"), str(project), "--levels", "O1", "--compilers", "gcc",
                      "--cflags", "-DEXTRA=3", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 functions in 2 groups" in out and "train: 1 project(s)" in out
    assert sorted(read_pairs(tmp_path / "out", "train").column("name").to_pylist()) == ["base", "extra"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["arguments"]["cflags"] == ["-DEXTRA=3"]


@pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang")
def test_gcc_and_clang_share_groups(built, tmp_path):
    root = built[0]
    manifest = build_pairs(
        tmp_path / "both", [str(root / "beta")], levels=("O0", "O2"), compilers=("gcc", "clang"), progress=False
    )
    rows = read_pairs(tmp_path / "both", "train").to_pylist()
    assert {(row["compiler"], row["level"]) for row in rows if row["group"] == "beta/list.c:list_sum"} == {
        ("gcc", "O0"), ("gcc", "O2"), ("clang", "O0"), ("clang", "O2"),
    }
    assert manifest["counts"]["complete_groups"] == 2


def test_every_file_failing_is_an_error(built, tmp_path):
    with pytest.raises(ValueError, match=r"every compilation failed .*broken\.c:1:.*error:"):
        build_pairs(tmp_path / "out", [str(built[0] / "alpha" / "broken.c")], compilers=("gcc",), progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_bad_input_is_one_line_and_exit_code_2(built, tmp_path, capsys):
    root = built[0]
    (tmp_path / "headers").mkdir()
    (tmp_path / "headers" / "only.h").write_text("int x;\n")
    cases = [
        ((), "no SOURCES given"),
        ((str(tmp_path / "headers"),), "no .c files under"),
        ((str(root / "beta"), "--levels", "O0,O4"), "unknown optimisation level 'O4'"),
        ((str(tmp_path / "missing"),), "does not exist"),
    ]
    assert cases[0][1] in one_line_error(run_cli(str(tmp_path / "out"), *cases[0][0]))  # the command itself, once
    for arguments, message in cases[1:]:  # the same entry point, in this process
        code = cli_here(str(tmp_path / "out"), *arguments)
        error = capsys.readouterr().err
        assert code == 2, error
        assert error.startswith("error: ") and message in error, error
        assert len(error.strip().splitlines()) == 1, error


def test_projects_built_by_their_own_command(tmp_path):
    """--build: each project is built by its Makefile (in a copy, per level), every .o read; a failing build is listed."""
    if shutil.which("make") is None:
        pytest.skip("needs make")
    good, bad = tmp_path / "made", tmp_path / "broken"
    (good / "src").mkdir(parents=True)
    bad.mkdir()
    (good / "src" / "one.c").write_text("#ifdef FROM_MAKE\nint made_by_make(int x) { return x * 3 + 1; }\n#endif\n"
                                        "int plain(int a, int b) { return a - b; }\n")
    (good / "Makefile").write_text("all:\n\t$(CC) $(CFLAGS) -DFROM_MAKE -c src/one.c -o src/one.o\n")
    (bad / "Makefile").write_text("all:\n\t$(CC) -c missing.c\n")
    (bad / "x.c").write_text("int x(void) { return 0; }\n")
    output = tmp_path / "pairs"
    manifest = build_pairs(output, [good, bad], levels=("O0", "O2"), compilers=("gcc",), split=(1, 0, 0),
                           progress=False, build="make CC={cc} CFLAGS=-{level}")
    rows = read_pairs(output, "train").to_pylist()
    groups = {(row["group"], row["level"]) for row in rows}
    assert {("made/src/one.c:made_by_make", level) for level in ("O0", "O2")} <= groups
    assert {row["file"] for row in rows} == {"src/one.c"} and {row["project"] for row in rows} == {"made"}
    [failure] = {(f["project"], f["level"]) for f in manifest["failed"] if f["level"] == "O0"}
    assert failure == ("broken", "O0") and "missing.c" in manifest["failed"][0]["error"]
    assert not (good / "src" / "one.o").exists(), "the project's own tree is never built in"


def test_linked_subdirectories_are_followed_and_a_link_cycle_ends(tmp_path):
    from undertale.data.pairs.discover import _c_files

    elsewhere = tmp_path / "elsewhere" / "lib"
    elsewhere.mkdir(parents=True)
    (elsewhere / "linked.c").write_text("int linked(void) { return 1; }\n")
    project = tmp_path / "project"
    (project / ".pc").mkdir(parents=True)
    (project / ".pc" / "patched.c").write_text("int old(void) { return 0; }\n")
    (project / "top.c").write_text("int top(void) { return 2; }\n")
    (project / "lib").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(project, target_is_directory=True)
    names = sorted(path.relative_to(project).as_posix() for path in _c_files(project))
    assert names == ["lib/linked.c", "top.c"], "the link is followed, .pc is not, the cycle back is not walked"


def test_another_split_seed_splits_the_built_functions_anew_without_compiling(tmp_path, monkeypatch, capsys):
    from undertale.data.pairs import build as pairs_module
    from undertale.data.pairs.build import read_pairs
    from undertale.data.pairs.discover import assign_splits

    sources = []
    for index, name in enumerate(("one", "two", "three", "four")):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.c").write_text(f"int {name}(int x) {{ return x * {index + 2} + 1; }}\n")
        sources.append(tmp_path / name)
    output = tmp_path / "pairs"
    first = build_pairs(output, sources, levels=("O0",), compilers=("gcc",), split=(0.5, 0.25, 0.25), seed=0,
                        workers=1, progress=False)

    def no_compiling(*args, **kwargs):
        raise AssertionError("nothing should be compiled again")

    monkeypatch.setattr(pairs_module, "_compile_all", no_compiling)
    seed = next(s for s in range(1, 50) if assign_splits(sorted(first["project_roots"]), (0.5, 0.25, 0.25), s)
                != assign_splits(sorted(first["project_roots"]), (0.5, 0.25, 0.25), 0))
    again = build_pairs(output, sources, levels=("O0",), compilers=("gcc",), split=(0.5, 0.25, 0.25), seed=seed,
                        workers=1, progress=True)
    assert "splitting its functions anew" in capsys.readouterr().out
    assert again["projects"] != first["projects"] and again["arguments"]["seed"] == seed
    assert again["counts"]["functions"] == first["counts"]["functions"]
    assert again["counts"]["compilations"] == first["counts"]["compilations"]
    rows = {name: read_pairs(output, name).num_rows for name in ("train", "validation", "test")}
    assert sum(rows.values()) == first["counts"]["functions"]
    for split, projects in again["projects"].items():
        assert set(read_pairs(output, split, columns=["project"]).column("project").to_pylist()) == set(projects)


def test_held_out_projects_by_name_stay_put_when_projects_are_added(tmp_path, monkeypatch, capsys):
    from undertale.data.pairs import build as pairs_module

    def project(name: str, multiplier: int) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.c").write_text(f"int {name}(int x) {{ return x * {multiplier} + 1; }}\n")
        return tmp_path / name

    sources = [project(name, index + 2) for index, name in enumerate(("one", "two", "three", "four"))]
    held_out = {"validation": "two", "test": ["four", "three"]}
    output = tmp_path / "pairs"
    first = build_pairs(output, sources, levels=("O0",), compilers=("gcc",), workers=1, progress=False,
                        held_out=held_out)
    assert first["projects"] == {"train": ["one"], "validation": ["two"], "test": ["four", "three"]}
    assert first["arguments"]["held_out"] == {"validation": ["two"], "test": ["four", "three"]}
    assert set(read_pairs(output, "test", columns=["project"]).column("project").to_pylist()) == {"three", "four"}

    # more projects: every new one is training data; validation and test do not move
    more = sources + [project(name, index + 7) for index, name in enumerate(("five", "six", "seven"))]
    grown = build_pairs(output, more, levels=("O0",), compilers=("gcc",), workers=1, progress=False,
                        held_out=held_out)
    assert grown["projects"] == {"train": ["five", "one", "seven", "six"], "validation": ["two"],
                                 "test": ["four", "three"]}

    # another held-out choice on the same build re-splits without compiling
    monkeypatch.setattr(pairs_module, "_compile_all", lambda *a, **k: pytest.fail("nothing should be compiled again"))
    again = build_pairs(output, more, levels=("O0",), compilers=("gcc",), workers=1, progress=True,
                        held_out={"test": "one"})
    assert "splitting its functions anew (validation (none); test one)" in capsys.readouterr().out
    assert again["projects"]["test"] == ["one"] and again["projects"]["validation"] == []
    assert again["counts"]["functions"] == grown["counts"]["functions"]

    assert "split" not in again["arguments"] and "seed" not in again["arguments"], "a split by name uses neither"

    mistakes = [
        ({"test": "fourr"}, r"test project 'fourr' not among the sources' projects \(give names, not paths\): five, "),
        ({"validation": "two", "test": "two,three"}, r"project\(s\) two named for both validation and test"),
        ({"tests": "one"}, r"unexpected key\(s\): tests"),
        ({"test": " , "}, r"the test project names are empty"),
        ({}, r"the held-out project names are empty"),
        ("one", r"held_out must be a dict"),
    ]
    for held_out, message in mistakes:
        with pytest.raises(ValueError, match=message):
            build_pairs(output, more, levels=("O0",), compilers=("gcc",), progress=False, held_out=held_out)
    with pytest.raises(ValueError, match="give one or the other"):
        build_pairs(output, more, levels=("O0",), compilers=("gcc",), progress=False, split=(0.5, 0.25, 0.25),
                    held_out={"test": "one"})


def test_a_named_test_project_without_functions_is_warned_about(tmp_path, capsys):
    for name, text in (("good", "int good(int x) { return x * 3; }\n"), ("other", "int other(int x) { return x; }\n"),
                       ("broken", "int broken(int x) { return x + }\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.c").write_text(text)
    manifest = build_pairs(tmp_path / "pairs", [tmp_path / name for name in ("good", "other", "broken")],
                           levels=("O0",), compilers=("gcc",), workers=1, held_out={"test": "broken"})
    captured = capsys.readouterr()
    assert manifest["projects"]["test"] == [] and manifest["projects_without_functions"] == ["broken"]
    assert "warning: test project(s) broken yielded no functions" in captured.err
    assert "  test: no project (split by name: validation (none); test broken)" in captured.out


def test_cli_held_out_projects_and_split_exclude_each_other(built, tmp_path, capsys):
    _, sources, _, _ = built
    code = data_main(["pairs", str(tmp_path / "out"), *map(str, sources), "--compilers", "gcc", "--levels", "O0",
                      "--split", "0.5,0.25,0.25", "--test-projects", "beta"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "give one or the other" in error[0]
    code = data_main(["pairs", str(tmp_path / "out"), *map(str, sources), "--compilers", "gcc", "--levels", "O0",
                      "--test-projects", ""])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "the test project names are empty" in error[0], error
    code = data_main(["pairs", str(tmp_path / "out"), *map(str, sources), "--compilers", "gcc", "--levels", "O0",
                      "--validation-projects", "gamma", "--test-projects", "beta", "--workers", "1"])
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["projects"] == {"train": ["alpha"], "validation": ["gamma"], "test": ["beta"]}
