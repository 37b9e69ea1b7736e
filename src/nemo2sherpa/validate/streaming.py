"""The streaming check: how a streaming directory behaves live in sherpa-onnx's online recognizer.

Each clip was fed to the recognizer in 100 ms pieces, as a microphone delivers audio, every window decoded as soon
as it was ready (families.online_recognizer.OnlineSherpa). From those runs: the compute per chunk, how long after
its audio each token was shown (stream time, the chunk's wait for its look-ahead included, plus compute; the first
token's and the last one's), and RTFx. A directory whose decoding is slower than the audio arrives fails: it cannot
keep up with a live stream. Where the vocabulary has end-of-utterance tokens (NVIDIA's realtime EOU models emit
`<EOU>` when a turn ends, `<EOB>` after a backchannel), how many transcripts contain them and end with one.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from nemo2sherpa.families.base import ModelSpec
from nemo2sherpa.families.online_recognizer import PIECE_SECONDS
from nemo2sherpa.families.streaming_step import shape_from_metadata
from nemo2sherpa.validate.results import CheckResult

#: end-of-utterance and end-of-backchannel tokens of NVIDIA's realtime EOU models
END_TOKENS = ("<EOU>", "<EOB>")


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 3) if values else None


def provider_latency(transcripts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One provider's figures over its clips: means of each clip's figure, RTFx over all audio."""
    runs = [entry["latency"] for entry in transcripts.values() if entry.get("latency")]
    pick = lambda key: [run[key] for run in runs if run.get(key) is not None]  # noqa: E731
    audio, compute = sum(pick("audio_seconds")), sum(pick("compute_seconds"))
    return {
        "clips": len(runs),
        "chunks": int(sum(pick("chunks"))),
        "chunk_compute_ms_mean": _mean(pick("chunk_compute_ms_mean")),
        "chunk_compute_ms_max": max(pick("chunk_compute_ms_max"), default=None),
        "first_token_latency_s": _mean(pick("first_token_latency_s")),
        "final_token_latency_s": _mean(pick("final_token_latency_s")),
        "mean_token_latency_s": _mean(pick("mean_token_latency_s")),
        "rtfx": round(audio / compute, 2) if compute else None,
    }


def end_tokens(transcripts: Mapping[str, Mapping[str, Any]], pieces: list[str]) -> dict[str, Any] | None:
    """How often each end token the vocabulary has was emitted, and how many transcripts end with one; None when
    the vocabulary has none."""
    present = [token for token in END_TOKENS if token in pieces]
    if not present:
        return None
    counts = {token: sum(entry.get("tokens", []).count(token) for entry in transcripts.values())
              for token in present}
    ending = sum(1 for entry in transcripts.values() if entry.get("tokens") and entry["tokens"][-1] in present)
    return {"tokens": present, "emitted": counts, "transcripts_ending_with_one": ending,
            "transcripts": len(transcripts)}


def summarize_streaming(transcripts: Mapping[str, Mapping[str, Mapping[str, Any]]], spec: ModelSpec,
                        manifest=None) -> CheckResult:
    """transcripts: provider -> clip -> the sherpa-onnx run's entry (text, tokens, latency)."""
    check = CheckResult("streaming")
    shape = shape_from_metadata(spec.metadata)  # the contract check has proven it there
    hop_ms = manifest.model.hop_ms if manifest is not None else 10.0
    check.details.update({
        "window_frames": shape.window_frames, "chunk_frames": shape.chunk_frames, "lookahead_frames": shape.lookahead,
        **shape.latency_ms(hop_ms, int(spec.metadata.get("subsampling_factor", 8))),
        "fed_in_pieces_of_ms": round(PIECE_SECONDS * 1000),
        "providers": {provider: provider_latency(entries) for provider, entries in transcripts.items()},
    })
    for provider, figures in check.details["providers"].items():
        if figures["rtfx"] is not None and figures["rtfx"] < 1.0:
            check.fail(f"{provider}: decoding runs at {figures['rtfx']:g}x real time; it cannot keep up with a live "
                       "stream")
    first = next(iter(transcripts.values()), {})
    check.details["end_of_utterance"] = end_tokens(first, spec.pieces)
    return check
