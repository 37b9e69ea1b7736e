"""Log-mel features computed in numpy: input for measurements that need speech-like features without NeMo.

Used where no NeMo features exist: the fp16 pass's range probe (convert), the precision check's fallback when a clip
has no cached NeMo reference (validate), and the precision benchmark. They are close to, not equal to, NeMo's and
sherpa-onnx's front ends; nothing here is compared token for token against NeMo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def probe_features(feat_dim: int, seconds: float = 8.0) -> np.ndarray:
    """Normalised log-mel features [feat_dim, T] of the bundled fixture speech (espeak-ng): what the encoder's
    activations look like on speech. Exactness does not matter here, only the activation ranges."""
    import wave

    audio_dir = Path(__file__).resolve().parent / "fixtures" / "tiny-tdt-en" / "audio"
    pieces = []
    wanted = int(seconds * 16000)
    while sum(p.size for p in pieces) < wanted:
        before = len(pieces)
        for path in sorted(audio_dir.glob("*.wav")):
            with wave.open(str(path), "rb") as handle:
                if handle.getsampwidth() != 2 or handle.getnchannels() != 1:
                    continue
                samples = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
            pieces.append(samples.astype(np.float32) / 32768.0)
            if sum(p.size for p in pieces) >= wanted:
                break
        if len(pieces) == before:
            pieces.append(np.zeros(wanted, dtype=np.float32))
    return log_mel(np.concatenate(pieces)[:wanted], feat_dim)


def log_mel(audio: np.ndarray, feat_dim: int, sample_rate: int = 16000) -> np.ndarray:
    """Per-feature normalised log-mel features [feat_dim, T] (25 ms hann window, 10 ms hop, 512-point FFT): close
    to, not equal to, NeMo's and sherpa-onnx's front ends."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size < 400:
        audio = np.pad(audio, (0, 400 - audio.size))
    audio = np.append(audio[0], audio[1:] - 0.97 * audio[:-1])
    n_fft, hop, win = 512, sample_rate // 100, sample_rate // 40
    frames = 1 + max(0, (audio.size - win) // hop)
    index = np.arange(win)[None, :] + hop * np.arange(frames)[:, None]
    window = np.hanning(win).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(audio[index] * window, n=n_fft)) ** 2
    mel = _mel_filters(feat_dim, n_fft, sample_rate)
    features = np.log(spectrum @ mel.T + 2.0 ** -24).T
    features = (features - features.mean(axis=1, keepdims=True)) / (features.std(axis=1, keepdims=True) + 1e-5)
    return features.astype(np.float32)


def _mel_filters(bins: int, n_fft: int, rate: int) -> np.ndarray:
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    points = hz(np.linspace(mel(0.0), mel(rate / 2), bins + 2))
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    filters = np.zeros((bins, freqs.size), dtype=np.float32)
    for i in range(bins):
        left, centre, right = points[i], points[i + 1], points[i + 2]
        rise = (freqs - left) / max(centre - left, 1e-6)
        fall = (right - freqs) / max(right - centre, 1e-6)
        filters[i] = np.maximum(0.0, np.minimum(rise, fall))
    return filters
