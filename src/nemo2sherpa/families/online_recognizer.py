"""sherpa-onnx's OnlineRecognizer driven as a live stream, and the latency it shows: how validate runs a streaming
directory through its runtime, and the table its report and model card print."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nemo2sherpa.facts import StreamingShape
from nemo2sherpa.families.base import Recognized
from nemo2sherpa.families.streaming_step import shape_from_metadata, tail_seconds

#: audio pieces sherpa-onnx is fed in, as a microphone delivers them
PIECE_SECONDS = 0.1


class OnlineSherpa:
    """sherpa-onnx's OnlineRecognizer driven as a live stream: audio arrives in PIECE_SECONDS pieces, each window is
    decoded as soon as it is ready, and the step times and the moments tokens appear are recorded: per-chunk
    compute, how long after its audio each token was shown (stream time plus compute), RTFx."""

    def __init__(self, recognizer: Any, shape: StreamingShape) -> None:
        self.recognizer = recognizer
        self.tail_seconds = tail_seconds(shape)
        self.latency: dict[str, Any] = {}

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> Recognized:
        recognizer = self.recognizer
        stream = recognizer.create_stream()
        piece = max(1, int(PIECE_SECONDS * sample_rate))
        tail = np.zeros(int(self.tail_seconds * sample_rate), dtype=np.float32)
        signal = np.concatenate([np.asarray(audio, dtype=np.float32), tail])
        steps: list[float] = []
        shown: list[float] = []  # for each token, the stream time it first appeared at
        clock = 0.0  # when the decoder is free: a step starts once its audio has arrived and the last step is done
        for start in range(0, signal.size, piece):
            stream.accept_waveform(sample_rate, signal[start: start + piece])
            if start + piece >= signal.size:
                stream.input_finished()
            arrived = min(start + piece, signal.size) / sample_rate  # silence keeps arriving after speech ends
            while recognizer.is_ready(stream):
                begun = time.perf_counter()
                recognizer.decode_stream(stream)
                took = time.perf_counter() - begun
                steps.append(took)
                clock = max(clock, arrived) + took
                shown += [clock] * (len(recognizer.tokens(stream)) - len(shown))
        text, tokens = recognizer.get_result(stream), list(recognizer.tokens(stream))
        timestamps = [float(t) for t in recognizer.timestamps(stream)]
        delays = [moment - stamp for moment, stamp in zip(shown, timestamps)]
        compute = float(sum(steps))
        seconds = audio.size / sample_rate
        self.latency = {
            "chunks": len(steps),
            "chunk_compute_ms_mean": round(1000 * float(np.mean(steps)), 3) if steps else None,
            "chunk_compute_ms_max": round(1000 * float(np.max(steps)), 3) if steps else None,
            "first_token_latency_s": round(delays[0], 3) if delays else None,
            "final_token_latency_s": round(delays[-1], 3) if delays else None,
            "mean_token_latency_s": round(float(np.mean(delays)), 3) if delays else None,
            "rtfx": round(seconds / compute, 2) if compute else None,
            "audio_seconds": round(seconds, 3), "compute_seconds": round(compute, 5),
        }
        return Recognized(text=text, tokens=tokens, timestamps=timestamps)


def online_recognizer(recognizer: Any, encoder: Path) -> OnlineSherpa:
    """The live-stream driver for a recognizer, sized from the encoder's own metadata (read without weights)."""
    import onnx

    from nemo2sherpa.graphs.rewriting import metadata_of

    graph = onnx.load(str(encoder), load_external_data=False)
    return OnlineSherpa(recognizer, shape_from_metadata(metadata_of(graph)))


def latency_markdown(check: Mapping[str, Any] | None, heading: str = "##") -> list[str]:
    """The streaming section of the report (and of the model card, one level down): the step, and per provider the
    latency table."""
    if not check or check.get("status") not in ("passed", "failed"):
        return []
    lines = [f"{heading} Streaming (sherpa-onnx's online recognizer, audio fed in 100 ms pieces)", "",
             f"Look-ahead {check['lookahead_frames']} encoder frames ({check['lookahead_ms']:g} ms); each step reads "
             f"{check['window_frames']} feature frames and advances {check['chunk_frames']} "
             f"({check['chunk_ms']:g} ms of audio per chunk).", "",
             "| provider | chunks | compute per chunk, mean / max ms | first token shown after | last token shown "
             "after | mean token delay | RTFx |", "|---|---|---|---|---|---|---|"]
    seconds = lambda value: "-" if value is None else f"{value:.3f} s"  # noqa: E731
    for provider, f in check.get("providers", {}).items():
        lines.append(f"| {provider} | {f['chunks']} | {f['chunk_compute_ms_mean']} / {f['chunk_compute_ms_max']} | "
                     f"{seconds(f['first_token_latency_s'])} | {seconds(f['final_token_latency_s'])} | "
                     f"{seconds(f['mean_token_latency_s'])} | {f['rtfx']} |")
    lines += ["", "A token's delay: from its timestamp in the audio to the moment it was shown, the chunk's wait for "
                  "its look-ahead and the compute included.", ""]
    end = check.get("end_of_utterance")
    if end:
        counts = ", ".join(f"{token} {count}" for token, count in end["emitted"].items())
        lines += [f"End-of-utterance tokens emitted: {counts}; {end['transcripts_ending_with_one']} of "
                  f"{end['transcripts']} transcripts end with one.", ""]
    return lines
