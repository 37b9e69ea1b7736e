"""Shared fixtures: small checkpoints built locally once per session, and their conversions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nemo2sherpa.recipes import find_recipe

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI sets it; see nemo2sherpa.cli.main
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class Built:
    name: str
    checkpoint: Path
    architecture: object


# name -> changes to the tiny architecture
KINDS = {
    "tdt-80": {},
    "tdt-128": {"mels": 128},
    "rnnt-80": {"durations": ()},
    "hybrid-tdt-80": {"model_class": "EncDecHybridRNNTCTCBPEModel"},
}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Built]:
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    from nemo2sherpa.testing.checkpoints import build_checkpoint, variant

    root = tmp_path_factory.mktemp("checkpoints")
    built = {}
    for index, (name, changes) in enumerate(KINDS.items()):
        architecture = variant(**changes)
        built[name] = Built(name, build_checkpoint(root / f"{name}.nemo", architecture, seed=index), architecture)
    return built


@pytest.fixture(scope="session")
def converted(checkpoints, tmp_path_factory) -> dict[str, Path]:
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT

    root = tmp_path_factory.mktemp("converted")
    return {
        name: convert(ConvertOptions(source=str(b.checkpoint), output=root / name), SILENT).output
        for name, b in checkpoints.items()
    }


def speechlike_signal(seconds: float = 3.0, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like test signal: gliding harmonics with pauses, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 120 + 60 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = (np.sin(2 * np.pi * 1.3 * t) > -0.3).astype(np.float64)
    return (0.2 * voiced * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="session")
def signal() -> np.ndarray:
    return speechlike_signal()


@pytest.fixture(scope="session")
def fixture_recipe():
    return find_recipe("tiny-tdt-en")


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory, fixture_recipe) -> Path:
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT

    return convert(ConvertOptions(source="tiny-tdt-en", output=tmp_path_factory.mktemp("fixture") / "tiny"),
                   SILENT).output


@pytest.fixture(scope="session")
def validated(fixture_dir, tmp_path_factory):
    """One full validation of the fixture directory (CPU), shared by the tests that read its report."""
    from nemo2sherpa.progress import SILENT
    from nemo2sherpa.validate.pipeline import ValidateOptions, validate

    return validate(ValidateOptions(directory=fixture_dir, speed_lengths=(2.0, 5.0), repeats=1), SILENT)
