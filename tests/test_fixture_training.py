"""The bundled trained fixture is reproducible: the training script, run from scratch, reaches a model that NeMo
transcribes exactly on every training utterance (the script checks that itself and fails loudly otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nemo2sherpa.validate.synth import espeak_available

pytestmark = [pytest.mark.nemo, pytest.mark.slow]


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed: the fixture is trained on its speech")
def test_training_the_fixture_from_scratch_reaches_exact_transcripts(tmp_path, fixture_recipe):
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    done = subprocess.run([sys.executable, "-m", "nemo2sherpa.testing.train_fixture", "--out", str(tmp_path / "fx")],
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    produced = [json.loads(line) for line in (tmp_path / "fx" / "dataset.jsonl").read_text().splitlines()]
    shipped = [json.loads(line) for line in fixture_recipe.dataset_path().read_text().splitlines()]
    assert [entry["text"] for entry in produced] == [entry["text"] for entry in shipped]
    assert (tmp_path / "fx" / "model.nemo").stat().st_size < 2_000_000
