"""One sherpa-onnx decode in a fresh process: its time and its peak resident memory.

Long inputs are where memory runs out. In a child process the peak is the child's own (its VmHWM, not the parent's
pages), and an address-space limit (RLIMIT_AS) makes a runaway allocation fail there, reported as data, instead of
taking the machine down. Used by validate's long_audio check and by bench/long_audio.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np




@dataclass
class ChildDecode:
    ok: bool
    seconds: float = 0.0  # audio length
    text: str = ""
    load_seconds: float | None = None
    decode_seconds: float | None = None
    peak_rss_bytes: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def decode_in_child(model, audio: np.ndarray, sample_rate: int,
                    threads: int = 2, feature_dim: int = 80, provider: str = "cpu",
                    memory_limit_bytes: int | None = None, timeout: float = 7200, encoder_only: bool = False
                    ) -> ChildDecode:
    """Decode `audio` once with sherpa-onnx in a fresh process (or, encoder_only, run the encoder graph on random
    features of the same size with onnxruntime). Peak RSS: the child's own VmHWM. RLIMIT_AS: memory_limit_bytes."""
    seconds = len(audio) / float(sample_rate)
    with tempfile.TemporaryDirectory(prefix="nemo2sherpa-long-") as scratch:
        request = {"family": model.family.name, "graphs": {role: str(p) for role, p in model.graphs.items()},
                   "encoder": str(model.encoder), "tokens": str(model.tokens),
                   "audio": str(Path(scratch) / "audio.npy"), "sample_rate": sample_rate, "threads": threads,
                   "feature_dim": feature_dim, "provider": provider, "encoder_only": encoder_only,
                   "memory_limit_bytes": int(memory_limit_bytes) if memory_limit_bytes else None}
        np.save(request["audio"], np.ascontiguousarray(audio, dtype=np.float32))
        request_path, result_path = Path(scratch) / "request.json", Path(scratch) / "result.json"
        request_path.write_text(json.dumps(request))
        env = dict(os.environ)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")

        with open(Path(scratch) / "stderr.txt", "w+") as stderr:
            process = subprocess.Popen([sys.executable, "-m", __name__, str(request_path), str(result_path)],
                                       stdout=subprocess.DEVNULL, stderr=stderr, env=env)
            timer = threading.Timer(timeout, process.kill)
            timer.start()
            try:
                _, status, usage = os.wait4(process.pid, 0)
            finally:
                timer.cancel()
            process.returncode = os.waitstatus_to_exitcode(status)
            # wait4's ru_maxrss also counts what the child held between fork and exec (a copy of this process's
            # pages): only a fallback for when the child could not report its own high-water mark
            peak = int(usage.ru_maxrss) * 1024
            stderr.seek(0)
            log = stderr.read()
        if result_path.exists():
            result = ChildDecode(**json.loads(result_path.read_text()))
            result.peak_rss_bytes = result.peak_rss_bytes or peak
            return result
        tail = " ".join(log.strip().splitlines()[-3:])[-400:]
        killed = process.returncode in (-9, 137) or "MemoryError" in log or "bad_alloc" in log or \
            "Failed to allocate" in log
        why = "out of memory (address-space limit reached or killed)" if killed else \
            f"exited with code {process.returncode}"
        return ChildDecode(ok=False, seconds=seconds, peak_rss_bytes=peak, error=f"{why}: {tail}")


def _child(request: dict[str, Any]) -> ChildDecode:
    audio = np.load(request["audio"])
    seconds = len(audio) / float(request["sample_rate"])
    if request.get("encoder_only"):
        return _child_encoder_only(request, audio, seconds)
    from nemo2sherpa.validate.sherpa_runner import recognizer_for

    start = time.perf_counter()
    recognizer = recognizer_for(request["family"], request["graphs"], request["tokens"], provider=request["provider"],
                                threads=request["threads"], sample_rate=request["sample_rate"],
                                feature_dim=request["feature_dim"])
    load = time.perf_counter() - start
    start = time.perf_counter()
    stream = recognizer.create_stream()
    stream.accept_waveform(request["sample_rate"], audio)
    recognizer.decode_stream(stream)
    decode = time.perf_counter() - start
    return ChildDecode(ok=True, seconds=seconds, text=stream.result.text, load_seconds=round(load, 3),
                       decode_seconds=round(decode, 3))


def _child_encoder_only(request: dict[str, Any], audio: np.ndarray, seconds: float) -> ChildDecode:
    """The encoder graph alone on random features of the right length (benchmarks of random-weight models)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = int(request["threads"])
    options.inter_op_num_threads = 1
    start = time.perf_counter()
    session = ort.InferenceSession(request["encoder"], options, providers=["CPUExecutionProvider"])
    load = time.perf_counter() - start
    frames = round(seconds * 100)
    features = np.random.default_rng(0).standard_normal((1, int(request["feature_dim"]), frames)).astype(np.float32)
    names = [i.name for i in session.get_inputs()]
    start = time.perf_counter()
    out = session.run(None, {names[0]: features, names[1]: np.array([frames], dtype=np.int64)})
    decode = time.perf_counter() - start
    return ChildDecode(ok=True, seconds=seconds, load_seconds=round(load, 3), decode_seconds=round(decode, 3),
                       extra={"encoder_frames": int(np.asarray(out[1]).reshape(-1)[0])})


def _high_water_mark() -> int | None:
    """Peak resident memory of this process since its exec (VmHWM), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def main(argv: list[str]) -> None:
    request = json.loads(Path(argv[0]).read_text())
    if request.get("memory_limit_bytes"):  # before anything big is loaded: a runaway allocation fails here, alone
        import resource

        limit = int(request["memory_limit_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = _child(request)
    except Exception as exc:  # noqa: BLE001 - back to the parent as data
        result = ChildDecode(ok=False, error=f"{type(exc).__name__}: {str(exc)[:400]}")
    result.peak_rss_bytes = _high_water_mark()
    Path(argv[1]).write_text(json.dumps(asdict(result)))


if __name__ == "__main__":
    main(sys.argv[1:])
