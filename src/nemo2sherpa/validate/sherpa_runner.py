"""Run a model directory through its runtime itself (sherpa-onnx, or onnx-asr for that layout), the way its users
do: the family's own recognizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from nemo2sherpa.families import family_named


@dataclass(frozen=True)
class SherpaResult:
    text: str
    tokens: list[str]
    timestamps: list[float]


def recognizer_for(family: str, graphs: Mapping[str, str | Path], tokens: str | Path, provider: str = "cpu",
                   threads: int = 1, sample_rate: int = 16000, feature_dim: int = 80,
                   with_front_end_option: bool = False):
    """An OfflineRecognizer for a family's files (role -> path); by name, so a child process can build it from a
    request. `with_front_end_option`: with the family's front-end option set (a family without one refuses)."""
    named = family_named(family)
    if with_front_end_option and named.front_end_option is None:
        raise ValueError(f"the {named.title} family has no front-end option")
    return named.runtime_recognizer({role: Path(p) for role, p in graphs.items()}, Path(tokens), provider=provider,
                                    threads=threads, sample_rate=sample_rate, feature_dim=feature_dim,
                                    with_front_end_option=with_front_end_option)


def make_recognizer(model, provider: str = "cpu", threads: int = 1, sample_rate: int = 16000,
                    feature_dim: int = 80, with_front_end_option: bool = False):
    """The recognizer for a validate.model_dir.ModelDir."""
    return recognizer_for(model.family.name, model.graphs, model.tokens, provider=provider, threads=threads,
                          sample_rate=sample_rate, feature_dim=feature_dim, with_front_end_option=with_front_end_option)


def transcribe(recognizer, audio: np.ndarray, sample_rate: int = 16000) -> SherpaResult:
    """sherpa-onnx's result for the audio; a family whose runtime is another one (onnx-asr) gives a recognizer
    with its own transcribe() returning the same three fields."""
    if hasattr(recognizer, "transcribe"):
        return recognizer.transcribe(np.ascontiguousarray(audio, dtype=np.float32), sample_rate)
    stream = recognizer.create_stream()
    stream.accept_waveform(sample_rate, np.ascontiguousarray(audio, dtype=np.float32))
    recognizer.decode_stream(stream)
    result = stream.result
    return SherpaResult(text=result.text, tokens=list(result.tokens), timestamps=list(result.timestamps))


def token_ids(tokens: list[str], pieces: list[str]) -> list[int]:
    """Map sherpa-onnx's result tokens back to ids: it shows SentencePiece's word-start mark as a space."""
    by_text = {piece.replace("\u2581", " "): index for index, piece in enumerate(pieces)}
    return [by_text[token] for token in tokens]
