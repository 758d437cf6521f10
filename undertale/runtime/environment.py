"""What a run or a benchmark was made with: git commit, package versions, hardware, the card's peak."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Optional

import torch

PACKAGES = ("undertale", "torch", "lightning", "hydra-core", "wandb", "tokenizers", "capstone", "pyarrow", "numpy")


def git_state(directory: Optional[Path] = None) -> dict:
    """Commit and dirty flag of the git checkout holding ``directory`` (empty when not a checkout)."""
    directory = directory or Path(__file__).resolve().parents[1]

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


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> str:
    """One line naming the machine for benchmark output: CPU, cores, memory, GPUs."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = ""
    gpus = hardware()["gpus"]
    return f"{cpu_name()}, {os.cpu_count()} cores{memory}" + (f", GPU: {', '.join(gpus)}" if gpus else ", no GPU")


def hardware() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [],
    }
    return info


def environment() -> dict:
    """Git state, package versions and hardware, for the run's config and metadata."""
    return {"git": git_state(), "versions": package_versions(), "hardware": hardware()}


# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) of common training GPUs. Matched against the
# device name in order, so the more specific names (H100 PCIe, H100 NVL) come before the plain one.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A10G", 125.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
)


def peak_bf16_flops(device_name: str) -> Optional[float]:
    """The card's dense bf16 spec peak in FLOP/s, or None for a card not in ``PEAK_BF16_TFLOPS``."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops * 1e12
    return None


def resolve_precision(precision: Optional[str], accelerator: str) -> str:
    """``bf16-mixed`` on CUDA GPUs that support it, ``32-true`` elsewhere, unless set."""
    if precision is not None:
        return str(precision)
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def resolve_compile(setting: Any, accelerator: str) -> bool:
    """``compile=auto``: on when training on a CUDA GPU."""
    if setting == "auto":
        return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return bool(setting)
