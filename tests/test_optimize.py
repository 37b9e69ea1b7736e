"""The encoder graph optimisation (convert/passes/optimize*.py): applied by default, recorded in the manifest, the same
function as the unoptimised graph (outputs within 1e-4, identical sherpa-onnx transcripts), each rewrite doing what
it claims, and no weight copied."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import KINDS
from nemo2sherpa.convert.passes.optimize import REWRITES
from nemo2sherpa.families.common import make_session

pytestmark = pytest.mark.nemo
TOLERANCE = 1e-4


def _graph(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False)


def _ops(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in _graph(path).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _encoder_outputs(path: Path, mels: int, cases) -> list[list[np.ndarray]]:
    session = make_session(path)
    names = [i.name for i in session.get_inputs()]
    results = []
    for seed, (frames, lengths) in enumerate(cases):
        rng = np.random.default_rng(seed)
        features = rng.standard_normal((len(lengths), mels, frames)).astype(np.float32)
        results.append(session.run(None, {names[0]: features, names[1]: np.array(lengths, dtype=np.int64)}))
    return results


# (frames, lengths): very short (one and two encoder frames), odd lengths, and a padded batch
CASES = [(9, [9]), (17, [17]), (97, [97]), (411, [411]), (300, [300, 211, 57])]


def _assert_same_outputs(plain: Path, optimised: Path, mels: int) -> None:
    """Same lengths, same shapes, and every frame within TOLERANCE (padding included: the rewrite keeps NeMo's
    zeroing of rows with nothing to attend to), on every case."""
    for (frames, lengths), want, have in zip(CASES, _encoder_outputs(plain, mels, CASES),
                                             _encoder_outputs(optimised, mels, CASES)):
        np.testing.assert_array_equal(want[1], have[1])
        assert want[0].shape == have[0].shape
        assert np.max(np.abs(want[0] - have[0])) <= TOLERANCE, (frames, lengths)


@pytest.fixture(scope="session")
def unoptimised(checkpoints, tmp_path_factory) -> dict[str, Path]:
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT

    root = tmp_path_factory.mktemp("unoptimised")
    return {name: convert(ConvertOptions(source=str(b.checkpoint), output=root / name, optimize=False), SILENT).output
            for name, b in checkpoints.items()}


@pytest.fixture(scope="session")
def unbiased(tmp_path_factory) -> dict[str, Path]:
    """Two layers, attention without biases, xscaling on, and a limited attention context (a banded mask): the
    other branches of the patterns."""
    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT
    from nemo2sherpa.testing.checkpoints import build_checkpoint, variant

    root = tmp_path_factory.mktemp("unbiased")
    checkpoint = build_checkpoint(root / "unbiased.nemo", variant(use_bias=False, encoder_layers=2, xscaling=True,
                                                                   att_context_size=(4, 2)),
                                  seed=7)
    return {optimize: convert(ConvertOptions(source=str(checkpoint), output=root / str(optimize), optimize=optimize),
                              SILENT).output for optimize in (True, False)}


@pytest.mark.parametrize("kind", list(KINDS))
def test_convert_optimises_by_default_and_records_it(converted, unoptimised, checkpoints, kind):
    layers = checkpoints[kind].architecture.encoder_layers
    export = json.loads((converted[kind] / "manifest.json").read_text())["export"]
    assert export["optimizations"] == [{"name": name, "count": layers} for name in REWRITES]
    assert json.loads((unoptimised[kind] / "manifest.json").read_text())["export"]["optimizations"] == []
    graph = _graph(converted[kind] / "encoder.onnx")
    assert any(o.domain == "com.microsoft" for o in graph.opset_import)
    assert not any(n.domain == "com.microsoft" for n in _graph(unoptimised[kind] / "encoder.onnx").graph.node)


@pytest.mark.parametrize("kind", list(KINDS))
def test_encoder_outputs_equal_the_unoptimised_graph(converted, unoptimised, checkpoints, kind):
    _assert_same_outputs(unoptimised[kind] / "encoder.onnx", converted[kind] / "encoder.onnx",
                         checkpoints[kind].architecture.mels)


def test_patterns_without_biases_with_two_layers_and_a_banded_mask(unbiased):
    export = json.loads((unbiased[True] / "manifest.json").read_text())["export"]
    assert export["optimizations"] == [{"name": name, "count": 2} for name in REWRITES]
    _assert_same_outputs(unbiased[False] / "encoder.onnx", unbiased[True] / "encoder.onnx", 80)


def test_each_rewrite_removes_what_it_claims(converted, unoptimised, checkpoints):
    kind = "tdt-80"
    layers = checkpoints[kind].architecture.encoder_layers
    width = checkpoints[kind].architecture.d_model
    before, after = _ops(unoptimised[kind] / "encoder.onnx"), _ops(converted[kind] / "encoder.onnx")
    # fused_attention: softmax and both masked_fill (Where) of every layer go into MultiHeadAttention
    assert after.get("MultiHeadAttention") == layers
    assert before.get("Softmax") == layers and "Softmax" not in after
    assert after.get("Where", 0) <= before["Where"] - 2 * layers
    # fast_rel_shift: no Pad left on the attention path (the convolution module keeps its own)
    assert after.get("Pad", 0) == before["Pad"] - layers
    # halved_linear_pos: each [d, d] projection of the positions became two [d/2, d] halves
    graph = _graph(converted[kind] / "encoder.onnx")
    shapes = {t.name: list(t.dims) for t in graph.graph.initializer}
    halves = [name for name in shapes if "linear_pos" in name]
    assert len(halves) == 2 * layers and all(shapes[name] == [width // 2, width] for name in halves)
    assert sum(after.values()) < sum(before.values())


def test_sherpa_onnx_transcripts_are_identical(fixture_dir, fixture_recipe, tmp_path):
    """The trained fixture, optimised (the default) and not: sherpa-onnx gives the same tokens on every utterance."""
    import soundfile as sf

    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import SILENT
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_runner import make_recognizer, transcribe

    plain = convert(ConvertOptions(source="tiny-tdt-en", output=tmp_path / "plain", optimize=False), SILENT).output
    assert json.loads((fixture_dir / "manifest.json").read_text())["export"]["optimizations"]
    dataset = fixture_recipe.dataset_path()
    clips = [json.loads(line) for line in dataset.read_text().splitlines() if line.strip()]
    audio = [sf.read(str(dataset.parent / clip["audio"]), dtype="float32")[0] for clip in clips]
    audio.append(np.concatenate(audio))  # a long one too
    results = {}
    for name, directory in (("optimised", fixture_dir), ("plain", plain)):
        recognizer = make_recognizer(open_model_dir(directory), threads=1)
        results[name] = [transcribe(recognizer, samples).tokens for samples in audio]
    assert results["optimised"] == results["plain"]
    assert sum(len(tokens) for tokens in results["plain"]) > 0


def test_optimize_encoder_copies_no_weight_and_is_idempotent(checkpoints, tmp_path):
    """In memory: every weight the rewrite keeps is the export's own array (or a view of it); new arrays are
    small constants. A second pass finds nothing left to do."""
    from nemo2sherpa.checkpoint.loading import random_model
    from nemo2sherpa.convert.export.graphs import export_graphs
    from nemo2sherpa.convert.passes.optimize import optimize_encoder
    from nemo2sherpa.families import TRANSDUCER

    model = random_model(checkpoints["tdt-80"].architecture, tmp_path / "model", seed=3)
    encoder = export_graphs(TRANSDUCER, {"encoder": model.encoder}, tmp_path / "export")["encoder"]
    originals = list(encoder.tensors.values())
    encoder, info = optimize_encoder(encoder)
    assert [o["name"] for o in info["optimizations"]] == list(REWRITES)

    def shares(array: np.ndarray) -> bool:
        return any(np.shares_memory(array, original) for original in originals)

    new_bytes = sum(a.nbytes for a in encoder.tensors.values() if not shares(a))
    kept_bytes = sum(a.nbytes for a in encoder.tensors.values() if shares(a))
    assert new_bytes < 0.02 * kept_bytes, (new_bytes, kept_bytes)
    names = {t.name for t in encoder.model.graph.initializer}
    assert set(encoder.tensors) <= names  # the dict holds exactly what the graph still uses
    nodes = len(encoder.model.graph.node)
    encoder, again = optimize_encoder(encoder)
    assert again["optimizations"] == [] and len(encoder.model.graph.node) == nodes


def test_table_positions_as_nemo_exports_them(checkpoints, tmp_path):
    """NeMo's own export slices a position table instead of computing the sinusoids: halved too, same outputs."""
    from nemo2sherpa.checkpoint.loading import random_model
    from nemo2sherpa.convert.export.graphs import export_graphs
    from nemo2sherpa.convert.passes.optimize import optimize_encoder
    from nemo2sherpa.families import TRANSDUCER
    from nemo2sherpa.graphs.writing import write_graph

    model = random_model(checkpoints["tdt-80"].architecture, tmp_path / "model", seed=5)
    exported = export_graphs(TRANSDUCER, {"encoder": model.encoder}, tmp_path / "a")["encoder"]
    plain = write_graph(exported, tmp_path / "plain.onnx").files[0]
    assert any(n.op_type == "Slice" and n.name.startswith("/pos_enc") for n in _graph(plain).graph.node)
    encoder, info = optimize_encoder(export_graphs(TRANSDUCER, {"encoder": model.encoder}, tmp_path / "b")["encoder"])
    assert [o["name"] for o in info["optimizations"]] == list(REWRITES)
    optimised = write_graph(encoder, tmp_path / "optimised.onnx").files[0]
    _assert_same_outputs(plain, optimised, 80)


def test_a_rewrite_that_fails_leaves_the_export_as_it_was(checkpoints, tmp_path, monkeypatch):
    """A bug in a rewrite costs the speed-up, not the conversion: the graph and its weights are restored."""
    from nemo2sherpa.checkpoint.loading import random_model
    from nemo2sherpa.convert.export.graphs import export_graphs
    from nemo2sherpa.convert.passes import optimize
    from nemo2sherpa.families import TRANSDUCER

    model = random_model(checkpoints["tdt-80"].architecture, tmp_path / "model", seed=3)
    encoder = export_graphs(TRANSDUCER, {"encoder": model.encoder}, tmp_path / "export")["encoder"]
    before, names = encoder.model.SerializeToString(), set(encoder.tensors)
    fuse = optimize._REWRITES["fused_attention"]

    def broken(editor):
        fuse(editor)  # edits the graph, then fails
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(optimize, "_REWRITES", {"fused_attention": broken})
    encoder, info = optimize.optimize_encoder(encoder)
    assert info == {"optimizations": [], "optimization_failed": "RuntimeError: simulated bug"}
    assert encoder.model.SerializeToString() == before and set(encoder.tensors) == names
