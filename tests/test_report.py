"""The results report: tables and figures from real runs and sweeps (``python -m undertale.report``)."""

import csv
import itertools
import json
import shlex
import shutil
import statistics
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from undertale.report.__main__ import main

from helpers import run_script, small

PNG = b"\x89PNG\r\n\x1a\n"


def run_train(arguments: list[str]) -> None:
    run_script("train.py", *arguments)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("report")


@pytest.fixture(scope="module")
def sweep(cache, outputs) -> Path:
    """A real 2 x 2 sweep (masking probability x learning rate), 6 steps per job, in one train.py -m."""
    directory = outputs / "sweep"
    run_train(["-m", *small(cache, 6), "masking.probability=0.1,0.3", "optimizer.lr=1e-3,3e-3",
               f"hydra.sweep.dir={directory}"])
    return directory


@pytest.fixture(scope="module")
def scaling(cache, outputs) -> Path:
    """The scaling experiment, made small: tiny model, real DDP on CPU at 1 and 2 processes, 4 steps each,
    logged to CSV (the report's other history source)."""
    directory = outputs / "scaling"
    run_train(["-m", "experiment=scaling", "model=tiny", *small(cache, 4, logger="csv"), "trainer=ddp_cpu",
               "trainer.devices=1,2", f"hydra.sweep.dir={directory}"])
    return directory


@pytest.fixture(scope="module")
def sweep_report(sweep) -> str:
    """The report of the sweep, written into the sweep directory; its stdout."""
    from contextlib import redirect_stdout
    from io import StringIO

    printed = StringIO()
    with redirect_stdout(printed):
        assert main([str(sweep)]) == 0
    return printed.getvalue()


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of the first markdown table, header first (the separator line left out)."""
    lines = markdown.splitlines()
    first = next(index for index, line in enumerate(lines) if line.startswith("| "))
    block = itertools.takewhile(lambda line: line.startswith("|"), lines[first:])
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in block if not line.startswith("| ---")]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def copy_sweep(sweep: Path, destination: Path) -> Path:
    shutil.copytree(sweep, destination, ignore=shutil.ignore_patterns("checkpoints", "*.png", "results.*"))
    return destination


def check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG, path
    assert path.stat().st_size > 10_000, path
    height, width, _ = matplotlib.image.imread(path).shape
    assert width >= 800 and height >= 500, (path, width, height)


@pytest.mark.e2e
@pytest.mark.xdist_group("report")  # its module fixture is built once, on one worker
def test_sweep_report_has_a_row_per_job_the_swept_columns_and_figures(sweep, sweep_report):
    markdown = (sweep / "results.md").read_text()
    header, *rows = table_rows(markdown)
    assert len(rows) == 4
    assert header[0] == "job" and set(header[1:3]) == {"optimizer.lr", "masking.probability"}
    assert {"val/accuracy", "best val/accuracy", "val/loss", "best val/loss", "tokens/s", "steps", "wall time (s)",
            "world size", "status"} <= set(header)
    pairs = {(row[header.index("optimizer.lr")], row[header.index("masking.probability")]) for row in rows}
    assert pairs == {("0.001", "0.1"), ("0.001", "0.3"), ("0.003", "0.1"), ("0.003", "0.3")}
    assert {row[header.index("status")] for row in rows} == {"finished"}

    table = read_csv(sweep / "results.csv")
    assert len(table) == 4 and {row["job"] for row in table} == {"0", "1", "2", "3"}
    best = [float(row["best val/accuracy"]) for row in table]
    assert best == sorted(best, reverse=True), "best first"
    for row in table:
        metrics = json.loads((sweep / row["job"] / "metrics.json").read_text())
        assert float(row["val/accuracy"]) == pytest.approx(metrics["val/accuracy"])
        assert int(row["steps"]) == 6 and int(row["world size"]) == 1
        assert float(row["tokens/s"]) > 0

    for name in ("loss.png", "val_accuracy_vs_masking.probability.png", "val_accuracy_vs_optimizer.lr.png"):
        check_png(sweep / name)
        assert f"]({name})" in markdown

    [line] = sweep_report.splitlines()
    winner = table[0]
    assert f"best of 4 jobs by val/accuracy (max): {winner['job']} " in line
    assert f"; report: {sweep / 'results.md'}" in line
    command = line.split("reproduce: ", 1)[1].split("; report:", 1)[0]
    written = yaml.safe_load((sweep / winner["job"] / "overrides.yaml").read_text())
    assert shlex.split(command) == ["python", "train.py", *written]
    assert command == winner["command"] and f"```bash\n{command}\n```" in markdown


@pytest.mark.xdist_group("report")  # its module fixture is built once, on one worker
def test_failed_jobs_are_listed_last_not_fatal(sweep, tmp_path, capsys):
    copy = copy_sweep(sweep, tmp_path / "sweep")
    shutil.copytree(copy / "0", copy / "4")  # a job that raised inside fit, as train.py records it
    (copy / "4" / "metrics.json").write_text(json.dumps({
        "status": "failed", "error": "ValueError: the learning-rate schedule needs a length", "global_step": 0,
        "world_size": 1, "seconds": 3.5, "run_dir": str(copy / "4"),
    }))
    (copy / "5").mkdir()  # a job killed before it wrote anything
    assert main([str(copy), "--output", str(tmp_path / "report")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("best of 6 jobs (2 failed) by val/accuracy")
    rows = read_csv(tmp_path / "report" / "results.csv")
    assert [row["status"] for row in rows] == ["finished"] * 4 + ["failed"] * 2
    assert {row["job"]: row["error"] for row in rows[4:]} == {
        "4": "ValueError: the learning-rate schedule needs a length", "5": "no metrics.json (killed, or still running)"}
    markdown = (tmp_path / "report" / "results.md").read_text()
    assert "(2 failed)" in markdown and "| failed |" in markdown


@pytest.mark.e2e
@pytest.mark.xdist_group("report")  # its module fixture is built once, on one worker
def test_scaling_sweep_gives_throughput_and_efficiency_per_process_count(scaling, tmp_path, capsys):
    assert main([str(scaling)]) == 0
    assert "scaling: " in capsys.readouterr().out
    rows = read_csv(scaling / "scaling.csv")
    assert [int(row["processes"]) for row in rows] == [1, 2]
    measured = {}
    for job in ("0", "1"):
        metrics = json.loads((scaling / job / "metrics.json").read_text())
        logged = read_csv(scaling / job / "csv" / "metrics.csv")
        rates = [float(row["train/tokens_per_sec"]) for row in logged if row["train/tokens_per_sec"]]
        measured[metrics["world_size"]] = statistics.median(rates[1:] if len(rates) >= 3 else rates)
    assert set(measured) == {1, 2}
    assert float(rows[0]["tokens/s"]) == pytest.approx(measured[1])
    assert float(rows[1]["tokens/s"]) == pytest.approx(measured[2])
    assert float(rows[1]["efficiency"]) == pytest.approx(measured[2] / 2 / measured[1])
    assert float(rows[1]["speed-up"]) == pytest.approx(measured[2] / measured[1])
    assert float(rows[0]["efficiency"]) == pytest.approx(1.0)
    markdown = (scaling / "results.md").read_text()
    assert "## Scaling" in markdown and "trainer.devices" in table_rows(markdown)[0]
    for name in ("scaling_throughput.png", "scaling_efficiency.png"):
        check_png(scaling / name)
    config = yaml.safe_load((scaling / "1" / "config.yaml").read_text())
    assert config["task_name"] == "scaling" and config["trainer"]["strategy"] == "ddp"


@pytest.mark.xdist_group("report")  # its module fixture is built once, on one worker
def test_mixed_code_versions_are_refused_unless_allowed(sweep, tmp_path, capsys):
    copy = copy_sweep(sweep, tmp_path / "sweep")
    environment = json.loads((copy / "1" / "environment.json").read_text())
    original = environment["git"]["commit"]
    environment["git"] |= {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False}
    (copy / "1" / "environment.json").write_text(json.dumps(environment))

    assert main([str(copy)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "different code versions" in error
    assert original[:10] in error and "0123456789 (job 1)" in error and "--allow-mixed" in error
    assert not (copy / "results.md").exists()

    assert main([str(copy), "--allow-mixed"]) == 0
    header, *rows = table_rows((copy / "results.md").read_text())
    assert len(rows) == 4 and header[-1] == "code"


@pytest.mark.xdist_group("report")  # its module fixture is built once, on one worker
def test_single_run_and_several_directories(sweep, scaling, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(sweep / "2", run, ignore=shutil.ignore_patterns("checkpoints"))
    (run / "evaluation.json").write_text(json.dumps({"overall": {"accuracy": 0.61}, "classes": {
        "next": {"accuracy": 0.99}, "register": {"accuracy": 0.4}, "unk": {"accuracy": None}}}))
    (run / "similarity.json").write_text(json.dumps({"pool_sizes": [32, 1000], "comparisons": {"O0-O3 (gcc)": {
        "pairs": 64, "systems": {"model": {"32": {"mrr": 0.55, "recall@1": 0.4}, "1000": {"mrr": 0.2}}}}}}))
    assert main([str(run)]) == 0
    [row] = read_csv(run / "results.csv")
    written = yaml.safe_load((run / "overrides.yaml").read_text())
    assert [key.split("=")[0] for key in written] == list(row)[1:len(written) + 1], "a single run: its overrides"
    assert (row["eval/accuracy"], row["eval/accuracy/register"], row["MRR@32 O0-O3 (gcc)"]) == ("0.61", "0.4", "0.55")
    assert "eval/accuracy/unk" not in row

    assert main([str(sweep), str(scaling), "--output", str(tmp_path / "both")]) == 0
    assert "best of 6 jobs" in capsys.readouterr().out
    rows = read_csv(tmp_path / "both" / "results.csv")
    assert sorted(row["job"] for row in rows) == ["scaling/0", "scaling/1", "sweep/0", "sweep/1", "sweep/2", "sweep/3"]
    assert [row["job"] for row in rows[-2:]] == ["scaling/0", "scaling/1"], "no val/accuracy: after those with one"


@pytest.mark.e2e
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    result = run_script("-m", "undertale.report", str(tmp_path), check=False, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"error: no runs found in {tmp_path} (a run directory holds metrics.json and " \
                                    "config.yaml; a sweep directory holds one folder per job)"

    half = tmp_path / "half"
    half.mkdir()
    (half / "config.yaml").write_text("seed: 0\n")
    for arguments, message in (
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(half)], f"{half} has no metrics.json"),
    ):
        assert main(arguments) == 2
        error = capsys.readouterr().err
        assert len(error.strip().splitlines()) == 1 and message in error and "Traceback" not in error
    with pytest.raises(SystemExit) as stopped:
        main([str(half), "--mode", "best"])
    assert stopped.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
