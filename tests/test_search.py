"""Function search (index.py, search.py): real binaries of this machine indexed with the session's trained run."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import app_in_process, exit_code, one_line_error, run_script
from undertale.search.diff import diff
from undertale.search.index import build_index, index_command
from undertale.search.query import agreement, build_faiss, exact_topk, faiss_available, faiss_topk, query
from undertale.search.store import SearchIndex

SMALL, OTHER = "/usr/bin/true", "/usr/bin/ls"

pytestmark = pytest.mark.xdist_group("search")


@pytest.fixture(scope="module")
def search_index(trained_run, tmp_path_factory):
    """An index of /usr/bin/true, /usr/bin/ls appended to it, and a stripped copy of true in the same folder."""
    root = tmp_path_factory.mktemp("search")
    index = root / "index"
    assert build_index([SMALL], str(trained_run), str(index), progress=False) == 0
    first = SearchIndex.open(index)
    assert build_index([OTHER], str(trained_run), str(index), progress=False) == 0
    stripped = root / "true.stripped"
    subprocess.run(["strip", "-o", str(stripped), SMALL], check=True)
    return {"root": root, "index": index, "first_count": first.count, "stripped": stripped, "run": trained_run}


def test_index_holds_unit_vectors_and_the_model(search_index):
    index = SearchIndex.open(search_index["index"])
    vectors = index.vectors()
    assert isinstance(vectors, np.memmap) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    table = index.table()
    assert {"binary", "name", "address", "size"} <= set(table.column_names) and len(table) == index.count
    assert [entry["path"] for entry in index.binaries] == [SMALL, OTHER]
    assert index.count > search_index["first_count"] > 0  # appending grew the index
    assert len(index.model["hash"]) == 64 and index.model["path"] == str(search_index["run"].resolve())


def test_readding_a_binary_skips_it(search_index, capsys):
    before = SearchIndex.open(search_index["index"]).count
    assert build_index([SMALL], str(search_index["run"]), str(search_index["index"]), progress=False) == 0
    assert SearchIndex.open(search_index["index"]).count == before
    assert "already indexed" in capsys.readouterr().err


def test_query_by_name_and_address_finds_itself_first(search_index):
    index = SearchIndex.open(search_index["index"])
    table = index.table(["binary", "name", "address"]).to_pylist()
    row = next(row for row in table if row["binary"] == OTHER and not row["name"].startswith("sub_"))
    for spec in (f"{OTHER}:{row['name']}", f"ls:0x{row['address']:x}"):
        result = query(index, spec, k=5)
        best = result["results"][0]["matches"][0]
        assert (best["name"], best["address"]) == (row["name"], row["address"])
        assert best["score"] == pytest.approx(1.0, abs=1e-4)
        assert len(result["results"][0]["matches"]) == 5
    whole = query(index, SMALL, k=1)  # a whole binary: every function its own best match
    assert len(whole["results"]) == index.binaries[0]["functions"]
    hybrid = query(index, f"{OTHER}:{row['name']}", k=3, scoring="model+tf-idf")
    assert hybrid["results"][0]["matches"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_diff_with_itself_matches_every_function_to_itself(search_index):
    result = diff(SearchIndex.open(search_index["index"]), OTHER, OTHER)
    assert result["summary"]["matched"] == result["functions_a"]
    assert result["summary"]["changed"] == 0 and not result["unmatched_a"] and not result["unmatched_b"]
    assert all(entry["a"] == entry["b"] for entry in result["matched"])


def test_a_stripped_copy_indexes_and_matches_by_content(search_index, tmp_path):
    stripped = search_index["stripped"]
    index = tmp_path / "stripped.index"
    assert build_index([str(stripped)], str(search_index["run"]), str(index), progress=False) == 0
    names = SearchIndex.open(index).table(["name"]).column("name").to_pylist()
    assert names and all(name.startswith("sub_") for name in names)  # from .eh_frame
    # the stripped file is not in the main index: embedded on the fly with the index's model
    result = diff(SearchIndex.open(search_index["index"]), SMALL, str(stripped), threshold=0.8)
    same_address = sum(entry["a"]["address"] == entry["b"]["address"] for entry in result["matched"])
    assert same_address >= 0.8 * min(result["functions_a"], result["functions_b"])
    output = tmp_path / "diff.json"
    assert app_in_process("search", _search, f"index={search_index['index']}", f"diff=[{SMALL},{stripped}]",
                          f"output={output}") == 0
    assert json.loads(output.read_text())["summary"]["matched"] == result["summary"]["matched"]


def _search(cfg):
    from undertale.search.command import search_command

    return search_command(cfg)


def test_bad_inputs_are_one_line_errors(search_index, tmp_path, capsys):
    index = search_index["index"]
    not_elf = tmp_path / "notes.txt"
    not_elf.write_text("hello\n")
    cases = [
        (_search, [f"index={index}", f"query={OTHER}:no_such_functoin"], "closest:"),
        (_search, [f"index={index}", f"query={not_elf}"], "not an ELF file"),
        (_search, [f"index={tmp_path}", f"query={OTHER}"], "is not a search index"),
    ]
    for function, arguments, expected in cases:
        config = "search" if function is _search else "index"
        assert exit_code(lambda: app_in_process(config, lambda cfg: _exit(function(cfg)), *arguments)) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], (arguments, errors)
    # index.py's model= is also a config group of train.py's store (registered in this process): called directly
    config = OmegaConf.create({"binaries": [str(not_elf)], "model": str(search_index["run"]),
                               "output": str(tmp_path / "new")})
    assert index_command(config) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not an ELF file" in errors[0]
    assert not (tmp_path / "new").exists()


def _exit(code):
    raise SystemExit(code)


def test_another_model_is_refused_and_nothing_written(search_index, tmp_path):
    import torch

    other = shutil.copytree(search_index["run"], tmp_path / "other")
    checkpoint = other / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    key = next(key for key in state["state_dict"] if key.endswith("weight"))
    state["state_dict"][key] = state["state_dict"][key] + 1
    torch.save(state, checkpoint)
    for extra in other.glob("checkpoints/best-*.ckpt"):
        extra.unlink()
    before = {path.name: path.stat().st_mtime_ns for path in search_index["index"].iterdir()}
    result = run_script("index.py", f"binaries=[{search_index['stripped']}]", f"model={other}",
                        f"output={search_index['index']}", check=False)
    line = one_line_error(result)
    assert str(other) in line and str(search_index["run"].resolve()) in line
    assert {path.name: path.stat().st_mtime_ns for path in search_index["index"].iterdir()} == before


def test_search_command_line(search_index):
    result = run_script("search.py", f"index={search_index['index']}", f"query={SMALL}:no_such", check=False)
    assert "closest:" in one_line_error(result)
    result = run_script("search.py", f"index={search_index['index']}", f"diff={OTHER},{OTHER}", "show=3")
    assert "matched" in result.stdout and "unmatched in ls 0" in result.stdout


def test_exact_topk_is_blocked_and_exact():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5000, 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    scores, indices = exact_topk(vectors, queries, 10, block=333)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert (indices == expected).all()
    assert np.allclose(scores, np.take_along_axis(queries @ vectors.T, expected, axis=1), atol=1e-5)


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed (pip install faiss-cpu)")
def test_faiss_agrees_with_exact_search():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((200, 64)).astype(np.float32)
    vectors = centres[rng.integers(0, 200, 20_000)] + 0.5 * rng.standard_normal((20_000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(20_000, 100, replace=False)] + 0.05 * rng.standard_normal((100, 64)).astype(np.float32)
    _, exact = exact_topk(vectors, queries, 10)
    _, approximate = faiss_topk(build_faiss(vectors), queries, 10, nprobe=64)
    assert agreement(exact, approximate) >= 0.95
