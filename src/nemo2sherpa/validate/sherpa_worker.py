"""Run sherpa-onnx in a child process: transcribe clips and time decodes for one provider.

Why a child process: sherpa-onnx calls exit() on some model errors (a joiner of the wrong width), which must fail a
check, not kill validate; the onnxruntime it loads is fixed at import time, so CPU and CUDA runs (possibly through
a different onnxruntime) each need a fresh interpreter; and its C++ log lines (the silent CUDA fallback) can only be
captured at the file-descriptor level of a process that owns them.

Client side: run_sherpa(). Child side: `python -m nemo2sherpa.validate.sherpa_worker REQUEST.json RESULT.json`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nemo2sherpa.validate.audio import Clip


@dataclass
class SherpaRequest:
    family: str  # families.FAMILIES key
    graphs: dict[str, str]  # role -> file
    tokens: str
    provider: str = "cpu"
    threads: int = 2
    sample_rate: int = 16000
    feature_dim: int = 80
    transcribe: list[str] = field(default_factory=list)  # clip names to transcribe once each
    speed: list[str] = field(default_factory=list)  # clip names to time
    repeats: int = 3
    warmup: int = 1
    runtime_library: str | None = None  # route sherpa-onnx through this onnxruntime instead of its bundled one
    audio: str = ""  # npz with one array per clip name

    @classmethod
    def for_model(cls, model, **settings: Any) -> "SherpaRequest":
        """A request for a validate.model_dir.ModelDir's files."""
        return cls(family=model.family.name, graphs={role: str(path) for role, path in model.graphs.items()},
                   tokens=str(model.tokens), **settings)


@dataclass
class SherpaRun:
    provider: str
    ok: bool
    error: str | None = None
    fallback_to_cpu: bool = False
    log: str = ""
    runtime: dict[str, Any] = field(default_factory=dict)
    load_seconds: float | None = None
    transcripts: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, list[float]] = field(default_factory=dict)
    peak_rss_bytes: int | None = None  # the decoding process's peak resident memory (load and every decode)
    gpu_memory: dict[str, Any] = field(default_factory=dict)  # GpuMemory.to_dict() of a CUDA run

    def median(self, name: str) -> float | None:
        values = self.timings.get(name)
        return statistics.median(values) if values else None


def run_sherpa(request: SherpaRequest, clips: dict[str, Clip], timeout: float = 3600) -> SherpaRun:
    """Run the child and return what it measured; a crash or exit() of sherpa-onnx becomes ok=False with its log."""
    with tempfile.TemporaryDirectory(prefix="nemo2sherpa-sherpa-") as scratch:
        audio = Path(scratch) / "clips.npz"
        np.savez(audio, **{name: clip.audio for name, clip in clips.items()})
        request.audio = str(audio)
        request_path, result_path = Path(scratch) / "request.json", Path(scratch) / "result.json"
        request_path.write_text(json.dumps(asdict(request)))
        env = dict(os.environ)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            done = subprocess.run([sys.executable, "-m", __name__, str(request_path), str(result_path)],
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return SherpaRun(provider=request.provider, ok=False,
                             error=f"sherpa-onnx did not finish in {timeout:.0f} s")
        if result_path.exists():
            data = json.loads(result_path.read_text())
            return SherpaRun(**data)
        tail = " ".join((done.stderr or "").strip().splitlines()[-3:])
        return SherpaRun(provider=request.provider, ok=False, log=done.stderr,
                         error=f"sherpa-onnx exited with code {done.returncode}: {tail[-400:]}")


def _child(request: SherpaRequest) -> SherpaRun:
    from nemo2sherpa.validate import ort_runtime
    from nemo2sherpa.validate.gpu_memory import GpuMemorySampler

    run = SherpaRun(provider=request.provider, ok=False)
    if request.provider == "cuda":
        with GpuMemorySampler() as sampler:
            _decode_all(request, run, ort_runtime)
        run.gpu_memory = sampler.result.to_dict()
    else:
        _decode_all(request, run, ort_runtime)
    run.peak_rss_bytes = _peak_rss_bytes()
    run.ok = True
    return run


def _peak_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux


def _decode_all(request: SherpaRequest, run: SherpaRun, ort_runtime) -> None:
    """Load the recognizer and run every transcription and timing asked for, filling `run`."""
    from nemo2sherpa.validate.sherpa_runner import recognizer_for

    if request.runtime_library:
        info = ort_runtime.sherpa_runtime_info()
        shim = ort_runtime.build_shim(Path(request.runtime_library), info.required_symbol_version)
        ort_runtime.preload_runtime(shim)
        run.runtime["routed_through"] = request.runtime_library
        if request.provider == "cuda":
            problem = ort_runtime.preload_cuda_libraries()  # NVIDIA's pip CUDA/cuDNN libraries, if installed
            if problem:
                run.runtime["preload_cuda_libraries"] = problem
    with ort_runtime.captured_fd_stderr() as captured:
        start = time.perf_counter()
        recognizer = recognizer_for(request.family, request.graphs, request.tokens, provider=request.provider,
                                    threads=request.threads, sample_rate=request.sample_rate,
                                    feature_dim=request.feature_dim)
        run.load_seconds = round(time.perf_counter() - start, 3)
    run.log = captured.text
    run.fallback_to_cpu = request.provider != "cpu" and ort_runtime.fallback_detected(captured.text)
    run.runtime.update(ort_runtime.loaded_runtime_summary())

    with np.load(request.audio) as data:
        audio = {name: data[name] for name in data.files}

    def decode(samples: np.ndarray):
        stream = recognizer.create_stream()
        stream.accept_waveform(request.sample_rate, samples)
        recognizer.decode_stream(stream)
        return stream.result

    for name in request.transcribe:
        result = decode(audio[name])
        run.transcripts[name] = {"text": result.text, "tokens": list(result.tokens),
                                 "timestamps": [round(t, 3) for t in result.timestamps]}
    for name in request.speed:
        for _ in range(request.warmup):
            decode(audio[name])
        times = []
        for _ in range(request.repeats):
            start = time.perf_counter()
            decode(audio[name])
            times.append(round(time.perf_counter() - start, 5))
        run.timings[name] = times
    # onnxruntime maps its CUDA provider library only when a CUDA session is created: checked after the decodes
    run.runtime.update(ort_runtime.provider_evidence())


def main(argv: list[str]) -> None:
    request = SherpaRequest(**json.loads(Path(argv[0]).read_text()))
    try:
        run = _child(request)
    except Exception as exc:  # noqa: BLE001 - everything goes back to the parent as data
        run = SherpaRun(provider=request.provider, ok=False, error=f"{type(exc).__name__}: {exc}")
    Path(argv[1]).write_text(json.dumps(asdict(run)))


if __name__ == "__main__":
    main(sys.argv[1:])
