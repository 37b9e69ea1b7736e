"""write_graph on a hand-built graph: every large tensor - initializers and Constant node values alike - goes into the
one aligned weights file, small ones stay inline, and onnxruntime computes the same result from the written files."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import uses_external_data

from nemo2sherpa.graphs.graph import OnnxGraph
from nemo2sherpa.graphs.weights_file import ALIGNMENT
from nemo2sherpa.graphs.writing import write_graph


def _graph_with_a_large_constant(tmp_path) -> tuple[OnnxGraph, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 64)).astype(np.float32)  # 16 KiB initializer, captured
    table = rng.standard_normal((64,)).astype(np.float32)  # 256 B: stays inline
    constant = rng.standard_normal((16, 64)).astype(np.float32)  # 4 KiB Constant node value
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(constant, "c_value")),
        helper.make_node("MatMul", ["x", "w"], ["y0"]),
        helper.make_node("Add", ["y0", "c"], ["y1"]),
        helper.make_node("Add", ["y1", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 64])],
        initializer=[numpy_helper.from_array(np.zeros_like(weight), "w"), numpy_helper.from_array(table, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.graph.initializer[0].ClearField("raw_data")  # its data is held captured, as lean_export leaves it
    return OnnxGraph(model=model, source=tmp_path / "exported.onnx", tensors={"w": weight}), weight, constant, table


def test_constants_and_initializers_share_one_aligned_weights_file(tmp_path):
    import onnxruntime as ort

    exported, weight, constant, table = _graph_with_a_large_constant(tmp_path)
    written = write_graph(exported, tmp_path / "encoder.onnx", metadata={"model_type": "x"}, external_threshold=0)
    assert [p.name for p in written.files] == ["encoder.onnx", "encoder.weights"]
    weights = (tmp_path / "encoder.weights").read_bytes()
    assert written.sha256["encoder.weights"] == hashlib.sha256(weights).hexdigest()

    model = onnx.load(str(tmp_path / "encoder.onnx"), load_external_data=False)
    value = next(a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR)
    assert uses_external_data(value), "a large Constant value belongs in the weights file"
    initializers = {t.name: t for t in model.graph.initializer}
    assert uses_external_data(initializers["w"]) and not uses_external_data(initializers["b"])
    for tensor in (value, initializers["w"]):
        entries = {e.key: e.value for e in tensor.external_data}
        assert entries["location"] == "encoder.weights" and int(entries.get("offset", 0)) % ALIGNMENT == 0

    x = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ weight + constant + table, rtol=1e-5, atol=1e-5)


def test_below_the_threshold_everything_is_inline(tmp_path):
    import onnxruntime as ort

    exported, weight, constant, table = _graph_with_a_large_constant(tmp_path)
    written = write_graph(exported, tmp_path / "joiner.onnx")
    assert [p.name for p in written.files] == ["joiner.onnx"] and not (tmp_path / "joiner.weights").exists()
    x = np.ones((16, 64), dtype=np.float32)
    session = ort.InferenceSession(str(tmp_path / "joiner.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ weight + constant + table, rtol=1e-5, atol=1e-5)


def _run(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_weights_written_ahead_are_referenced_where_they_lie(tmp_path):
    """The captured array was written before write_graph ran: the graph points at it, the rest is appended."""
    from helpers import dead_bytes
    from nemo2sherpa.graphs.weights_ahead import WeightsAhead

    exported, weight, constant, table = _graph_with_a_large_constant(tmp_path)
    ahead = WeightsAhead(tmp_path / "encoder.weights")
    ahead.add(weight)
    written = write_graph(exported, tmp_path / "encoder.onnx", external_threshold=0, ahead=ahead)
    assert written.written_ahead == weight.nbytes
    data = (tmp_path / "encoder.weights").read_bytes()
    assert written.sha256["encoder.weights"] == hashlib.sha256(data).hexdigest()
    model = onnx.load(str(tmp_path / "encoder.onnx"), load_external_data=False)
    w = next(t for t in model.graph.initializer if t.name == "w")
    assert {e.key: e.value for e in w.external_data}.get("offset", "0") == "0"  # first in the file: written ahead
    constants = [a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    assert dead_bytes(tmp_path / "encoder.weights", [*model.graph.initializer, *constants]) == 0
    x = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
    np.testing.assert_allclose(_run(tmp_path / "encoder.onnx", x), x @ weight + constant + table, rtol=1e-5, atol=1e-5)


def test_a_weight_written_ahead_that_the_graph_lost_makes_the_file_be_written_anew(tmp_path):
    """The exporter may fold or merge a queued weight: the file must not keep its dead bytes."""
    from helpers import dead_bytes
    from nemo2sherpa.graphs.weights_ahead import WeightsAhead

    exported, weight, constant, table = _graph_with_a_large_constant(tmp_path)
    ahead = WeightsAhead(tmp_path / "encoder.weights")
    ahead.add(np.ones((256, 256), dtype=np.float32))  # 256 KiB no tensor of the graph is
    ahead.add(weight)
    written = write_graph(exported, tmp_path / "encoder.onnx", external_threshold=0, ahead=ahead)
    assert written.written_ahead == 0
    size = (tmp_path / "encoder.weights").stat().st_size
    assert size < 256 * 1024
    model = onnx.load(str(tmp_path / "encoder.onnx"), load_external_data=False)
    constants = [a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    assert dead_bytes(tmp_path / "encoder.weights", [*model.graph.initializer, *constants]) == 0
    assert written.sha256["encoder.weights"] == hashlib.sha256((tmp_path / "encoder.weights").read_bytes()).hexdigest()
    x = np.random.default_rng(2).standard_normal((16, 64)).astype(np.float32)
    np.testing.assert_allclose(_run(tmp_path / "encoder.onnx", x), x @ weight + constant + table, rtol=1e-5, atol=1e-5)


def test_cancelled_weights_ahead_leave_no_file(tmp_path):
    from nemo2sherpa.graphs.weights_ahead import WeightsAhead

    ahead = WeightsAhead(tmp_path / "encoder.weights")
    for _ in range(8):
        ahead.add(np.zeros(2**20, dtype=np.float32))
    ahead.cancel()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_ahead_is_raised_by_finish(tmp_path):
    """A write that fails in the background thread (here: a closed file, as a full disk would) reaches the caller."""
    from nemo2sherpa.graphs.weights_ahead import WeightsAhead

    ahead = WeightsAhead(tmp_path / "encoder.weights")
    ahead._file._out.close()
    ahead.add(np.zeros(4096, dtype=np.float32))
    try:
        ahead.finish()
    except ValueError as exc:
        assert "closed file" in str(exc)
    else:
        raise AssertionError("finish() returned although the write failed")
    assert not (tmp_path / "encoder.weights").exists()
