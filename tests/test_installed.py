"""The installed command: a wheel built from this checkout, installed in a fresh virtual environment outside
the checkout, runs ``undertale`` with the configs shipped inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from helpers import BINARIES, ENVIRONMENT, ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv (seeing this interpreter's packages, so nothing is downloaded) with the wheel of this checkout."""
    root = tmp_path_factory.mktemp("installed")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    [wheel] = (root / "dist").glob("undertale-*.whl")
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return root


def undertale(installed: Path, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | ENVIRONMENT
    return subprocess.run([str(installed / "venv" / "bin" / "undertale"), *arguments], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.e2e
def test_the_installed_command_runs_outside_the_checkout(installed, cache, tmp_path):
    python = installed / "venv" / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import undertale.settings.store as s; print(s.__file__, s.CONF)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert all(str(installed / "venv") in path for path in where), where  # the wheel's package, not the checkout's
    assert (Path(where[1]) / "train.yaml").is_file() and (Path(where[1]) / "experiment" / "quickstart.yaml").is_file()

    usage = undertale(installed, "--help", cwd=tmp_path)
    assert usage.returncode == 0 and "train" in usage.stdout and "export" in usage.stdout
    wrong = undertale(installed, "trian", cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.strip() == wrong.stderr.strip().splitlines()[0]
    assert "did you mean train?" in wrong.stderr

    data = undertale(installed, "data", "--help", cwd=tmp_path)
    assert data.returncode == 0 and data.stdout.startswith("usage: undertale data")
    report = undertale(installed, "report", "--help", cwd=tmp_path)
    assert report.returncode == 0 and report.stdout.startswith("usage: undertale report")

    job = undertale(installed, "train", "model=small", "experiment=quickstart", "--cfg", "job", cwd=tmp_path)
    assert job.returncode == 0, job.stderr[-2000:]
    assert "hidden_dimensions: 512" in job.stdout and "undertale.models.maskedlm" in job.stdout
    typo = undertale(installed, "train", "model=tyni", cwd=tmp_path)
    assert typo.returncode == 2 and "did you mean tiny?" in typo.stderr

    run = tmp_path / "run"
    trained = undertale(installed, "train", "debug=smoke", f"paths.cache_dir={cache}",
                        f"data.paths=[{','.join(BINARIES)}]", "trainer.max_steps=3", f"hydra.run.dir={run}",
                        cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "train.log").is_file()
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())
