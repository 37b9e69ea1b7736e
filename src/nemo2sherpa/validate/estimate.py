"""What a validation will cost, said before it starts: audio to decode, minutes, and the long input's memory.

A rough model, calibrated on measured runs (docs/benchmarks.md, "Validate: CPU speed" and "Long audio"): the 1.1B
decodes on 2 CPU threads at about 0.1 s per second of audio (so ~0.09 s per billion parameters, scaled by threads),
and a full-attention encoder's peak on a long input is its weights plus about 8 attention-sized buffers
(heads x frames^2 x 4 bytes): 1.1B at 452 s measured 12.0 GB, this model says 12.6 GB. Reported as an estimate,
never as a figure; the run itself measures the real ones. Its one decision: a long input whose estimate exceeds
what the machine has is skipped with that reason instead of being run into the out-of-memory killer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nemo2sherpa.validate.long_audio import attention_of, frame_seconds
from nemo2sherpa.validate.model_dir import ModelDir

SECONDS_PER_AUDIO_SECOND_PER_BILLION = 0.09  # CPU, 2 threads, end-to-end sherpa-onnx decode
ATTENTION_BUFFERS = 8  # live attention-sized float32 buffers at the peak of a full-attention layer
LOCAL_BYTES_PER_AUDIO_SECOND_PER_BILLION = 8e6  # local attention: 0.5 GB per minute on the 0.6B, measured
MACHINE_SHARE = 0.8  # of physical memory a long input may be expected to take


@dataclass(frozen=True)
class Estimate:
    audio_seconds: float  # everything sherpa-onnx decodes, warm-ups and repeats included
    minutes: float
    long_input_gb: float | None  # None: no long input


def parameters(model: ModelDir) -> float:
    """The manifest's count, else the graphs' bytes / 4 (float32 weights dominate a graph's size)."""
    if model.manifest is not None and model.manifest.model.parameters:
        return float(model.manifest.model.parameters)
    total = 0
    for path in model.graphs.values():
        total += path.stat().st_size if path.is_file() else 0
        weights = path.with_suffix(".weights")
        total += weights.stat().st_size if weights.is_file() else 0
    return total / 4.0


def long_input_gigabytes(model: ModelDir, seconds: float, params: float) -> float:
    weights = params * 4
    manifest = model.manifest
    heads = manifest.model.architecture.attention_heads if manifest is not None else None
    if attention_of(manifest).get("kind") == "local" or not heads:
        return (weights + LOCAL_BYTES_PER_AUDIO_SECOND_PER_BILLION * seconds * params / 1e9) / 1e9
    frames = seconds / frame_seconds(manifest)
    return (weights + ATTENTION_BUFFERS * heads * frames * frames * 4) / 1e9


def estimate(model: ModelDir, clip_seconds: float, speed_seconds: float, repeats: int, providers: int,
             threads: int, long_seconds: float | None) -> Estimate:
    params = parameters(model)
    decoded = providers * (clip_seconds + speed_seconds * (repeats + 1)) + (long_seconds or 0.0)
    per_second = SECONDS_PER_AUDIO_SECOND_PER_BILLION * params / 1e9 * 2 / max(threads, 1)
    # the graphs and NeMo decode the long input once more each, and loading costs ~10 s per billion per process
    minutes = (decoded * per_second + 2 * (long_seconds or 0.0) * per_second
               + 10 * params / 1e9 * (providers + 1)) / 60
    long_gb = long_input_gigabytes(model, long_seconds, params) if long_seconds else None
    return Estimate(audio_seconds=decoded, minutes=minutes, long_input_gb=long_gb)


def physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def describe(estimate: Estimate) -> str:
    memory = f"; the long input about {estimate.long_input_gb:.1f} GB" if estimate.long_input_gb else ""
    duration = "under a minute" if estimate.minutes < 1 else f"roughly {estimate.minutes:.0f} min"
    return (f"plan: {estimate.audio_seconds:.0f} s of audio through sherpa-onnx, {duration}"
            f"{memory} (a rough estimate from the model's size; --no-speed, fewer --speed-lengths and "
            "--no-long-audio shorten it)")
