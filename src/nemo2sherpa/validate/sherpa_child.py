"""Run sherpa-onnx in a fresh child process: transcribe clips, time decodes, measure peak memory, for one provider.

Why a child process:
- sherpa-onnx calls exit() on some model errors (a joiner of the wrong width), which must fail a check, not kill
  validate;
- the onnxruntime it loads is fixed at import time, so CPU and CUDA runs (possibly through a different onnxruntime)
  each need a fresh interpreter;
- its C++ log lines (the silent CUDA fallback) can only be captured at the file-descriptor level of a process that
  owns them;
- long inputs are where memory runs out: in a child the peak is the child's own (its VmHWM, not the parent's pages),
  and an address-space limit (RLIMIT_AS) makes a runaway allocation fail there, reported as data, instead of taking
  the machine down.

Parent side: run_sherpa() for a SherpaRequest (validate's transcripts, speed and precision checks), decode_in_child()
for one waveform (the long-input check, bench/long_audio.py). Child side:
`python -m nemo2sherpa.validate.sherpa_child REQUEST.json RESULT.json`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nemo2sherpa.validate.audio import Clip

PROGRESS_EVERY_SECONDS = 5.0


@dataclass
class SherpaRequest:
    family: str  # families.FAMILIES key
    graphs: dict[str, str]  # role -> file
    tokens: str
    encoder: str = ""  # the graph holding the encoder (encoder_only runs it alone)
    provider: str = "cpu"
    threads: int = 2
    sample_rate: int = 16000
    feature_dim: int = 80
    transcribe: list[str] = field(default_factory=list)  # clip names to transcribe once each
    speed: list[str] = field(default_factory=list)  # clip names to time
    repeats: int = 3
    warmup: int = 1
    runtime_library: str | None = None  # route sherpa-onnx through this onnxruntime instead of its bundled one
    memory_limit_bytes: int | None = None  # the child's address-space limit
    encoder_only: bool = False  # run the encoder graph on random features instead (random-weight benchmarks)
    with_front_end_option: bool = False  # with the family's front-end option set (sherpa_front_end.FrontEndOption)
    audio: str = ""  # npz with one array per clip name
    progress: str = ""  # a file the child appends one JSON line to after each decode (read by the parent)

    @classmethod
    def for_model(cls, model, **settings: Any) -> "SherpaRequest":
        """A request for a validate.model_dir.ModelDir's files."""
        return cls(family=model.family.name, graphs={role: str(path) for role, path in model.graphs.items()},
                   tokens=str(model.tokens), encoder=str(model.encoder), **settings)


@dataclass
class SherpaRun:
    provider: str
    ok: bool
    error: str | None = None
    fallback_to_cpu: bool = False
    log: str = ""
    runtime: dict[str, Any] = field(default_factory=dict)
    load_seconds: float | None = None
    transcripts: dict[str, dict[str, Any]] = field(default_factory=dict)  # text, tokens, timestamps, decode_seconds
    timings: dict[str, list[float]] = field(default_factory=dict)
    peak_rss_bytes: int | None = None  # the decoding process's peak resident memory (load and every decode)
    gpu_memory: dict[str, Any] = field(default_factory=dict)  # GpuMemory.to_dict() of a CUDA run
    extra: dict[str, Any] = field(default_factory=dict)

    def median(self, name: str) -> float | None:
        values = self.timings.get(name)
        return statistics.median(values) if values else None


def run_sherpa(request: SherpaRequest, clips: dict[str, Clip | np.ndarray], timeout: float = 3600,
               on_progress: Callable[[dict[str, Any]], None] | None = None) -> SherpaRun:
    """Run the child and return what it measured; a crash, an exit() of sherpa-onnx, the memory limit or the timeout
    becomes ok=False with the reason. `on_progress` gets each decode's progress line as the child writes it."""
    with tempfile.TemporaryDirectory(prefix="nemo2sherpa-sherpa-") as scratch:
        audio = Path(scratch) / "clips.npz"
        np.savez(audio, **{name: getattr(clip, "audio", clip) for name, clip in clips.items()})
        request.audio = str(audio)
        request.progress = str(Path(scratch) / "progress.jsonl")
        request_path, result_path = Path(scratch) / "request.json", Path(scratch) / "result.json"
        request_path.write_text(json.dumps(asdict(request)))
        env = dict(os.environ)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        with open(Path(scratch) / "stderr.txt", "w+") as stderr:
            process = subprocess.Popen([sys.executable, "-m", __name__, str(request_path), str(result_path)],
                                       stdout=subprocess.DEVNULL, stderr=stderr, env=env)
            status, usage, timed_out = _wait(process, timeout, Path(request.progress), on_progress)
            process.returncode = os.waitstatus_to_exitcode(status)
            stderr.seek(0)
            log = stderr.read()
        if timed_out:
            return SherpaRun(provider=request.provider, ok=False, log=log,
                             error=f"sherpa-onnx did not finish in {timeout:.0f} s")
        if result_path.exists():
            return SherpaRun(**json.loads(result_path.read_text()))
    # wait4's ru_maxrss also counts what the child held between fork and exec (a copy of this process's pages):
    # only a fallback for when the child could not report its own high-water mark
    tail = " ".join(log.strip().splitlines()[-3:])[-400:]
    killed = process.returncode in (-9, 137) or any(s in log for s in ("MemoryError", "bad_alloc",
                                                                       "Failed to allocate"))
    why = "out of memory (address-space limit reached or killed)" if killed else \
        f"sherpa-onnx exited with code {process.returncode}"
    return SherpaRun(provider=request.provider, ok=False, log=log, peak_rss_bytes=int(usage.ru_maxrss) * 1024,
                     error=f"{why}: {tail}")


def _wait(process: subprocess.Popen, timeout: float, progress_file: Path,
          on_progress: Callable[[dict[str, Any]], None] | None) -> tuple[int, Any, bool]:
    """Wait for the child (its exit status and resource usage), relaying its progress lines; kill it at the
    timeout."""
    deadline = time.monotonic() + timeout
    offset = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if on_progress is not None and progress_file.exists():
            with open(progress_file, encoding="utf-8") as lines:
                lines.seek(offset)
                for line in lines:
                    if line.endswith("\n"):
                        on_progress(json.loads(line))
                offset = lines.tell()
        if pid:
            return status, usage, False
        if time.monotonic() > deadline:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            return status, usage, True
        time.sleep(0.2)


@dataclass
class ChildDecode:
    """One waveform decoded in a child: what the long-input check and its benchmark report."""

    ok: bool
    seconds: float = 0.0  # audio length
    text: str = ""
    load_seconds: float | None = None
    decode_seconds: float | None = None
    peak_rss_bytes: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def decode_in_child(model, audio: np.ndarray, sample_rate: int, threads: int = 2, feature_dim: int = 80,
                    provider: str = "cpu", memory_limit_bytes: int | None = None, timeout: float = 7200,
                    encoder_only: bool = False, runtime_library: str | None = None) -> ChildDecode:
    """Decode `audio` once with sherpa-onnx in a fresh process (or, encoder_only, run the encoder graph on random
    features of the same size with onnxruntime). Peak RSS: the child's own VmHWM. RLIMIT_AS: memory_limit_bytes."""
    seconds = len(audio) / float(sample_rate)
    request = SherpaRequest.for_model(model, provider=provider, threads=threads, sample_rate=sample_rate,
                                      feature_dim=feature_dim, transcribe=["input"], runtime_library=runtime_library,
                                      memory_limit_bytes=int(memory_limit_bytes) if memory_limit_bytes else None,
                                      encoder_only=encoder_only)
    run = run_sherpa(request, {"input": np.ascontiguousarray(audio, dtype=np.float32)}, timeout=timeout)
    decoded = run.transcripts.get("input", {})
    return ChildDecode(ok=run.ok, seconds=seconds, text=decoded.get("text", ""), load_seconds=run.load_seconds,
                       decode_seconds=decoded.get("decode_seconds"), peak_rss_bytes=run.peak_rss_bytes,
                       error=run.error, extra=run.extra)


def run_on_providers(model, clips: list[Clip], buckets: dict[str, Clip], providers: tuple[str, ...], *, threads: int,
                     repeats: int, sample_rate: int, feature_dim: int, cuda_limit_seconds: float = math.inf,
                     progress=None, with_front_end_option: bool = False) -> dict[str, SherpaRun]:
    """One child per provider: every clip transcribed, every bucket timed (on CUDA only the buckets a full-attention
    encoder can run there), sherpa-onnx routed through onnxruntime-gpu where its own onnxruntime has no CUDA.
    `with_front_end_option`: with the family's front-end option set."""
    from nemo2sherpa.validate.ort_runtime import runtime_for

    audio = {**{c.name: c for c in clips}, **buckets}
    runs = {}
    for provider in providers:
        library, reason = runtime_for(provider)
        if reason:
            runs[provider] = SherpaRun(provider=provider, ok=False, error=reason)
            continue
        timed = [name for name, clip in buckets.items() if provider != "cuda" or clip.seconds <= cuda_limit_seconds]
        request = SherpaRequest.for_model(
            model, provider=provider, threads=threads, sample_rate=sample_rate, feature_dim=feature_dim,
            transcribe=[c.name for c in clips], speed=timed, repeats=repeats, runtime_library=library,
            with_front_end_option=with_front_end_option)
        option = f" with {model.family.front_end_option.python}" if with_front_end_option else ""
        what = f"{model.family.runtime} on {provider}{option}: {len(clips)} clips" + \
            (f", {len(timed)} speed buckets x {repeats}" if timed else "")
        if progress is None:
            runs[provider] = run_sherpa(request, audio)
        else:
            with progress.stage(what):
                runs[provider] = run_sherpa(request, audio, on_progress=progress_relay(progress))
    return runs


def progress_relay(progress) -> Callable[[dict[str, Any]], None]:
    """Turn the child's progress lines into lines on the terminal, at most one every few seconds, with the time
    left estimated from the audio decoded since the first line (the decodes differ in length, so counts alone would
    mislead; the model's load time is left out)."""
    first: dict[str, float] = {}
    last = [0.0]

    def relay(line: dict[str, Any]) -> None:
        now = time.monotonic()
        if not first:
            first.update(time=now, seconds=line["audio_seconds_done"])
        finished = line["done"] == line["total"]
        if now - last[0] < PROGRESS_EVERY_SECONDS and not finished:
            return
        last[0] = now
        rate = (line["audio_seconds_done"] - first["seconds"]) / max(now - first["time"], 1e-9)
        remaining = line["audio_seconds_total"] - line["audio_seconds_done"]
        left = f", about {remaining / rate:.0f} s left" if rate > 0 and not finished else ""
        progress.note(f"   {line['done']}/{line['total']} decodes ({line['what']} {line['clip']}), "
                      f"{line['audio_seconds_done']:.0f} of {line['audio_seconds_total']:.0f} s of audio{left}")

    return relay


# ------------------------------------------------------------------------------------------------ child side

def _child(request: SherpaRequest) -> SherpaRun:
    from nemo2sherpa.validate import ort_runtime
    from nemo2sherpa.validate.gpu_memory import GpuMemorySampler

    run = SherpaRun(provider=request.provider, ok=False)
    if request.encoder_only:
        _encoder_only(request, run)
    elif request.provider == "cuda":
        with GpuMemorySampler() as sampler:
            _decode_all(request, run, ort_runtime)
        run.gpu_memory = sampler.result.to_dict()
    else:
        _decode_all(request, run, ort_runtime)
    run.ok = True
    return run


def _high_water_mark() -> int | None:
    """Peak resident memory of this process since its exec (VmHWM), in bytes; getrusage where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux


def _decode_all(request: SherpaRequest, run: SherpaRun, ort_runtime) -> None:
    """Load the recognizer and run every transcription and timing asked for, filling `run`."""
    from nemo2sherpa.validate.sherpa_runner import recognizer_for, transcribe

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
                                    feature_dim=request.feature_dim,
                                    with_front_end_option=request.with_front_end_option)
        run.load_seconds = round(time.perf_counter() - start, 3)
    run.log = captured.text
    run.fallback_to_cpu = request.provider != "cpu" and ort_runtime.fallback_detected(captured.text)
    run.runtime.update(ort_runtime.loaded_runtime_summary())

    with np.load(request.audio) as data:
        audio = {name: data[name] for name in data.files}

    report = _progress_writer(request, audio)

    def decode(samples: np.ndarray):
        return transcribe(recognizer, samples, request.sample_rate)

    for name in request.transcribe:
        start = time.perf_counter()
        result = decode(audio[name])
        run.transcripts[name] = {"text": result.text, "tokens": list(result.tokens),
                                 "timestamps": [round(t, 3) for t in result.timestamps],
                                 "decode_seconds": round(time.perf_counter() - start, 3)}
        if getattr(recognizer, "latency", None):  # a streaming recognizer times its steps and tokens
            run.transcripts[name]["latency"] = dict(recognizer.latency)
        report(name, "transcribed")
    for name in request.speed:
        for _ in range(request.warmup):
            decode(audio[name])
            report(name, "warm-up")
        times = []
        for _ in range(request.repeats):
            start = time.perf_counter()
            decode(audio[name])
            times.append(round(time.perf_counter() - start, 5))
            report(name, "timed")
        run.timings[name] = times
    # onnxruntime maps its CUDA provider library only when a CUDA session is created: checked after the decodes
    run.runtime.update(ort_runtime.provider_evidence())


def _progress_writer(request: SherpaRequest, audio: dict[str, np.ndarray]) -> Callable[[str, str], None]:
    """report(clip, what) after each decode: how many of all the decodes asked for are done, and how much audio."""
    plan = [request.transcribe, *[[name] * (request.warmup + request.repeats) for name in request.speed]]
    total = sum(len(names) for names in plan)
    total_seconds = sum(audio[name].size for names in plan for name in names) / request.sample_rate
    done = {"decodes": 0, "seconds": 0.0}

    def report(name: str, what: str) -> None:
        done["decodes"] += 1
        done["seconds"] += audio[name].size / request.sample_rate
        if not request.progress:
            return
        line = {"done": done["decodes"], "total": total, "clip": name, "what": what,
                "audio_seconds_done": round(done["seconds"], 2), "audio_seconds_total": round(total_seconds, 2)}
        with open(request.progress, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(line) + "\n")

    return report


def _encoder_only(request: SherpaRequest, run: SherpaRun) -> None:
    """The encoder graph alone on random features of each clip's length (benchmarks of random-weight models, whose
    transcripts mean nothing)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = int(request.threads)
    options.inter_op_num_threads = 1
    start = time.perf_counter()
    session = ort.InferenceSession(request.encoder, options, providers=["CPUExecutionProvider"])
    run.load_seconds = round(time.perf_counter() - start, 3)
    names = [i.name for i in session.get_inputs()]
    with np.load(request.audio) as data:
        lengths = {name: data[name].size for name in data.files}
    for name in request.transcribe:
        frames = round(lengths[name] / request.sample_rate * 100)
        features = np.random.default_rng(0).standard_normal((1, int(request.feature_dim), frames)).astype(np.float32)
        start = time.perf_counter()
        out = session.run(None, {names[0]: features, names[1]: np.array([frames], dtype=np.int64)})
        run.transcripts[name] = {"text": "", "decode_seconds": round(time.perf_counter() - start, 3)}
        run.extra["encoder_frames"] = int(np.asarray(out[1]).reshape(-1)[0])


def main(argv: list[str]) -> None:
    request = SherpaRequest(**json.loads(Path(argv[0]).read_text()))
    if request.memory_limit_bytes:  # before anything big is loaded: a runaway allocation fails here, alone
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (request.memory_limit_bytes, request.memory_limit_bytes))
    try:
        run = _child(request)
    except Exception as exc:  # noqa: BLE001 - everything goes back to the parent as data
        run = SherpaRun(provider=request.provider, ok=False, error=f"{type(exc).__name__}: {str(exc)[:400]}")
    run.peak_rss_bytes = _high_water_mark()
    Path(argv[1]).write_text(json.dumps(asdict(run)))


if __name__ == "__main__":
    main(sys.argv[1:])
