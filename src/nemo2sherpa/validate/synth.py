"""Speech synthesised locally with espeak-ng: reproducible test audio without downloading a data set.

espeak-ng is a formant synthesiser, so the same text, voice, speed and pitch give the same samples on every run of
the same espeak-ng build. That is what the trained test fixture and validation smoke tests need: a few known
utterances whose transcripts are exact by construction. Deliberately free of NeMo and torch (numpy, soundfile and
soxr only), so that validation can synthesise audio in the light install.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

ESPEAK = "espeak-ng"
_TIMEOUT_S = 60


class SynthesisError(RuntimeError):
    """espeak-ng is missing, or it failed or produced no audio for a request."""


@dataclass(frozen=True)
class Utterance:
    """One synthesised utterance: its file stem, its exact transcript and its samples (float32 mono)."""

    name: str
    text: str
    audio: np.ndarray
    sample_rate: int = 16000

    @property
    def seconds(self) -> float:
        return len(self.audio) / float(self.sample_rate)


def espeak_path() -> str | None:
    """Where espeak-ng is, or None; the single place that decides which binary runs."""
    return shutil.which(ESPEAK)


def espeak_available() -> bool:
    """Whether espeak-ng can be run here: tests that need synthetic speech skip, rather than fail, without it."""
    return espeak_path() is not None


def synthesize(
    text: str,
    voice: str = "en-us",
    speed_wpm: int = 160,
    pitch: int = 50,
    sample_rate: int = 16000,
) -> np.ndarray:
    """`text` spoken by espeak-ng, as float32 mono samples in [-1, 1] at `sample_rate`.

    espeak-ng writes a 16-bit WAV (22050 Hz for its own voices) to stdout; it is read with soundfile and resampled
    with soxr, because ASR models want 16 kHz and sherpa-onnx and NeMo each resample differently.

    voice: an espeak-ng voice name, optionally with a variant ("en-us", "en-gb+f3").
    speed_wpm: words per minute (espeak-ng -s; its default is 175).
    pitch: 0-99 (espeak-ng -p; its default is 50).
    """
    import soundfile as sf
    import soxr

    if not text.strip():
        raise SynthesisError("nothing to synthesise: the text is empty")
    binary = espeak_path()
    if binary is None:
        raise SynthesisError(f"{ESPEAK} is not installed (on Debian/Ubuntu: apt-get install espeak-ng)")
    # "--" ends the options, so a text starting with "-" is spoken, not parsed.
    command = [binary, "-v", voice, "-s", str(int(speed_wpm)), "-p", str(int(pitch)), "--stdout", "--", text]
    try:
        result = subprocess.run(command, capture_output=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SynthesisError(f"{ESPEAK} could not be run: {exc}") from None
    stderr = result.stderr.decode("utf-8", "replace").strip()
    if result.returncode != 0:
        raise SynthesisError(f"{ESPEAK} failed (exit status {result.returncode}): {stderr or 'no message'}")
    try:
        # espeak-ng streams, so its WAV header gives placeholder sizes; libsndfile reads up to the real end.
        samples, rate = sf.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise SynthesisError(f"{ESPEAK} produced no readable WAV ({exc}); {stderr}") from None
    mono = samples.mean(axis=1)
    if mono.size == 0 or not np.any(mono):
        raise SynthesisError(f"{ESPEAK} produced silence for voice {voice!r} ({stderr or 'no message'})")
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float samples rounded to what a 16-bit WAV stores, back as float32: train on exactly what is written."""
    quantised = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767)
    return (quantised / 32768.0).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    """A 16-bit PCM mono WAV: the format every reader (NeMo, sherpa-onnx, soundfile, the browser) accepts."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(audio, dtype=np.float32), sample_rate, subtype="PCM_16", format="WAV")
    return path


def write_utterances(utterances: Iterable[Utterance], directory: Path) -> list[Path]:
    """Each utterance as directory/<name>.wav (16-bit PCM); the paths in the order given."""
    paths = []
    for utterance in utterances:
        paths.append(write_wav(directory / f"{utterance.name}.wav", utterance.audio, utterance.sample_rate))
    return paths
