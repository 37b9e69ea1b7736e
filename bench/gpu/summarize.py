"""Turn a GPU run's results.json (bench/gpu/run_all.py) into the tables of docs/benchmarks.md, figures untouched.

    python bench/gpu/summarize.py RESULTS.json > section.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ARCHITECTURES = (("tdt_ctc-110m", "parakeet-tdt_ctc-110m"), ("tdt-0.6b-v3", "parakeet-tdt-0.6b-v3"),
                 ("tdt-1.1b", "parakeet-tdt-1.1b"))


def _s(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _gb(value: Any) -> str:
    return "-" if value is None else f"{value / 1e9:.2f} GB"


def device_lines(data: dict) -> list[str]:
    env, settings = data["environment"], data.get("settings", {})
    versions = env.get("versions", {})
    gpu = (env.get("gpu") or "no GPU").split(", ")
    gpu_text = f"{gpu[0]} ({gpu[2]}, compute capability {gpu[3]}), driver {gpu[1]}" if len(gpu) >= 4 else gpu[0]
    smoke = (data.get("smoke") or {}).get("attempts", [{}])[-1]
    return [
        f"- GPU: {gpu_text}; CUDA {env.get('cuda_driver_api') or '-'} (driver API)",
        f"- CPU: {env.get('cpu')}, {env.get('cores')} cores; Python {env.get('python')}",
        f"- sherpa-onnx {versions.get('sherpa-onnx', '-')} routed through onnxruntime-gpu "
        f"{versions.get('onnxruntime-gpu', '-')} (CUDA provider {'started' if smoke.get('session') else '-'}, "
        f"NVIDIA libraries {'on LD_LIBRARY_PATH' if smoke.get('ld_library_path') else 'found by onnxruntime'}); "
        f"cuDNN {versions.get('nvidia-cudnn-cu13', '-')}, cuBLAS {versions.get('nvidia-cublas', '-')}",
        f"- {settings.get('threads')} CPU threads for both providers; medians of 3 decodes after one warm-up",
    ]


def speed_table(step: dict) -> list[str]:
    speed = step.get("speed") or {}
    rows = ["| audio | CPU | CUDA | CUDA speed-up | CPU RTFx | CUDA RTFx |", "|---:|---:|---:|---:|---:|---:|"]
    for bucket in speed.get("buckets", []):
        cpu, cuda = bucket.get("cpu", {}), bucket.get("cuda", {})
        rows.append(f"| {bucket['seconds']:g} s | {_s(cpu.get('decode_seconds'))} s | "
                    f"{_s(cuda.get('decode_seconds'))} s | {_s(bucket.get('cuda_speedup'), 2)}x | "
                    f"{_s(cpu.get('rtfx'), 0)} | {_s(cuda.get('rtfx'), 0)} |")
    loads = speed.get("load_seconds", {})
    rss = speed.get("peak_rss_bytes", {})
    gpu = speed.get("gpu_peak_bytes", {})
    rows += ["", f"Load: CPU {_s(loads.get('cpu'), 2)} s, CUDA {_s(loads.get('cuda'), 2)} s. Break-even "
                 f"{_s(speed.get('break_even_seconds'), 1)} s; recommended: CUDA from "
                 f"{_s(speed.get('recommended_gpu_min_seconds'), 0)} s. Peak host memory: CPU {_gb(rss.get('cpu'))}, "
                 f"CUDA {_gb(rss.get('cuda'))}; GPU memory {_gb(gpu.get('cuda'))}."]
    return rows


def main(argv: list[str]) -> int:
    data = json.loads(Path(argv[0]).read_text())
    steps = data["steps"]
    out = ["### Device", ""] + device_lines(data) + [""]
    fixture = steps.get("fixture-fp32", {})
    providers = fixture.get("providers") or {}
    out += ["### The trained fixture, CPU against CUDA", "",
            f"`validate --provider cpu,cuda`: {'PASSED' if fixture.get('passed') else 'FAILED'}; checks: "
            + ", ".join(f"{k} {v}" for k, v in (fixture.get("status") or {}).items()) + ".",
            f"CPU and CUDA transcripts identical on {_s((providers.get('cpu_cuda_exact_match_rate') or 0) * 100, 0)}%"
            f" of utterances; CUDA evidence: {json.dumps((providers.get('cuda') or {}).get('evidence'))}", ""]
    for name, recipe in ARCHITECTURES:
        step = steps.get(name, {})
        if step.get("speed"):
            out += [f"### {recipe} (random weights)", ""] + speed_table(step) + [""]
    for name in ("fixture-fp16", "fixture-int8", "tdt-0.6b-v3-fp16", "tdt-0.6b-v3-int8", "tdt-0.6b-v3-int8-dynamic"):
        precision = (steps.get(name) or {}).get("precision")
        if precision:
            out += [f"### {name}", "", "```json", json.dumps({k: precision.get("details", precision).get(k) for k in
                                                              ("transcripts", "speed", "warnings", "cuda_placement")},
                                                             indent=1), "```", ""]
    for name in ("tdt-0.6b-v3-plain", "tdt-0.6b-v3-long"):
        step = steps.get(name, {})
        if step.get("speed"):
            out += [f"### {name}", ""] + speed_table(step) + [""]
    for name in ("streaming-fixture", "nemotron-streaming"):
        streaming = (steps.get(name) or {}).get("streaming") or {}
        if streaming.get("providers"):
            from nemo2sherpa.families.online_recognizer import latency_markdown

            out += [f"### {name}", ""] + latency_markdown(streaming, heading="####")
    skipped = {k: v["skipped"] for k, v in steps.items() if "skipped" in v}
    if skipped:
        out += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()), ""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
