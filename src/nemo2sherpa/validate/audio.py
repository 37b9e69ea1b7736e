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
#: The shortest clip validate accepts. FastConformer's encoder subsamples 10 ms feature frames by 8 and its exported
#: graph needs at least two frames out: 9 frames in, which NeMo's preprocessor makes from 1440 samples at 16 kHz
#: (0.09 s, measured with the bundled tiny-tdt-en: 1408 samples fail inside onnxruntime, 1440 pass). 0.1 s leaves a
#: margin for sherpa-onnx's own feature extraction.
MIN_SECONDS = 0.1


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
    """Mono float32 at `sample_rate`: any rate (resampled with soxr), any channel count (averaged), any sample format
    and container libsndfile reads (WAV 8/16/24/32-bit and float, FLAC, OGG Vorbis/Opus, ...). Refused, in one line
    naming the file: unreadable or empty files, NaN or infinite samples, clips shorter than MIN_SECONDS (the encoder
    cannot run on them, and the failure deep inside onnxruntime would be blamed on the model)."""
    import soundfile as sf
    import soxr

    try:
        is_file = path.is_file()
    except (OSError, ValueError):
        is_file = False
    if not is_file:
        raise UserError.about(path, "no such audio file" if not _exists(path) else "is not a file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, TypeError, ValueError, OSError, EOFError) as exc:
        raise UserError.about(path, f"cannot be read as audio ({_first_line(exc)})") from None
    if data.size == 0:
        raise UserError.about(path, "holds no audio samples")
    if not np.all(np.isfinite(data)):
        raise UserError.about(path, "holds NaN or infinite samples")
    if rate <= 0:
        raise UserError.about(path, f"states a sample rate of {rate} Hz")
    mono = data.mean(axis=1, dtype=np.float64) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(np.ascontiguousarray(mono, dtype=np.float32), rate, sample_rate, quality="HQ")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if mono.size == 0:
        raise UserError.about(path, f"holds too few samples to resample from {rate} Hz to {sample_rate} Hz")
    if mono.size < round(MIN_SECONDS * sample_rate):
        raise UserError.about(path, f"is {mono.size / sample_rate:.3f} s long; validate needs clips of at least "
                                    f"{MIN_SECONDS} s (the encoder needs enough feature frames for its subsampling)")
    return mono


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def unique_names(names: Iterable[str]) -> list[str]:
    """Clip names are keys (references, transcripts, reports): a repeated name gets ' (2)', ' (3)', ..."""
    seen: dict[str, int] = {}
    unique = []
    taken = set()
    for name in names:
        candidate = name
        while candidate in taken:
            seen[name] = seen.get(name, 1) + 1
            candidate = f"{name} ({seen[name]})"
        taken.add(candidate)
        unique.append(candidate)
    return unique


def clips_from_files(paths: Iterable[Path], sample_rate: int = 16000) -> list[Clip]:
    paths = list(paths)
    names = unique_names(p.name for p in paths)
    return [Clip(name=n, audio=load_audio(p, sample_rate), sample_rate=sample_rate) for n, p in zip(names, paths)]


def parse_dataset_line(line: str, number: int, source: Path) -> tuple[str, str | None] | None:
    """(audio path, text or None) from one JSONL line; None for a blank line; UserError naming the line otherwise."""
    if not line.strip():
        return None
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError.about(source, f"line {number} is not JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # 5000-digit numbers, nesting deeper than the parser goes
        raise UserError.about(source, f"line {number} is not usable JSON ({_first_line(exc)[:100]})") from None
    if not isinstance(entry, dict):
        raise UserError.about(source, f"line {number} is not a JSON object")
    audio = next((entry[k] for k in AUDIO_KEYS if k in entry), None)
    if not isinstance(audio, str) or not audio.strip():
        raise UserError.about(source, f"line {number} has no audio path (keys: {', '.join(AUDIO_KEYS)})")
    if "\x00" in audio or not _valid_text(audio):
        raise UserError.about(source, f"line {number} has an audio path that is not a valid file name")
    text = next((entry[k] for k in TEXT_KEYS if k in entry), None)
    if text is not None and not isinstance(text, str):
        raise UserError.about(source, f"line {number} has a text that is not a string")
    if text is not None and not _valid_text(text):
        raise UserError.about(source, f"line {number} has a text that is not valid Unicode (lone surrogates)")
    return audio, text


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_dataset(path: Path, sample_rate: int = 16000) -> list[Clip]:
    """A JSONL manifest: one {"audio": path, "text": optional} per line, paths relative to the manifest."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError.about(path, "no such dataset file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError.about(path, f"cannot be read ({exc})") from None
    entries = []
    for number, line in enumerate(lines, start=1):
        parsed = parse_dataset_line(line, number, path)
        if parsed is not None:
            entries.append(parsed)
    if not entries:
        raise UserError.about(path, "lists no audio")
    names = unique_names(Path(audio_path).name for audio_path, _ in entries)
    clips = []
    for name, (audio_path, text) in zip(names, entries):
        resolved = (path.parent / audio_path) if not Path(audio_path).is_absolute() else Path(audio_path)
        clips.append(Clip(name=name, audio=load_audio(resolved, sample_rate), sample_rate=sample_rate, text=text))
    return clips
