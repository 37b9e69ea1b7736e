"""scripts/setup.sh installs the PyTorch build that fits the machine: CPU-only on Linux without an NVIDIA GPU
(through PyTorch's CPU wheel index), the default build with one, and an importable torch is kept. The choice is
made by scripts/torch_choice.sh, run here against fake machines (a PATH with or without a working nvidia-smi)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "torch_choice.sh"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the CPU-only choice is made on Linux only")


def _choice(tmp_path: Path, python: str, nvidia_smi: str | None = None, **env: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("uname", "bash", "env"):
        target = bin_dir / tool
        if not target.exists():
            target.symlink_to(subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True,
                                             text=True).stdout.strip())
    if nvidia_smi is not None:
        fake = bin_dir / "nvidia-smi"
        fake.write_text(f"#!/bin/sh\n{nvidia_smi}\n")
        fake.chmod(0o755)
    environment = {"PATH": str(bin_dir), **env}
    return subprocess.run(["bash", str(SCRIPT), python], capture_output=True, text=True, env=environment)


def test_no_gpu_gets_the_cpu_build(tmp_path):
    done = _choice(tmp_path, "/nonexistent/python")  # no torch to keep, no nvidia-smi
    assert done.stdout.split()[:2] == ["torch", "--index-url"] and done.stdout.strip().endswith("/whl/cpu")
    mirror = _choice(tmp_path, "/nonexistent/python", TORCH_CPU_INDEX="https://mirror.example/cpu")
    assert mirror.stdout.strip() == "torch --index-url https://mirror.example/cpu"


def test_a_driver_without_a_gpu_is_no_gpu(tmp_path):
    done = _choice(tmp_path, "/nonexistent/python", nvidia_smi="echo 'No devices were found' >&2; exit 6")
    assert "/whl/cpu" in done.stdout


def test_a_gpu_gets_the_default_build(tmp_path):
    done = _choice(tmp_path, "/nonexistent/python", nvidia_smi="echo 'GPU 0: NVIDIA H100 80GB HBM3'")
    assert done.stdout.strip() == "torch"


def test_an_installed_torch_is_kept_and_a_choice_can_be_forced(tmp_path):
    assert _choice(tmp_path, sys.executable).stdout.strip() == "keep"  # the test environment has torch
    forced = _choice(tmp_path, sys.executable, NEMO2SHERPA_TORCH="cpu")
    assert "/whl/cpu" in forced.stdout
    wrong = _choice(tmp_path, sys.executable, NEMO2SHERPA_TORCH="rocm")
    assert wrong.returncode == 2 and "cpu, cuda or keep" in wrong.stderr
    assert os.access(SCRIPT, os.X_OK)
