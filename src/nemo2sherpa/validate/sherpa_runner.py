"""Run a model directory through sherpa-onnx itself, the way its users do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nemo2sherpa.contract import MODEL_TYPE


@dataclass(frozen=True)
class GraphPaths:
    encoder: Path
    decoder: Path
    joiner: Path
    tokens: Path

    @classmethod
    def in_directory(cls, directory: Path, encoder: str = "encoder.onnx", decoder: str = "decoder.onnx",
                     joiner: str = "joiner.onnx") -> "GraphPaths":
        return cls(directory / encoder, directory / decoder, directory / joiner, directory / "tokens.txt")


@dataclass(frozen=True)
class SherpaResult:
    text: str
    tokens: list[str]
    timestamps: list[float]


def make_recognizer(paths: GraphPaths, provider: str = "cpu", threads: int = 1, sample_rate: int = 16000,
                    feature_dim: int = 80):
    """An OfflineRecognizer for a NeMo transducer. model_type must be given: the default selects icefall's
    transducer, and an empty one makes sherpa-onnx open the encoder once more just to read its metadata."""
    import sherpa_onnx

    return sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(paths.encoder),
        decoder=str(paths.decoder),
        joiner=str(paths.joiner),
        tokens=str(paths.tokens),
        model_type=MODEL_TYPE,
        provider=provider,
        num_threads=threads,
        sample_rate=sample_rate,
        feature_dim=feature_dim,
        decoding_method="greedy_search",
    )


def transcribe(recognizer, audio: np.ndarray, sample_rate: int = 16000) -> SherpaResult:
    stream = recognizer.create_stream()
    stream.accept_waveform(sample_rate, np.ascontiguousarray(audio, dtype=np.float32))
    recognizer.decode_stream(stream)
    result = stream.result
    return SherpaResult(text=result.text, tokens=list(result.tokens), timestamps=list(result.timestamps))


def token_ids(tokens: list[str], pieces: list[str]) -> list[int]:
    """Map sherpa-onnx's result tokens back to ids: it shows SentencePiece's word-start mark as a space."""
    by_text = {piece.replace("\u2581", " "): index for index, piece in enumerate(pieces)}
    return [by_text[token] for token in tokens]
