"""Check 5: speed by audio length, and where the GPU starts to pay off.

Users who serve both short commands and long recordings route by length (short to CPU, long to GPU); the threshold
is measured here instead of guessed: decode time per length bucket and provider (median of repeats after a warm-up),
the length where CUDA's line crosses CPU's, and the shortest bucket from which CUDA wins at every longer bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nemo2sherpa.validate.audio import Clip
from nemo2sherpa.validate.results import CheckResult

DEFAULT_LENGTHS = (2.0, 5.0, 10.0, 30.0, 60.0, 120.0)


def bucket_name(seconds: float) -> str:
    return f"speed_{seconds:g}s"


def make_bucket_clips(clips: Sequence[Clip], lengths: Sequence[float], sample_rate: int) -> dict[str, Clip]:
    """Audio of each length, made by concatenating the validation clips (with short pauses) and trimming."""
    pause = np.zeros(int(0.3 * sample_rate), dtype=np.float32)
    pieces = [np.concatenate([c.audio, pause]) for c in clips if c.audio.size]
    one_round = np.concatenate(pieces) if pieces else np.zeros(sample_rate, dtype=np.float32)
    buckets = {}
    for seconds in lengths:
        needed = int(round(seconds * sample_rate))
        repeats = max(1, math.ceil(needed / one_round.size))
        samples = np.tile(one_round, repeats)[:needed]
        buckets[bucket_name(seconds)] = Clip(name=bucket_name(seconds), audio=samples, sample_rate=sample_rate)
    return buckets


@dataclass(frozen=True)
class ProviderTimes:
    provider: str
    load_seconds: float | None
    decode_seconds: dict[float, float]  # length -> median decode time
    peak_rss_bytes: int | None = None  # the decoding process's peak resident memory
    gpu_peak_bytes: int | None = None  # GPU memory in use above what it was before the model loaded


def break_even(lengths: Sequence[float], cpu: Sequence[float], gpu: Sequence[float]) -> float | None:
    """The length where GPU time crosses below CPU time, interpolated linearly between buckets; 0.0 when the GPU wins
    at every length, None when it never does."""
    difference = [g - c for c, g in zip(cpu, gpu)]
    if all(d < 0 for d in difference):
        return 0.0
    for index in range(len(difference) - 1, -1, -1):
        if difference[index] >= 0:
            if index == len(difference) - 1:
                return None
            x0, x1 = lengths[index], lengths[index + 1]
            d0, d1 = difference[index], difference[index + 1]
            return round(x0 + (x1 - x0) * d0 / (d0 - d1), 2)
    return None


def recommended_threshold(lengths: Sequence[float], cpu: Sequence[float], gpu: Sequence[float]) -> float | None:
    """The shortest measured length from which the GPU is faster at every longer length too."""
    best = None
    for index in range(len(lengths) - 1, -1, -1):
        if gpu[index] < cpu[index]:
            best = lengths[index]
        else:
            break
    return best


def summarize(times: list[ProviderTimes], threads: int, repeats: int) -> CheckResult:
    check = CheckResult("speed")
    lengths = sorted({length for t in times for length in t.decode_seconds})
    by_provider = {t.provider: t for t in times}
    buckets = []
    for length in lengths:
        row: dict = {"seconds": length}
        for provider, t in by_provider.items():
            decode = t.decode_seconds.get(length)
            if decode is not None:
                row[provider] = {"decode_seconds": round(decode, 4),
                                 "rtfx": round(length / decode, 2) if decode else None}
        if "cpu" in row and "cuda" in row:
            row["cuda_speedup"] = round(row["cpu"]["decode_seconds"] / row["cuda"]["decode_seconds"], 3)
        buckets.append(row)
    check.details.update({
        "threads": threads,
        "repeats": repeats,
        "load_seconds": {p: t.load_seconds for p, t in by_provider.items()},
        "peak_rss_bytes": {p: t.peak_rss_bytes for p, t in by_provider.items()},
        "gpu_peak_bytes": {p: t.gpu_peak_bytes for p, t in by_provider.items() if p != "cpu"},
        "buckets": buckets,
        "break_even_seconds": None,
        "recommended_gpu_min_seconds": None,
    })
    if "cpu" in by_provider and "cuda" in by_provider:
        common = [length for length in lengths if length in by_provider["cpu"].decode_seconds
                  and length in by_provider["cuda"].decode_seconds]
        cpu = [by_provider["cpu"].decode_seconds[length] for length in common]
        gpu = [by_provider["cuda"].decode_seconds[length] for length in common]
        check.details["break_even_seconds"] = break_even(common, cpu, gpu)
        check.details["recommended_gpu_min_seconds"] = recommended_threshold(common, cpu, gpu)
    return check
