"""What a run was made with: git commit, package versions, hardware."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Optional

import torch

PACKAGES = ("undertale", "torch", "lightning", "hydra-core", "wandb", "tokenizers", "capstone", "pyarrow", "numpy")


def git_state(directory: Optional[Path] = None) -> dict:
    """Commit and dirty flag of the git checkout holding ``directory`` (empty when not a checkout)."""
    directory = directory or Path(__file__).resolve().parents[2]

    def git(*arguments: str) -> Optional[str]:
        try:
            result = subprocess.run(["git", *arguments], cwd=directory, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {}
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def hardware() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [],
    }
    return info


def environment() -> dict:
    """Git state, package versions and hardware, for the run's config and metadata."""
    return {"git": git_state(), "versions": package_versions(), "hardware": hardware()}
