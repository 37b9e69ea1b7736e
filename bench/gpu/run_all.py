"""The device side of a GPU run: every measurement through the real CLI, in order of importance, within a budget.

Runs where the payload of bench/gpu/payload.py has been unpacked (`--work`): regenerates the architectures' weights
(bench/gpu/seeded_weights.py) and checks their hashes against the dry run's, then calls `nemo2sherpa validate` once
per step. Each step's report directory is appended to OUT/reports.tar and its figures to OUT/results.json as soon as
it ends, so a run cut short by the machine's time limit still returns everything it finished; a step that would
not fit into what is left of `--budget` is recorded as skipped, never half-run.

The same script is the dry run on a CPU machine (`--providers cpu`): steps meant for CUDA then run on the CPU, so
every command line, path and parser is exercised before the GPU's minutes are spent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seeded_weights import restore  # noqa: E402

FIXTURE = "fixture"
FIXTURES = (FIXTURE, "streaming-fixture")  # trained models, converted and referenced on the CPU side (work/models)
SPEED_LENGTHS = "2,5,10,30,60,120"


@dataclass(frozen=True)
class Step:
    """One `nemo2sherpa validate` call. `providers`: "both" (cpu and cuda) or "gpu" (cuda only; cpu in a dry run)."""

    name: str
    model: str  # a directory under work/models (the fixture) or work/restored (architectures)
    providers: str
    estimate: float  # seconds on the GPU machine, to decide whether it still fits
    args: tuple[str, ...] = ()
    speed_clips: bool = True  # architectures: the short speed dataset, not the fixture's test set

    def command(self, work: Path, providers: list[str], threads: int, lengths: str, report: Path) -> list[str]:
        chosen = providers if self.providers == "both" else (["cuda"] if "cuda" in providers else providers)
        model = work / ("models" if self.model in FIXTURES else "restored") / self.model
        command = [sys.executable, "-m", "nemo2sherpa", "validate", str(model), "--provider", ",".join(chosen),
                   "--threads", str(threads), "--no-nemo", "--report-dir", str(report)]
        if self.model not in FIXTURES and self.speed_clips:
            command += ["--dataset", str(work / "audio" / "dataset.jsonl"), "--no-long-audio"]
        args = [lengths if a == "{lengths}" else a for a in self.args]
        if "--speed-lengths" not in args:
            command += ["--speed-lengths", lengths]
        return command + args


def steps(long_lengths: str) -> list[Step]:
    """In order of importance: what the issue's acceptance rests on first."""
    return [
        Step("fixture-fp32", FIXTURE, "both", 40),
        Step("tdt-0.6b-v3", "tdt-0.6b-v3", "both", 60),
        Step("tdt-1.1b", "tdt-1.1b", "both", 100),
        Step("tdt_ctc-110m", "tdt_ctc-110m", "both", 30),
        Step("fixture-fp16", FIXTURE, "both", 30, ("--precision", "fp16", "--no-long-audio")),
        Step("fixture-int8", FIXTURE, "both", 30, ("--precision", "int8", "--no-long-audio")),
        Step("tdt-0.6b-v3-fp16", "tdt-0.6b-v3", "gpu", 70, ("--precision", "fp16", "--speed-lengths", "2,30,120")),
        Step("tdt-0.6b-v3-plain", "tdt-0.6b-v3-plain", "gpu", 30),
        # int8 (block-wise, MatMulNBits: a CUDA kernel for every node) against the dynamic int8 it replaced
        Step("tdt-0.6b-v3-int8", "tdt-0.6b-v3", "both", 60, ("--precision", "int8", "--speed-lengths", "2,30")),
        Step("tdt-0.6b-v3-int8-dynamic", "tdt-0.6b-v3", "both", 60,
             ("--precision", "int8-dynamic", "--speed-lengths", "2,30")),
        Step("tdt-0.6b-v3-long", "tdt-0.6b-v3", "gpu", 60,
             ("--speed-lengths", long_lengths, "--repeats", "1")),
        # streaming: the trained fixture's online directory (transcripts, latency), nemotron's at 560 ms chunks
        Step("streaming-fixture", "streaming-fixture", "both", 30, ("--no-long-audio",)),
        Step("nemotron-streaming", "nemotron-streaming", "both", 60, ("--speed-lengths", "2,30")),
    ]


@dataclass
class Results:
    out: Path
    data: dict = field(default_factory=lambda: {"environment": {}, "restore": {}, "steps": {}})

    def save(self) -> None:
        temporary = self.out / "results.json.tmp"
        temporary.write_text(json.dumps(self.data, indent=1))
        os.replace(temporary, self.out / "results.json")

    def archive(self, directory: Path, name: str) -> None:
        with tarfile.open(self.out / "reports.tar", "a") as archive:
            archive.add(directory, arcname=name)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _command_output(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment() -> dict:
    from importlib import metadata

    info: dict = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    versions = {}
    for dist in ("sherpa-onnx", "sherpa-onnx-core", "onnxruntime-gpu", "onnxruntime", "onnx", "numpy",
                 "nvidia-ml-py", "nvidia-cudnn-cu13", "nvidia-cublas", "torch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    info["versions"] = versions
    # the forwarding library that routes sherpa-onnx to onnxruntime-gpu is compiled on first use
    info["c_compiler"] = shutil.which("cc") or shutil.which("gcc")
    gpu = _command_output(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                           "--format=csv,noheader"])
    info["gpu"] = gpu
    header = _command_output(["nvidia-smi"])
    if header:
        info["cuda_driver_api"] = next((part.split(":", 1)[1].strip().split()[0] for part in header.split("|")
                                        if "CUDA Version" in part), None)
    return info


SMOKE = r"""
import json, sys
import numpy as np
import onnx
import onnxruntime as ort
ort.preload_dlls()
from onnx import helper, TensorProto
graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "smoke",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [64, 64]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [64, 64])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [64, 64])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
session = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
a = np.random.default_rng(0).standard_normal((64, 64), dtype=np.float32)
c = session.run(None, {"a": a, "b": a})[0]
print(json.dumps({"onnxruntime": ort.__version__, "available": ort.get_available_providers(),
                  "session": session.get_providers(), "max_abs_diff": float(np.abs(c - a @ a).max())}))
"""


def nvidia_library_dirs() -> list[str]:
    """Every lib/ folder of NVIDIA's pip packages on this interpreter's path (for LD_LIBRARY_PATH, as a last resort)."""
    found = []
    for entry in sys.path:
        for lib in sorted(Path(entry or ".").glob("nvidia/*/lib")):
            found.append(str(lib))
    return found


def smoke_test() -> dict:
    """A CUDA session of a 64x64 MatMul through the onnxruntime that validate will use. If NVIDIA's libraries are not
    found the way onnxruntime-gpu looks for them, retry with them on LD_LIBRARY_PATH and keep that for the run."""
    attempts = []
    for extra in (None, nvidia_library_dirs()):
        env = dict(os.environ)
        if extra:
            env["LD_LIBRARY_PATH"] = ":".join(extra + [env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        done = subprocess.run([sys.executable, "-c", SMOKE], capture_output=True, text=True, env=env, timeout=300)
        line = (done.stdout.strip().splitlines() or [""])[-1]
        result = {"returncode": done.returncode, "stderr": done.stderr[-2000:],
                  "ld_library_path": bool(extra)}
        try:
            result.update(json.loads(line))
        except json.JSONDecodeError:
            result["stdout"] = done.stdout[-1000:]
        attempts.append(result)
        if "CUDAExecutionProvider" in result.get("session", []):
            if extra:
                os.environ["LD_LIBRARY_PATH"] = env["LD_LIBRARY_PATH"]
            break
        if extra is None and not nvidia_library_dirs():
            break
    return {"attempts": attempts, "cuda": "CUDAExecutionProvider" in attempts[-1].get("session", [])}


def restore_models(work: Path, expected: dict | None) -> dict:
    summary: dict = {}
    for stripped in sorted((work / "models").iterdir()):
        if not (stripped / "seeded.json").is_file():
            continue
        target = work / "restored" / stripped.name
        if target.exists():
            shutil.rmtree(target)
        hashes = restore(stripped, target)
        seconds = hashes.pop("seconds")
        entry = {"seconds": seconds, "bytes": sum(p.stat().st_size for p in target.iterdir()), "sha256": hashes}
        if expected and stripped.name in expected:
            entry["same_as_dry_run"] = expected[stripped.name] == hashes
        summary[stripped.name] = entry
        log(f"restored {stripped.name}: {entry['bytes'] / 1e9:.2f} GB in {seconds:.1f} s"
            + (f", identical to the dry run: {entry['same_as_dry_run']}" if "same_as_dry_run" in entry else ""))
    return summary


def digest(report: dict) -> dict:
    """The figures of one validation report that the benchmark tables need."""
    checks = report.get("checks", {})
    return {
        "passed": report.get("passed"),
        "variant": report.get("variant"),
        "status": {name: check.get("status") for name, check in checks.items()},
        "problems": {name: check.get("problems") for name, check in checks.items() if check.get("problems")},
        "providers": checks.get("providers"),
        "speed": checks.get("speed"),
        "transcripts": {k: v for k, v in checks.get("transcripts", {}).items() if k != "utterances"},
        "precision": checks.get("precision"),
        "long_audio": checks.get("long_audio"),
        "streaming": checks.get("streaming"),
        "environment": report.get("environment"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="the unpacked payload (models, cache, audio)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--providers", default="cpu,cuda")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--lengths", default=SPEED_LENGTHS)
    parser.add_argument("--long-lengths", default="450,1200")
    parser.add_argument("--budget", type=float, default=520, help="seconds for everything; later steps are skipped")
    parser.add_argument("--only", default=None, help="comma-separated step names")
    parser.add_argument("--expected-hashes", type=Path, default=None)
    parser.add_argument("--write-hashes", type=Path, default=None, help="dry run: where to write the hashes")
    args = parser.parse_args(argv)
    started = time.monotonic()
    providers = args.providers.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args.out)
    os.environ["NEMO2SHERPA_CACHE"] = str(args.work / "cache")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    results.data["environment"] = environment()
    results.data["settings"] = {"providers": providers, "threads": args.threads, "lengths": args.lengths,
                                "long_lengths": args.long_lengths, "budget": args.budget}
    log(f"environment: {json.dumps(results.data['environment'])}")
    if "cuda" in providers:
        results.data["smoke"] = smoke_test()
        log(f"CUDA smoke test: {json.dumps(results.data['smoke'])[:1500]}")
    results.save()

    expected = json.loads(args.expected_hashes.read_text()) if args.expected_hashes and \
        args.expected_hashes.is_file() else None
    results.data["restore"] = restore_models(args.work, expected)
    results.save()
    if args.write_hashes:
        args.write_hashes.write_text(json.dumps({name: entry["sha256"] for name, entry in
                                                 results.data["restore"].items()}, indent=1))

    wanted = set(args.only.split(",")) if args.only else None
    for step in steps(args.long_lengths):
        if wanted is not None and step.name not in wanted:
            continue
        left = args.budget - (time.monotonic() - started)
        if step.estimate > left:
            results.data["steps"][step.name] = {"skipped": f"{left:.0f} s left, about {step.estimate:.0f} s needed"}
            log(f"skip {step.name}: {left:.0f} s left")
            results.save()
            continue
        report = args.work / "reports" / step.name  # $OUT returns a few files: reports go into one tar
        command = step.command(args.work, providers, args.threads, args.lengths, report)
        log(f"step {step.name}: {' '.join(command[1:])}")
        begin = time.monotonic()
        try:
            done = subprocess.run(command, timeout=max(10.0, left), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
            output, code = done.stdout, done.returncode
        except subprocess.TimeoutExpired as exc:
            output, code = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), None
        seconds = round(time.monotonic() - begin, 1)
        print(output, flush=True)
        entry: dict = {"exit_code": code, "seconds": seconds, "command": command[3:]}
        report_file = report / "report.json"
        if report_file.is_file():
            entry.update(digest(json.loads(report_file.read_text())))
            results.archive(report, step.name)
        results.data["steps"][step.name] = entry
        results.save()
        log(f"step {step.name}: exit {code} in {seconds} s")
    log(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
