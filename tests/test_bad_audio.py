"""validate on awkward audio: accepted and converted (resampled, downmixed, any sample format or container libsndfile
reads) or refused in one line naming the file. Complements test_validate.py (stereo 44.1 kHz FLAC, empty files).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_one_line_error, run_cli
from nemo2sherpa.errors import UserError
from nemo2sherpa.validate.audio import load_audio


@pytest.fixture(scope="module")
def utterance(fixture_recipe) -> tuple[np.ndarray, int, str]:
    """The first fixture utterance: 16 kHz float samples and its text."""
    import soundfile as sf

    dataset = fixture_recipe.dataset_path()
    first = json.loads(dataset.read_text().splitlines()[0])
    samples, rate = sf.read(str(dataset.parent / first["audio"]), dtype="float32")
    return samples, rate, first["text"]


def _write(path: Path, samples: np.ndarray, rate: int, **kwargs) -> Path:
    import soundfile as sf

    sf.write(str(path), samples, rate, **kwargs)
    return path


@pytest.mark.nemo
def test_awkward_but_valid_audio_is_transcribed(fixture_dir, utterance, tmp_path, capsys):
    """One validation over: 24-bit WAV, 16-bit FLAC, OGG Vorbis, 48 kHz stereo with unequal channels (all the same
    utterance: NeMo must say the sentence and sherpa-onnx must say what NeMo says), the utterance saved at 8 kHz and
    upsampled (a transcript, whatever it is, without a crash), and 2 s of digital silence."""
    import soxr

    samples, rate, text = utterance
    files = {
        "pcm24.wav": _write(tmp_path / "pcm24.wav", samples, rate, subtype="PCM_24"),
        "flac16.flac": _write(tmp_path / "flac16.flac", samples, rate, format="FLAC", subtype="PCM_16"),
        "vorbis.ogg": _write(tmp_path / "vorbis.ogg", samples, rate, format="OGG", subtype="VORBIS"),
        "stereo48k.wav": _write(tmp_path / "stereo48k.wav",
                                np.stack([soxr.resample(samples, rate, 48000),
                                          0.5 * soxr.resample(samples, rate, 48000)], axis=1), 48000),
        "narrow8k.wav": _write(tmp_path / "narrow8k.wav", soxr.resample(samples, rate, 8000), 8000, subtype="PCM_16"),
        "silence.wav": _write(tmp_path / "silence.wav", np.zeros(2 * rate, dtype=np.float32), rate),
    }
    dataset = tmp_path / "awkward.jsonl"
    dataset.write_text("".join(json.dumps({"audio": name, "text": "" if name == "silence.wav" else text}) + "\n"
                               for name in files))
    ran = run_cli(["validate", fixture_dir, "--dataset", dataset, "--no-speed", "--report-dir", tmp_path / "report",
                   "--min-exact-match", "0", "--max-wer-vs-nemo", "1000", "-q"], capsys)
    assert "Traceback" not in ran.err, ran.err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert ran.code == 0, json.dumps({k: v.get("problems") for k, v in report["checks"].items()})
    rows = {row["name"]: row for row in report["checks"]["transcripts"]["utterances"]}
    assert set(rows) == set(files)
    for name in ("pcm24.wav", "flac16.flac", "vorbis.ogg", "stereo48k.wav"):
        assert rows[name]["nemo"] == text, (name, rows[name])
        assert rows[name]["sherpa"]["cpu"] == rows[name]["nemo"], (name, rows[name])
    assert isinstance(rows["narrow8k.wav"]["sherpa"]["cpu"], str) and rows["narrow8k.wav"]["nemo"] is not None
    assert rows["narrow8k.wav"]["seconds"] == pytest.approx(len(samples) / rate, abs=0.01)
    print(f"8 kHz upsampled: NeMo {rows['narrow8k.wav']['nemo']!r}, sherpa-onnx {rows['narrow8k.wav']['sherpa']}")
    # digital silence: features degenerate (zero variance), so a tiny model may "hear" anything; what matters is
    # that both sides produce a transcript instead of NaNs or a crash
    assert isinstance(rows["silence.wav"]["sherpa"]["cpu"], str) and isinstance(rows["silence.wav"]["nemo"], str)
    assert report["checks"]["graph_fidelity"]["status"] == "passed"


@pytest.mark.nemo
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused_naming_the_file(fixture_dir, utterance, tmp_path, capsys, bad):
    samples = utterance[0].copy()
    samples[1000] = bad
    path = _write(tmp_path / "nonfinite.wav", samples, utterance[1], subtype="FLOAT")
    ran = run_cli(["validate", fixture_dir, "--audio", path, "--no-speed", "-q"], capsys)
    assert_one_line_error(ran, "nonfinite.wav", "holds NaN or infinite samples")


@pytest.mark.nemo
def test_a_dataset_naming_bad_audio_is_refused_naming_the_audio(fixture_dir, utterance, tmp_path, capsys):
    (tmp_path / "notes.wav").write_text("this is not audio\n" * 50)
    dataset = tmp_path / "data.jsonl"
    dataset.write_text(json.dumps({"audio": "notes.wav", "text": "x"}) + "\n")
    ran = run_cli(["validate", fixture_dir, "--dataset", dataset, "--no-speed", "-q"], capsys)
    assert_one_line_error(ran, "notes.wav", "cannot be read as audio")


def _garbage_after_header(path: Path, samples: np.ndarray, rate: int, fmt: str) -> Path:
    _write(path, samples, rate, format=fmt)
    data = bytearray(path.read_bytes())
    for i in range(200, len(data), 7):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("make, fragment", [
    (lambda d, s, r: (d / "text.wav").write_text("RIFF? no.") and d / "text.wav", "cannot be read as audio"),
    (lambda d, s, r: (d / "noise.m4a").write_bytes(bytes(range(256)) * 64) and d / "noise.m4a",
     "cannot be read as audio"),
    (lambda d, s, r: (d / "folder.wav").mkdir() or d / "folder.wav", "is not a file"),
    (lambda d, s, r: d / "missing.flac", "no such audio file"),
    (lambda d, s, r: _write(d / "empty.flac", np.zeros(0, dtype=np.float32), r, format="FLAC"),
     "empty.flac: "),  # libsndfile cannot even open a FLAC without frames: 'cannot be read as audio'
    (lambda d, s, r: _write(d / "empty24.wav", np.zeros(0, dtype=np.float32), r, subtype="PCM_24"),
     "holds no audio samples"),
    (lambda d, s, r: _write(d / "nan.flac", np.full(160, np.nan, dtype=np.float32), r, format="WAV",
                            subtype="DOUBLE"), "holds NaN or infinite samples"),
    (lambda d, s, r: _write(d / "tiny.wav", np.zeros(1, dtype=np.float32), 1), None),
])
def test_load_audio_accepts_or_refuses_in_one_line(utterance, tmp_path, make, fragment):
    path = make(tmp_path, *utterance[:2])
    if fragment is None:  # one sample at 1 Hz: resampled to 16 kHz, or refused by name; never a crash
        try:
            audio = load_audio(path)
        except UserError as exc:
            assert str(exc).startswith(str(path))
        else:
            assert audio.dtype == np.float32 and audio.ndim == 1
        return
    with pytest.raises(UserError) as refused:
        load_audio(path)
    assert str(refused.value).startswith(str(path)) and fragment in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_corrupt_compressed_audio_is_read_or_refused_never_a_crash(utterance, tmp_path, fmt):
    path = _garbage_after_header(tmp_path / f"corrupt.{fmt.lower()}", utterance[0], utterance[1], fmt)
    try:
        audio = load_audio(path)
    except UserError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
    else:
        assert audio.dtype == np.float32 and np.all(np.isfinite(audio))


def test_resampling_and_downmixing_keep_duration_and_content(utterance, tmp_path):
    import soxr

    samples, rate, _ = utterance
    stereo = np.stack([samples, -samples * 0.0 + samples], axis=1)
    for target_rate in (8000, 22050, 44100):
        resampled = soxr.resample(stereo, rate, target_rate)
        path = _write(tmp_path / f"s{target_rate}.wav", resampled, target_rate, subtype="PCM_24")
        audio = load_audio(path, 16000)
        assert abs(len(audio) - len(samples)) <= 16000 * 0.002
        if target_rate > 16000:  # nothing of the 16 kHz band was lost: the same waveform back
            n = min(len(audio), len(samples))
            assert np.max(np.abs(audio[:n] - samples[:n])) < 0.02
