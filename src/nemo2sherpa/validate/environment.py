"""The environment a validation ran in, for its report: platform, CPU, GPU and the versions that shape the figures."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from nemo2sherpa import __version__


def environment(providers: tuple[str, ...]) -> dict[str, Any]:
    """The machine and the versions a report's figures were measured with (the GPU only when CUDA was asked for)."""
    from importlib import metadata

    versions = {"nemo2sherpa": __version__, "python": platform.python_version()}
    for dist in ("sherpa-onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "nemo_toolkit", "torch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {"platform": platform.platform(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "gpu": gpu_info() if "cuda" in providers else None, "versions": versions}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> dict[str, str] | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not out:
        return None
    name, driver, memory = (part.strip() for part in (out[0].split(",") + ["", ""])[:3])
    return {"name": name, "driver": driver, "memory": memory}
