"""bench/gpu/seeded_weights.py: a random-weight directory stripped to seeds and regenerated is a valid model directory,
the same bytes every time, with the scale of the original tensors. The GPU run's figures rest on this."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "gpu"))

pytestmark = pytest.mark.nemo


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory) -> Path:
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT

    target = tmp_path_factory.mktemp("seeded") / "random"
    return convert(ConvertOptions(source="tiny-tdt-en", output=target, random_weights=True,
                                  precisions=("fp32", "int8")), SILENT).output


def test_strip_then_restore_gives_a_valid_identical_directory(random_dir, tmp_path, signal):
    import onnx
    from seeded_weights import restore, strip

    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_runner import make_recognizer, transcribe

    spec = strip(random_dir, tmp_path / "stripped", min_elements=1024)
    stripped_bytes = sum(p.stat().st_size for p in (tmp_path / "stripped").iterdir())
    original_bytes = sum(p.stat().st_size for p in random_dir.iterdir())
    assert spec["tensors"] and stripped_bytes < original_bytes
    dtypes = {e["dtype"] for e in spec["tensors"]}
    assert "float32" in dtypes and dtypes & {"int8", "uint8"}  # the int8 variant's 8-bit weights too

    first = restore(tmp_path / "stripped", tmp_path / "one")
    second = restore(tmp_path / "stripped", tmp_path / "two")
    first.pop("seconds"), second.pop("seconds")
    assert first == second  # the same seeds give the same bytes
    check, model_spec = check_contract(open_model_dir(tmp_path / "one"))
    assert check.status == "passed", check.problems  # hashes rewritten, every external tensor inside its file

    # each regenerated tensor has its original's scale and range
    entry = max((e for e in spec["tensors"] if e["dtype"] == "float32" and e["std"] > 0), key=lambda e: e["length"])
    with open(tmp_path / "one" / entry["file"], "rb") as stream:
        stream.seek(entry["offset"])
        values = np.fromfile(stream, dtype=np.float32, count=entry["length"] // 4)
    assert abs(values.std() - entry["std"]) < 0.1 * entry["std"]
    assert values.min() >= entry["min"] and values.max() <= entry["max"]
    quantized = next(e for e in spec["tensors"] if e["dtype"] in ("int8", "uint8"))
    graph = onnx.load(str(tmp_path / "one" / quantized["graph"]), load_external_data=False)
    assert any(t.name == quantized["name"] for t in graph.graph.initializer)

    recognizer = make_recognizer(open_model_dir(tmp_path / "one"), feature_dim=model_spec.feat_dim)
    transcribe(recognizer, signal)  # sherpa-onnx loads the external weights and decodes without error
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert manifest["random_weights"] is True and "seeded_weights" in manifest["export"]


def test_strip_refuses_trained_weights(fixture_dir, tmp_path):
    from seeded_weights import strip

    with pytest.raises(SystemExit, match="not a random-weight export"):
        strip(fixture_dir, tmp_path / "stripped")
