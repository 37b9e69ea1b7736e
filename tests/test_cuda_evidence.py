"""What makes validate call a CUDA run a CUDA run: sherpa-onnx's silence is not enough, the provider must have loaded.

These run without a GPU: the evidence is read from the process (its mapped libraries, NVML), and a run that lacks it
is refused whatever its log says.
"""

from __future__ import annotations

import pytest

from nemo2sherpa.validate import ort_runtime
from nemo2sherpa.validate.gpu_memory import GpuMemorySampler
from nemo2sherpa.validate.providers_check import check_providers
from nemo2sherpa.validate.report import _cuda_evidence_lines
from nemo2sherpa.validate.sherpa_child import SherpaRun


def test_provider_evidence_reads_this_process():
    evidence = ort_runtime.provider_evidence()
    # no CUDA session was ever created in the test process, so the CUDA provider library cannot be mapped
    assert evidence["cuda_provider_loaded"] is False
    assert isinstance(evidence["nvidia_libraries_loaded"], list)


def test_gpu_memory_without_a_gpu_says_why():
    with GpuMemorySampler() as sampler:
        pass
    result = sampler.result
    assert result.available is False
    assert result.reason and ("NVML" in result.reason or "nvidia-ml-py" in result.reason)
    assert result.peak_above_baseline_bytes is None


def _run(provider: str, loaded: bool) -> SherpaRun:
    return SherpaRun(provider=provider, ok=True, log="", runtime={"cuda_provider_loaded": loaded},
                     transcripts={"a": {"text": "hello world"}}, gpu_memory={"available": False, "reason": "NVML: x"})


def test_a_cuda_run_without_the_cuda_provider_loaded_fails():
    clips = [type("Clip", (), {"name": "a"})()]
    check = check_providers(("cpu", "cuda"), 1.0, clips, {"cpu": _run("cpu", False), "cuda": _run("cuda", False)})
    assert check.status == "failed"
    assert check.details["cuda"]["available"] is False
    assert "CUDA provider library was never loaded" in " ".join(check.problems)

    proven = check_providers(("cpu", "cuda"), 1.0, clips, {"cpu": _run("cpu", False), "cuda": _run("cuda", True)})
    assert proven.status == "passed", proven.problems
    assert proven.details["cuda"]["evidence"]["cuda_provider_loaded"] is True
    assert proven.details["cpu_cuda_exact_match_rate"] == 1.0
    lines = _cuda_evidence_lines(proven.details["cuda"]["evidence"])
    assert any("CUDA provider library loaded in sherpa-onnx's process: yes" in line for line in lines)
    assert any("GPU memory: not measured (NVML: x)" in line for line in lines)


def _manifest(fixture_manifest: dict, kind: str | None, heads: int | None):
    from nemo2sherpa.manifest import Manifest

    data = __import__("copy").deepcopy(fixture_manifest)
    data["model"]["architecture"]["attention_heads"] = heads
    if kind is None:
        data["export"].pop("attention", None)
    else:
        data["export"]["attention"] = {**data["export"].get("attention", {}), "kind": kind}
    return Manifest.from_dict(data)


@pytest.mark.nemo
def test_cuda_length_limit_of_full_attention(fixture_dir):
    """8 heads (every Parakeet): 11585 frames of 80 ms, the 926 s between the 900 s that decoded on an H200 and the
    960 s that aborted; local attention and exports that do not say have no such limit."""
    import json
    import math

    from nemo2sherpa.validate.long_audio import cuda_limit_seconds

    base = json.loads((fixture_dir / "manifest.json").read_text())
    assert cuda_limit_seconds(None) == math.inf
    assert cuda_limit_seconds(_manifest(base, "full", 8)) == 11585 * 0.08
    assert cuda_limit_seconds(_manifest(base, "full", 2)) > 2 * 900  # fewer heads, longer inputs
    assert cuda_limit_seconds(_manifest(base, "local", 8)) == math.inf
    assert cuda_limit_seconds(_manifest(base, None, 8)) == math.inf


def test_routing_advice_in_words():
    from nemo2sherpa.validate.report import _routing_line

    assert "run it on the CPU" in _routing_line({"recommended_gpu_min_seconds": None, "break_even_seconds": None})
    everywhere = _routing_line({"recommended_gpu_min_seconds": 2.0, "break_even_seconds": 0.0})
    assert "every measured length (from 2 s)" in everywhere
    split = _routing_line({"recommended_gpu_min_seconds": 10.0, "break_even_seconds": 7.5})
    assert "7.50 s" in split and "at least 10 s" in split
