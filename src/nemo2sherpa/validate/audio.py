"""Audio in: files of any sample rate, channel count and format libsndfile reads, and JSONL datasets.

Everything becomes mono float32 at the model's sample rate (resampled with soxr), so NeMo, the exported graphs and
sherpa-onnx are all fed the very same samples.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from nemo2sherpa.errors import UserError

AUDIO_KEYS = ("audio", "audio_filepath", "path")
TEXT_KEYS = ("text", "transcript")


@dataclass(frozen=True)
class Clip:
    """One utterance to validate on."""

    name: str
    audio: np.ndarray  # mono float32 at sample_rate
    sample_rate: int
    text: str | None = None

    @property
    def seconds(self) -> float:
        return len(self.audio) / float(self.sample_rate)

    @property
    def digest(self) -> str:
        """sha256 of the samples as fed to the models: the key of cached NeMo references."""
        return hashlib.sha256(np.ascontiguousarray(self.audio, dtype=np.float32).tobytes()).hexdigest()


def load_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    import soundfile as sf
    import soxr

    if not path.is_file():
        raise UserError.about(path, "no such audio file" if not path.exists() else "is not a file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, TypeError) as exc:
        raise UserError.about(path, f"cannot be read as audio ({str(exc).splitlines()[0]})") from None
    if data.size == 0:
        raise UserError.about(path, "holds no audio samples")
    if not np.all(np.isfinite(data)):
        raise UserError.about(path, "holds NaN or infinite samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def clips_from_files(paths: Iterable[Path], sample_rate: int = 16000) -> list[Clip]:
    return [Clip(name=p.name, audio=load_audio(p, sample_rate), sample_rate=sample_rate) for p in paths]


def parse_dataset_line(line: str, number: int, source: Path) -> tuple[str, str | None] | None:
    """(audio path, text or None) from one JSONL line; None for a blank line; UserError naming the line otherwise."""
    if not line.strip():
        return None
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError.about(source, f"line {number} is not JSON ({exc.msg})") from None
    if not isinstance(entry, dict):
        raise UserError.about(source, f"line {number} is not a JSON object")
    audio = next((entry[k] for k in AUDIO_KEYS if k in entry), None)
    if not isinstance(audio, str) or not audio:
        raise UserError.about(source, f"line {number} has no audio path (keys: {', '.join(AUDIO_KEYS)})")
    text = next((entry[k] for k in TEXT_KEYS if k in entry), None)
    if text is not None and not isinstance(text, str):
        raise UserError.about(source, f"line {number} has a text that is not a string")
    return audio, text


def read_dataset(path: Path, sample_rate: int = 16000) -> list[Clip]:
    """A JSONL manifest: one {"audio": path, "text": optional} per line, paths relative to the manifest."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError.about(path, "no such dataset file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError.about(path, f"cannot be read ({exc})") from None
    clips = []
    for number, line in enumerate(lines, start=1):
        parsed = parse_dataset_line(line, number, path)
        if parsed is None:
            continue
        audio_path, text = parsed
        resolved = (path.parent / audio_path) if not Path(audio_path).is_absolute() else Path(audio_path)
        clips.append(Clip(name=Path(audio_path).name, audio=load_audio(resolved, sample_rate),
                          sample_rate=sample_rate, text=text))
    if not clips:
        raise UserError.about(path, "lists no audio")
    return clips
