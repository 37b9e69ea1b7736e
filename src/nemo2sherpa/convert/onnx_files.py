"""Write an exported graph into the model directory: metadata set, weights inline or in ONE external-data file,
files readable by everyone.

The TorchScript exporter writes one file per tensor once a model passes protobuf's 2 GiB limit (640 files for the
1.1B encoder). Here the graph is read without its weights and every tensor is streamed, one at a time, into a single
'<graph>.weights' file beside it: memory stays at one tensor, and users get two files instead of hundreds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Mapping

PROTOBUF_LIMIT = 2**31
# Weights above this go to external data; what stays inline (graph structure, constants) must fit under the limit.
DEFAULT_EXTERNAL_THRESHOLD = 2_000_000_000
INLINE_TENSOR_BYTES = 1024  # tensors smaller than this stay in the graph, as onnx's own writer does
ALIGNMENT = 4096  # page-aligned tensors can be memory-mapped by onnxruntime
FILE_MODE = 0o644


def _tensor_bytes(tensor, base: Path) -> bytes:
    """The tensor's data, wherever the exporter put it."""
    from onnx import external_data_helper, numpy_helper

    if external_data_helper.uses_external_data(tensor):
        info = external_data_helper.ExternalDataInfo(tensor)
        with open(base / info.location, "rb") as stream:
            stream.seek(info.offset or 0)
            return stream.read(info.length) if info.length else stream.read()
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.to_array(tensor).tobytes()


def _tensor_size(tensor) -> int:
    from onnx import external_data_helper, helper

    if external_data_helper.uses_external_data(tensor):
        info = external_data_helper.ExternalDataInfo(tensor)
        if info.length:
            return int(info.length)
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _make_inline(tensor, data: bytes) -> None:
    from onnx import TensorProto

    _clear_typed_fields(tensor)
    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT
    tensor.raw_data = data


def _make_external(tensor, location: str, offset: int, length: int) -> None:
    from onnx import TensorProto

    _clear_typed_fields(tensor)
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = TensorProto.EXTERNAL


def _clear_typed_fields(tensor) -> None:
    for name in ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data"):
        tensor.ClearField(name)


def _graph_tensors(graph) -> Iterator:
    """Initializers and tensor-valued node attributes (Constant values), subgraphs included: the exporter spills
    both to external files once a model is large."""
    from onnx import AttributeProto

    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR:
                yield attribute.t
            elif attribute.type == AttributeProto.TENSORS:
                yield from attribute.tensors
            elif attribute.type == AttributeProto.GRAPH:
                yield from _graph_tensors(attribute.g)
            elif attribute.type == AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _graph_tensors(subgraph)


def set_metadata(model, metadata: Mapping[str, str]) -> None:
    """Replace the graph's metadata with exactly these keys."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)


def write_graph(
    exported: Path,
    target: Path,
    metadata: Mapping[str, str] | None = None,
    external_threshold: int = DEFAULT_EXTERNAL_THRESHOLD,
) -> list[Path]:
    """Copy the exported graph to `target` (+ `<stem>.weights` when large), returning the files written."""
    import onnx

    model = onnx.load(str(exported), load_external_data=False)
    if metadata is not None:
        set_metadata(model, metadata)
    base = exported.parent
    tensors = [t for t in _graph_tensors(model.graph) if t.data_type != onnx.TensorProto.STRING]
    total = sum(_tensor_size(t) for t in tensors)
    written = [target]
    if total >= external_threshold:
        weights = target.with_suffix(".weights")
        with open(weights, "wb") as out:
            for tensor in tensors:
                data = _tensor_bytes(tensor, base)
                if len(data) < INLINE_TENSOR_BYTES:
                    _make_inline(tensor, data)
                    continue
                padding = -out.tell() % ALIGNMENT
                if padding:
                    out.write(b"\0" * padding)
                offset = out.tell()
                out.write(data)
                _make_external(tensor, weights.name, offset, len(data))
                del data
        written.append(weights)
    else:
        for tensor in tensors:
            if onnx.external_data_helper.uses_external_data(tensor):
                _make_inline(tensor, _tensor_bytes(tensor, base))
    if model.ByteSize() >= PROTOBUF_LIMIT:
        raise RuntimeError(f"{target.name}: the graph without its weights still exceeds 2 GiB")
    with open(target, "wb") as out:
        out.write(model.SerializeToString())
    for path in written:
        os.chmod(path, FILE_MODE)
    return written
