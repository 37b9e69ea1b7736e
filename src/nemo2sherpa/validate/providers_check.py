"""Check 4: the providers asked for. A provider counts only when sherpa-onnx really ran on it: a silent fall back to
CPU fails, and a CUDA run must show onnxruntime's CUDA provider library loaded in its process."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nemo2sherpa.validate.audio import Clip
from nemo2sherpa.validate.ort_runtime import fallback_messages
from nemo2sherpa.validate.results import CheckResult
from nemo2sherpa.validate.sherpa_child import SherpaRun


def check_providers(providers: tuple[str, ...], min_agreement: float, clips: list[Clip],
                    runs: dict[str, SherpaRun]) -> CheckResult:
    """The "providers" check: each provider asked for really ran (CUDA proven by the provider library it loaded),
    and CPU and CUDA agree on the transcripts."""
    check = CheckResult("providers")
    for provider in providers:
        run = runs[provider]
        info: dict[str, Any] = {"available": run.ok and not run.fallback_to_cpu,
                                "runtime": _describe_runtime(run.runtime), "reason": None}
        if provider == "cuda" and run.ok:
            info["evidence"] = _cuda_evidence(run)
        if not run.ok:
            info["reason"] = run.error
            check.fail(f"{provider}: {run.error}")
        elif run.fallback_to_cpu:
            said = " ".join(_strip_source_paths(m) for m in fallback_messages(run.log))[:600]
            info["reason"] = f"sherpa-onnx fell back to CPU: {said}"
            check.fail(f"{provider}: sherpa-onnx silently fell back to CPU ({said}); no {provider} figures are "
                       "reported. Install onnxruntime-gpu matching your CUDA with its CUDA/cuDNN libraries "
                       "(pip install 'onnxruntime-gpu[cuda,cudnn]'; nemo2sherpa routes sherpa-onnx through it) or a "
                       "CUDA build of sherpa-onnx")
        elif provider == "cuda" and not info["evidence"]["cuda_provider_loaded"]:
            info["available"] = False
            info["reason"] = "onnxruntime's CUDA provider library was never loaded"
            check.fail("cuda: sherpa-onnx reported no fall back, but onnxruntime's CUDA provider library was never "
                       "loaded in its process: no CUDA figures are reported")
        check.details[provider] = info
    if all(p in runs and runs[p].ok and not runs[p].fallback_to_cpu for p in ("cpu", "cuda")) \
            and set(providers) >= {"cpu", "cuda"}:
        same = sum(" ".join(runs["cpu"].transcripts[c.name]["text"].split())
                   == " ".join(runs["cuda"].transcripts[c.name]["text"].split()) for c in clips) / len(clips)
        check.details["cpu_cuda_exact_match_rate"] = round(same, 4)
        if same < min_agreement:
            check.fail(f"CPU and CUDA transcripts are identical on only {same:.0%} of utterances "
                       f"(minimum {min_agreement:.0%})")
    return check


def _cuda_evidence(run) -> dict[str, Any]:
    """What shows that a CUDA run really ran on the GPU (reports get published: no paths)."""
    runtime, memory = run.runtime, run.gpu_memory or {}
    return {"cuda_provider_loaded": bool(runtime.get("cuda_provider_loaded")),
            "onnxruntime_available_providers": runtime.get("onnxruntime_available_providers"),
            "nvidia_libraries_loaded": runtime.get("nvidia_libraries_loaded"),
            "gpu_memory": {k: memory.get(k) for k in ("available", "reason", "device", "peak_above_baseline_bytes",
                                                      "process_peak_bytes")} if memory else None}


def _strip_source_paths(message: str) -> str:
    """Drop directories from a log line (reports get published): '/a/b/libx.so' -> 'libx.so'."""
    return re.sub(r"(?:/[\w.+-]+)+/([\w.+-]+)", r"\1", message)


def _describe_runtime(summary: dict[str, Any]) -> str | None:
    """One line naming the onnxruntime sherpa-onnx really ran on; file names only (reports get published)."""
    if not summary or not summary.get("onnxruntime_version"):
        return None
    library = Path(str(summary.get("onnxruntime_library") or "")).name
    how = "routed through " + library if summary.get("shim") else "bundled with sherpa-onnx"
    cuda = ", CUDA provider present" if summary.get("cuda_provider_library") else ""
    return f"onnxruntime {summary['onnxruntime_version']} ({how}{cuda})"
