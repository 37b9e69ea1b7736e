"""Shared by the int8 and fp16 passes: read a written float32 graph tensor by tensor, rewrite its nodes, and write
the result with the same writer as the fp32 graphs (graphs.writing.write_graph: metadata, one external-data file only
when the weights reach the threshold, 0644, hashed while written).

Memory: the graph is loaded without its weights (the structure of a 1.1B encoder is about 1.5 MB); an external
tensor is read from the fp32 `.weights` file only when the writer reaches it, converted, written and dropped. A
variant therefore holds one tensor at a time beyond what it keeps inline (an int8 encoder is inline: about 1 GB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from nemo2sherpa.graphs.graph import LazyTensor, OnnxGraph
from nemo2sherpa.graphs.tensors import external_array, graph_tensors

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16


class SourceGraph:
    """A float32 graph of the model directory, its tensors readable one at a time."""

    def __init__(self, path: Path) -> None:
        import onnx

        self.path = Path(path)
        self.model = onnx.load(str(self.path), load_external_data=False)
        self._files: dict[str, Any] = {}
        self.initializers = {t.name: t for t in self.model.graph.initializer}

    def array(self, tensor) -> np.ndarray:
        """The tensor's values, read from the external file into a fresh array (no memory map: mapped pages of a
        4 GB weights file would count as this process's memory while the variant is written)."""
        from onnx import external_data_helper, numpy_helper

        if not external_data_helper.uses_external_data(tensor):
            return numpy_helper.to_array(tensor)
        return external_array(tensor, self._handle(external_data_helper.ExternalDataInfo(tensor).location))

    def _handle(self, location: str):
        if location not in self._files:
            self._files[location] = open(self.path.parent / location, "rb")
        return self._files[location]

    def tensor_nbytes(self, tensor) -> int:
        from onnx import helper

        count = int(np.prod(tensor.dims)) if len(tensor.dims) else 1
        return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __enter__(self) -> "SourceGraph":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def placeholder(name: str, data_type: int, dims: Iterable[int]):
    """An initializer without data: the writer fills it from OnnxGraph.tensors."""
    from onnx import TensorProto

    tensor = TensorProto()
    tensor.name = name
    tensor.data_type = data_type
    tensor.dims.extend(int(d) for d in dims)
    return tensor


def detached(tensor):
    """A copy of a tensor's description (its external-data reference included), safe from later edits."""
    from onnx import TensorProto

    copy = TensorProto()
    copy.CopyFrom(tensor)
    return copy


def copy_source_tensors(source: SourceGraph, model, tensors: dict[str, Any]) -> None:
    """Every tensor of `model` still stored in the source's external file is read from there when written."""
    from onnx import external_data_helper

    for tensor in graph_tensors(model.graph):
        if tensor.name in tensors or not external_data_helper.uses_external_data(tensor):
            continue
        original = detached(tensor)

        def compute(t=original) -> np.ndarray:
            return np.array(source.array(t))

        tensors[tensor.name] = LazyTensor(source.tensor_nbytes(tensor), compute)
        del tensor.external_data[:]  # keep dims and type; the data comes from `tensors`
        tensor.data_location = 0


def write_rewritten(model, tensors: dict[str, Any], source: SourceGraph, target: Path,
                    external_threshold: int | None = None) -> dict[str, str]:
    """Write the rewritten `model` with the fp32 writer: its new tensors from `tensors`, the rest read from the
    source's external file as the writer reaches them, the source's metadata kept, the default external-data
    threshold unless told otherwise; returns {file name: sha256} of what it wrote."""
    from nemo2sherpa.graphs.writing import DEFAULT_EXTERNAL_THRESHOLD, write_graph

    copy_source_tensors(source, model, tensors)
    written = write_graph(OnnxGraph(model=model, tensors=tensors), target, metadata=metadata_of(source.model) or None,
                          external_threshold=external_threshold or DEFAULT_EXTERNAL_THRESHOLD)
    return dict(written.sha256)


def replace_nodes(graph, nodes: list, new_initializers: list, keep: Iterable[str] = ()) -> None:
    """The graph's nodes become `nodes`; `new_initializers` join its initializers and those nothing reads any more
    (besides the names in `keep`, such as graph outputs) are dropped; stale value_info (types of replaced tensors)
    goes, to be inferred again by whoever loads the graph."""
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_initializers)
    used = {i for n in graph.node for i in n.input} | set(keep)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]


def metadata_of(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def tensor_types(model) -> dict[str, int]:
    """Element type of every tensor the graph names (inputs, outputs, initializers, node outputs), by shape
    inference on the structure alone (external data is not read)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    types: dict[str, int] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    for tensor in graph.initializer:
        types[tensor.name] = tensor.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    types[node.output[0]] = attribute.t.data_type
    # onnx's inference stops at ops it does not know (onnxruntime's contrib ops, e.g. MultiHeadAttention) and at
    # everything downstream of them: fill the gaps in graph order.
    for node in graph.node:
        for position, output in enumerate(node.output):
            if output and output not in types:
                inferred = _output_type(node, position, types)
                if inferred is not None:
                    types[output] = inferred
    return types


_BOOL_OPS = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf"}
_INT64_OPS = {"Shape", "Size", "ArgMax", "ArgMin", "NonZero", "TopK"}


def _output_type(node, position: int, types: dict[str, int]) -> int | None:
    from onnx import TensorProto, helper

    if node.op_type == "Cast":
        return next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == "to"), None)
    if node.op_type in _BOOL_OPS:
        return TensorProto.BOOL
    if node.op_type in _INT64_OPS and not (node.op_type == "TopK" and position == 0):
        return TensorProto.INT64
    if node.op_type == "Where":
        candidates = node.input[1:]
    elif node.op_type == "DynamicQuantizeLinear":
        return (TensorProto.UINT8, TensorProto.FLOAT, TensorProto.UINT8)[position]
    else:
        candidates = node.input
    return next((types[i] for i in candidates if i and i in types), None)


def unique_name(taken: set[str], wanted: str) -> str:
    name, index = wanted, 1
    while name in taken:
        name = f"{wanted}_{index}"
        index += 1
    taken.add(name)
    return name


def all_names(model) -> set[str]:
    names = {t.name for t in model.graph.initializer} | {i.name for i in model.graph.input}
    for node in model.graph.node:
        names.update(node.output)
        if node.name:
            names.add(node.name)
    return names
