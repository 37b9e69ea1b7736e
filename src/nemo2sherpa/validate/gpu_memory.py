"""GPU memory while sherpa-onnx runs: the proof that a CUDA run used the GPU, and the figure users size GPUs by.

Read through NVML (NVIDIA's management library, via the nvidia-ml-py package, which the driver's libnvidia-ml backs)
from a background thread while the recognizer loads and decodes. Two readings, because containers differ: the
device's used memory above what it was before the recognizer existed (always available, but counts other
processes), and this process's own entry in NVML's list of compute processes (exact, but empty in some sandboxes that
hide process ids). No NVML (no driver, no nvidia-ml-py) is reported as such, never guessed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from typing import Any

SAMPLE_SECONDS = 0.01


@dataclass
class GpuMemory:
    available: bool
    reason: str | None = None
    device: str | None = None
    total_bytes: int | None = None
    baseline_used_bytes: int | None = None  # device memory in use before the recognizer was created
    peak_used_bytes: int | None = None  # highest device memory in use while it loaded and decoded
    peak_above_baseline_bytes: int | None = None
    process_peak_bytes: int | None = None  # this process's own use, when NVML lists it
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _device_index() -> int:
    """NVML numbers GPUs regardless of CUDA_VISIBLE_DEVICES; sherpa-onnx uses CUDA device 0, the first listed."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0


class GpuMemorySampler:
    """Context manager sampling device and process GPU memory every SAMPLE_SECONDS until it exits."""

    def __init__(self) -> None:
        self.result = GpuMemory(available=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = None
        self._handle = None

    def __enter__(self) -> "GpuMemorySampler":
        try:
            import pynvml  # nvidia-ml-py
        except ImportError:
            self.result.reason = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
            return self
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(_device_index())
            name = pynvml.nvmlDeviceGetName(self._handle)
            info = pynvml.nvmlDeviceGetMemoryInfo(self._handle)
        except Exception as exc:  # noqa: BLE001 - NVMLError, or a driver library that cannot load: a finding
            self.result.reason = f"NVML: {exc}"
            return self
        self._nvml = pynvml
        self.result = GpuMemory(available=True, device=name.decode() if isinstance(name, bytes) else str(name),
                                total_bytes=int(info.total), baseline_used_bytes=int(info.used),
                                peak_used_bytes=int(info.used))
        self._thread = threading.Thread(target=self._run, name="gpu-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        """One reading. Never raises: a failed reading must not fail the decode it watches."""
        try:
            self._read()
        except Exception:  # noqa: BLE001
            pass

    def _read(self) -> None:
        pynvml, result = self._nvml, self.result
        try:
            used = int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used)
        except pynvml.NVMLError:
            return
        result.samples += 1
        result.peak_used_bytes = max(result.peak_used_bytes or 0, used)
        try:
            processes = pynvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except pynvml.NVMLError:  # not supported where process ids are hidden
            return
        own = [p.usedGpuMemory for p in processes if p.pid == os.getpid() and p.usedGpuMemory is not None]
        if own:
            result.process_peak_bytes = max(result.process_peak_bytes or 0, int(own[0]))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def __exit__(self, *exc_info) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._sample()
        result = self.result
        result.peak_above_baseline_bytes = (result.peak_used_bytes or 0) - (result.baseline_used_bytes or 0)
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
