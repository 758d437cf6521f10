"""Function embeddings (embed.py) and function search across optimisation levels (the similarity benchmark)."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from undertale.data.pairs.build import build_pairs
from undertale.evaluation import similarity
from undertale.evaluation.similarity import HYBRID, Hybrid, Setting, benchmark
from undertale.metrics.retrieval import ranks, search_scores
from undertale.metrics.tfidf import TfIdf

from helpers import app_in_process, one_line_error, run_script

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

PROGRAM = """
int add_scaled(int a, int b, int k) { return a + b * k; }
int sum_array(const int *values, int count) { int total = 0; for (int i = 0; i < count; i++) total += values[i]; return total; }
int clamp(int x, int low, int high) { if (x < low) return low; if (x > high) return high; return x; }
unsigned hash_string(const char *s) { unsigned h = 5381; while (*s) h = h * 33 + (unsigned char)*s++; return h; }
int count_bits(unsigned x) { int n = 0; while (x) { n += x & 1; x >>= 1; } return n; }
long fibonacci(int n) { long a = 0, b = 1; for (int i = 0; i < n; i++) { long t = a + b; a = b; b = t; } return a; }
int max_of(const int *v, int n) { int m = v[0]; for (int i = 1; i < n; i++) if (v[i] > m) m = v[i]; return m; }
void reverse(int *v, int n) { for (int i = 0, j = n - 1; i < j; i++, j--) { int t = v[i]; v[i] = v[j]; v[j] = t; } }
"""


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    (root / "toolkit").mkdir()
    (root / "toolkit" / "toolkit.c").write_text(PROGRAM)
    output = root / "pairs"
    build_pairs(output, [root / "toolkit"], levels=("O0", "O2"), compilers=("gcc",), progress=False)
    return output


def test_ranks_identical_pairs_score_one_and_shuffled_pairs_score_chance():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3200, 16))
    pools = similarity.pools(len(vectors), 32, seed=0)
    assert len(pools) == 100 and all(len(pool) == 32 for pool in pools)
    identical = search_scores(vectors, vectors, pools)
    assert identical["mrr"] == 1.0 and identical["recall@1"] == 1.0
    shuffled = search_scores(vectors, vectors[rng.permutation(len(vectors))], pools)
    chance = sum(1 / rank for rank in range(1, 33)) / 32  # a partner at a uniformly random rank of 32
    assert abs(shuffled["mrr"] - chance) < 0.03 and shuffled["recall@1"] < 0.07
    assert ranks(np.eye(3), np.eye(3)).tolist() == [1, 1, 1]
    assert ranks(np.eye(3), np.ones((3, 3))).tolist() == [3, 3, 3], "ties count against the query"


def test_identical_binaries_give_mrr_one_and_o0_o2_is_harder(pairs, trained_run):
    from undertale.data.pairs.build import read_pairs
    from undertale.inference.embedding import FunctionEncoder

    rows = read_pairs(pairs, "train").to_pylist()
    same = [row | {"compiler": "copy"} for row in rows if row["level"] == "O2"]
    model = FunctionEncoder.from_run(trained_run)
    systems = {"model": model.embed, "tf-idf": TfIdf([row["disassembly"] for row in rows]).vectors}
    comparisons = [(Setting("gcc", "O2"), Setting("copy", "O2")), (Setting("gcc", "O0"), Setting("gcc", "O2"))]
    results = benchmark(rows + same, systems, pool_sizes=[4], comparisons=comparisons, min_instructions=3)
    identical, across = results["comparisons"]["gcc-copy (-O2)"], results["comparisons"]["O0-O2 (gcc)"]
    assert identical["pairs"] >= 6 and across["pairs"] >= 6
    assert identical["identical"] == identical["pairs"] and across["identical"] < across["pairs"]
    for system in systems:
        assert identical["systems"][system]["4"]["mrr"] == 1.0, system
        assert 0 < across["systems"][system]["4"]["mrr"] <= 1.0
    shown = similarity.table(results)
    assert "gcc-copy (-O2)" in shown and " 100%  model" in shown


def test_benchmark_embeds_each_distinct_function_once_and_scores_each_comparison_as_directly(pairs):
    from undertale.data.pairs.build import read_pairs

    rows = read_pairs(pairs, "train").to_pylist()
    rows += [row | {"compiler": "copy"} for row in rows if row["level"] == "O2"]  # texts shared by comparisons
    tfidf, calls = TfIdf([row["disassembly"] for row in rows]), []

    def counting(texts):
        calls.append(list(texts))
        return tfidf.vectors(texts)

    comparisons = [(Setting("gcc", "O0"), Setting("gcc", "O2")), (Setting("gcc", "O2"), Setting("copy", "O2"))]
    results = benchmark(rows, {"tf-idf": counting}, pool_sizes=[4], comparisons=comparisons, min_instructions=3)
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0]))
    for pair_set in similarity.pair_sets(rows, comparisons, min_instructions=3):
        direct = search_scores(tfidf.vectors(pair_set.queries), tfidf.vectors(pair_set.partners),
                               similarity.pools(len(pair_set.groups), 4, seed=0))
        assert results["comparisons"][pair_set.name]["systems"]["tf-idf"]["4"] == direct, pair_set.name


def test_hybrid_scores_the_mean_of_the_encoder_and_tfidf_cosines(pairs):
    from undertale.data.pairs.build import read_pairs

    rows = read_pairs(pairs, "train").to_pylist()
    texts = sorted({row["disassembly"] for row in rows})
    dense = np.random.default_rng(0).normal(size=(len(texts), 8))
    sparse = TfIdf(texts).vectors(texts)
    joined = similarity.hybrid_vectors(dense, sparse)

    def cosines(matrix):
        matrix = matrix.toarray() if hasattr(matrix, "toarray") else matrix
        unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        return unit @ unit.T

    assert np.allclose((joined @ joined.T).toarray(), (cosines(dense) + cosines(sparse)) / 2)
    assert np.allclose(np.sqrt(joined.multiply(joined).sum(axis=1)), 1)
    with pytest.raises(ValueError, match="3 dense rows against"):
        similarity.hybrid_vectors(dense[:3], sparse)

    # In the benchmark: the hybrid's scores are those of the joined vectors, and its parts come first.
    by_text = dict(zip(texts, dense))
    systems = {"dense": lambda batch: np.stack([by_text[text] for text in batch]),
               "tf-idf": TfIdf(texts).vectors, "both": Hybrid("dense", "tf-idf")}
    comparisons = [(Setting("gcc", "O0"), Setting("gcc", "O2"))]
    results = benchmark(rows, systems, pool_sizes=[4], comparisons=comparisons, min_instructions=3)
    [pair_set] = similarity.pair_sets(rows, comparisons, min_instructions=3)
    direct = search_scores(similarity.hybrid_vectors(systems["dense"](pair_set.queries),
                                                     TfIdf(texts).vectors(pair_set.queries)),
                           similarity.hybrid_vectors(systems["dense"](pair_set.partners),
                                                     TfIdf(texts).vectors(pair_set.partners)),
                           similarity.pools(len(pair_set.groups), 4, 0))
    assert results["comparisons"][pair_set.name]["systems"]["both"]["4"] == direct
    with pytest.raises(ValueError, match="list it after the systems it joins"):
        benchmark(rows, {"both": systems["both"], "dense": systems["dense"], "tf-idf": systems["tf-idf"]},
                  pool_sizes=[4], comparisons=comparisons)


def embed_here(*arguments: str) -> int:
    """``python embed.py <arguments>``'s work in this process; its exit code."""
    from undertale.inference.embed_command import embed_command

    return app_in_process("embed", embed_command, *arguments)


def test_embed_returns_the_program_functions_with_finite_vectors(trained_run, tmp_path, capsys):
    source, program = tmp_path / "toolkit.c", tmp_path / "toolkit.o"
    source.write_text(PROGRAM)
    subprocess.run(["gcc", "-O1", "-c", str(source), "-o", str(program)], check=True)
    output = tmp_path / "vectors.parquet"
    assert embed_here(f"run={trained_run}", f"binaries=[{program}]", f"output={output}") == 0
    stdout = capsys.readouterr().out
    table = pq.read_table(output).to_pydict()
    assert {"add_scaled", "sum_array", "clamp", "hash_string", "fibonacci"} <= set(table["name"])
    vectors = np.array(table["vector"], dtype=np.float32)
    assert vectors.shape == (len(table["name"]), 256) and np.isfinite(vectors).all()  # windows=all+first
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert "embed:" in stdout and str(output) in stdout and "windows=all+first" in stdout
    assert "(mean pooling" in stdout                                   # a pretraining run: mean by default


def test_long_functions_are_embedded_by_windows(trained_run):
    from undertale.inference.embedding import FunctionEncoder

    encoder = FunctionEncoder.from_run(trained_run, windows="all")
    long_text = " [NEXT] ".join(["mov rax rbx", "add rax 1", "push rbp", "pop rbp"] * 40)
    assert len(encoder.windows(long_text)) > 1
    [vector] = encoder.embed([long_text])
    assert vector.shape == (128,) and np.isfinite(vector).all()
    first = FunctionEncoder.from_run(trained_run, pooling="first", windows="all").embed(["push rbp [NEXT] ret"])
    assert not np.allclose(first, encoder.embed(["push rbp [NEXT] ret"]))


def test_windows_all_first_scores_the_mean_of_the_whole_and_entry_cosines(trained_run):
    from undertale.inference.embedding import FunctionEncoder

    body = " [NEXT] ".join(["mov rax rbx", "add rax 1", "push rbp", "pop rbp"] * 60)
    tail = " [NEXT] ".join(["xor eax eax", "imul rax rcx", "ret"] * 30)
    short = "push rbp [NEXT] mov rbp rsp [NEXT] pop rbp [NEXT] ret"
    texts = [body, f"{body} [NEXT] {tail}", short]
    encoders = {windows: FunctionEncoder.from_run(trained_run, windows=windows)
                for windows in ("all", "first", "all+first")}
    assert len(encoders["all"].windows(texts[1])) > len(encoders["all"].windows(texts[0])) > 1
    vectors = {windows: encoder.embed(texts) for windows, encoder in encoders.items()}
    assert vectors["all"].shape == vectors["first"].shape == (3, 128) and vectors["all+first"].shape == (3, 256)

    def cosine(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert np.allclose(vectors["first"][0], vectors["first"][1], atol=1e-5)      # a longer tail: the same entry
    assert not np.allclose(vectors["all"][0], vectors["all"][1], atol=1e-3)      # ... and another whole function
    assert np.allclose(vectors["first"][2], vectors["all"][2], atol=1e-5)        # one window: entry = whole
    for i, j in ((0, 1), (0, 2), (1, 2)):
        mean = (cosine(vectors["all"][i], vectors["all"][j]) + cosine(vectors["first"][i], vectors["first"][j])) / 2
        assert float(vectors["all+first"][i] @ vectors["all+first"][j]) == pytest.approx(mean, abs=1e-5)
    assert np.allclose(np.linalg.norm(vectors["all+first"], axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="windows must be one of all, first, all\\+first, got 'last'"):
        FunctionEncoder.from_run(trained_run, windows="last")


def test_similarity_command_writes_table_and_json(pairs, trained_copy, capsys):
    trained_run = trained_copy  # the command writes into the run
    cfg = OmegaConf.create({"run": str(trained_run), "pairs": str(pairs), "split": "train", "pools": [4],
                            "min_instructions": 3, "seed": 0,
                            "logger": {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger", "name": "csv",
                                               "version": ""}}})
    assert similarity.main(cfg) == 0
    printed = capsys.readouterr().out
    assert "O0-O2 (gcc)" in printed and "tf-idf" in printed and "untrained" in printed
    saved = json.loads((trained_run / "similarity.json").read_text())
    systems = saved["comparisons"]["O0-O2 (gcc)"]["systems"]
    assert list(systems) == ["model", "untrained", "tf-idf", HYBRID]
    assert all(0 < scores["4"]["mrr"] <= 1 for scores in systems.values())
    assert saved["windows"] == "all+first" and "windows=all+first" in printed
    assert f"{HYBRID}: the mean of the model's and TF-IDF's cosines" in printed
    # the row joins the run's own model (not the untrained encoder) with TF-IDF, on the same pools
    from undertale.data.pairs.build import read_pairs
    from undertale.inference.embedding import FunctionEncoder

    rows = read_pairs(pairs, "train").to_pylist()
    expected = benchmark(rows, {"model": FunctionEncoder.from_run(trained_run).embed,
                                "tf-idf": TfIdf([row["disassembly"] for row in rows]).vectors,
                                "joined": Hybrid("model", "tf-idf")}, pool_sizes=[4], min_instructions=3)
    assert systems[HYBRID] == expected["comparisons"]["O0-O2 (gcc)"]["systems"]["joined"]
    logged = (trained_run / "similarity" / "csv" / "metrics.csv").read_text()  # the logger group's run
    assert "similarity/O0-O2_gcc/model/mrr@4" in logged
    assert similarity.metric_key("gcc-clang (-O2)") == "gcc-clang_-O2"


@pytest.mark.parametrize("arguments, message", [
    (["run=/no/such/run", "output=x.parquet", "binaries=[/usr/bin/true]"], "run directory /no/such/run does not exist"),
    (["output=x.parquet", "binaries=[/usr/bin/true]"], "run=<run directory> is required"),
    (["output=x.parquet", "binaries=[/usr/bin/true]", "windows=last", "run={run}"],
     "windows must be one of all, first, all+first, got 'last'"),
    (["output=x.parquet", "binaries=[/usr/bin/true]", "pooling=max", "run={run}"],
     "pooling must be one of mean, first, mean+max, got 'max'"),
])
def test_embed_bad_input_is_one_line(arguments, message, trained_run, capsys):
    arguments = [argument.format(run=trained_run) for argument in arguments]
    assert embed_here(*arguments) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1


@pytest.mark.e2e
def test_embed_bad_input_is_one_line_and_exit_code_2_from_the_command(trained_run):
    result = run_script("embed.py", f"run={trained_run}", "output=x.parquet", "binaries=[/usr/bin/true]", "pooling=max",
                        check=False, timeout=120)
    assert "pooling must be one of mean, first, mean+max, got 'max'" in one_line_error(result)


def test_similarity_bad_input_is_one_line(pairs, trained_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [({"run": "/no/such/run", "pairs": str(tmp_path / "empty")}, "error:"),
             ({"run": str(trained_run), "pairs": str(tmp_path / "empty")}, "error:"),
             ({"run": str(trained_run)}, "pairs=<pairs directory> is required"),
             ({"run": str(trained_run), "pairs": str(pairs), "windows": "last"}, "windows must be one of")]
    for values, message in cases:
        assert similarity.main(OmegaConf.create(values | {"logger": {}})) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_default_comparisons_are_levels_against_o3_and_compilers_at_each_level():
    rows = [{"compiler": compiler, "level": level} for compiler in ("gcc", "clang") for level in ("O0", "O1", "O2", "O3")]
    comparisons = [(str(left), str(right)) for left, right in similarity.default_comparisons(rows)]
    assert comparisons[:3] == [("clang -O0", "clang -O3"), ("clang -O1", "clang -O3"), ("clang -O2", "clang -O3")]
    assert ("gcc -O0", "gcc -O3") in comparisons and ("clang -O2", "gcc -O2") in comparisons
    assert len(comparisons) == 3 + 3 + 4
