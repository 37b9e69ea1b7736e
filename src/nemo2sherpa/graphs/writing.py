"""Write an exported graph into the model directory: metadata set, weights inline or in ONE external-data file,
files readable by everyone, the weights hashed as they are written.

Each tensor is written once, straight into '<graph>.weights' (page-aligned, so onnxruntime can map it), from wherever
the export left it: the captured parameter arrays (see lean.py), or the exporter's own files when the capture
was not available. Memory holds one tensor at a time beyond what the caller already has.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from nemo2sherpa.graphs.graph import OnnxGraph
from nemo2sherpa.graphs.tensors import graph_tensors
from nemo2sherpa.graphs.weights_ahead import ArrayIdentity, WeightsAhead, array_identity
from nemo2sherpa.graphs.weights_file import WeightsFile

PROTOBUF_LIMIT = 2**31
# Weights above this go to external data; what stays inline (graph structure, constants) must fit under the limit.
DEFAULT_EXTERNAL_THRESHOLD = 2_000_000_000
INLINE_TENSOR_BYTES = 1024  # tensors smaller than this stay in the graph, as onnx's own writer does
FILE_MODE = 0o644


@dataclass
class WrittenGraph:
    files: list[Path]
    sha256: dict[str, str] = field(default_factory=dict)  # hashes computed while writing, by file name
    written_ahead: int = 0  # bytes of the weights file written while the graph was still being exported


def _tensor_bytes(tensor, graph: OnnxGraph) -> bytes | memoryview:
    """The tensor's data, wherever the export put it."""
    from onnx import external_data_helper, numpy_helper

    if tensor.name in graph.tensors and not tensor.HasField("raw_data"):
        array = np.ascontiguousarray(graph.tensors[tensor.name])
        return memoryview(array).cast("B")
    if external_data_helper.uses_external_data(tensor):
        info = external_data_helper.ExternalDataInfo(tensor)
        with open(graph.source.parent / info.location, "rb") as stream:
            stream.seek(info.offset or 0)
            return stream.read(info.length) if info.length else stream.read()
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.to_array(tensor).tobytes()


def _tensor_size(tensor, graph: OnnxGraph) -> int:
    from onnx import external_data_helper, helper

    if tensor.name in graph.tensors and not tensor.HasField("raw_data"):
        return int(graph.tensors[tensor.name].nbytes)
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


def _make_inline(tensor, data: bytes | memoryview) -> None:
    from onnx import TensorProto

    _clear_typed_fields(tensor)
    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT
    tensor.raw_data = bytes(data)


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


def set_metadata(model, metadata: Mapping[str, str]) -> None:
    """Replace the graph's metadata with exactly these keys."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)


def write_graph(
    graph: OnnxGraph,
    target: Path,
    metadata: Mapping[str, str] | None = None,
    external_threshold: int = DEFAULT_EXTERNAL_THRESHOLD,
    ahead: WeightsAhead | None = None,
) -> WrittenGraph:
    """Write `target` (+ `<stem>.weights` when the weights reach the threshold).

    `ahead`: the weights file already being written while the graph was exported (weights_ahead); the tensors it
    holds are referenced where they lie and the rest appended. Were some of its tensors no longer in the graph (the
    exporter folded or deduplicated them), the file would carry dead bytes: it is discarded and written anew."""
    import onnx

    model = graph.model
    if metadata is not None:
        set_metadata(model, metadata)
    tensors = [t for t in graph_tensors(model.graph) if t.data_type != onnx.TensorProto.STRING]
    written = WrittenGraph(files=[target])
    weights = target.with_suffix(".weights")
    placed: dict[ArrayIdentity, tuple[int, int]] = {}
    weights_file: WeightsFile | None = None
    if ahead is not None:
        weights_file, placed = ahead.finish()
        if not _all_referenced(placed, tensors, graph):
            weights_file.discard()
            ahead.release()
            weights_file, placed = None, {}
    if weights_file is None and sum(_tensor_size(t, graph) for t in tensors) >= external_threshold:
        weights_file = WeightsFile(weights)
    if weights_file is not None:
        written.written_ahead = weights_file.size if placed else 0
        try:
            for tensor in tensors:
                where = placed.get(_captured_identity(tensor, graph)) if placed else None
                if where is not None:
                    _make_external(tensor, weights.name, *where)
                    continue
                data = _tensor_bytes(tensor, graph)
                if len(data) < INLINE_TENSOR_BYTES:
                    _make_inline(tensor, data)
                    continue
                _make_external(tensor, weights.name, weights_file.append(data), len(data))
        except BaseException:
            weights_file.discard()
            raise
        finally:
            if placed and ahead is not None:
                ahead.release()  # every tensor is matched: the arrays written ahead need not be held any more
        written.files.append(weights)
        written.sha256[weights.name] = weights_file.close()
    else:
        for tensor in tensors:
            if tensor.name in graph.tensors or onnx.external_data_helper.uses_external_data(tensor):
                _make_inline(tensor, _tensor_bytes(tensor, graph))
    if model.ByteSize() >= PROTOBUF_LIMIT:
        raise RuntimeError(f"{target.name}: the graph without its weights still exceeds 2 GiB")
    serialized = model.SerializeToString()
    with open(target, "wb") as out:
        out.write(serialized)
    written.sha256[target.name] = hashlib.sha256(serialized).hexdigest()
    for path in written.files:
        os.chmod(path, FILE_MODE)
    return written


def _captured_identity(tensor, graph: OnnxGraph) -> ArrayIdentity | None:
    if tensor.name not in graph.tensors or tensor.HasField("raw_data"):
        return None
    array = graph.tensors[tensor.name]
    return array_identity(array) if isinstance(array, np.ndarray) else None


def _all_referenced(placed: dict[ArrayIdentity, tuple[int, int]], tensors: list, graph: OnnxGraph) -> bool:
    referenced = {_captured_identity(tensor, graph) for tensor in tensors}
    return all(identity in referenced for identity in placed)


# A written graph's external weights go to the one file its family names: nemo2sherpa writes '<stem>.weights',
# onnx-asr's layout wants '<graph>.onnx.data', the name a Hub download of it fetches.
def place_external_data(graph: Path, wanted: str) -> str | None:
    """Move a written graph's one external-data file to `wanted` (beside it) and point the graph's tensors there.

    Returns the name the data had, or None when there was nothing to move (weights inline, or already there). Only
    the graph's structure is rewritten; the weights file is renamed, not copied."""
    import onnx

    if wanted == graph.with_suffix(".weights").name:  # what the writers write: nothing to move, nothing to read
        return None
    model = onnx.load(str(graph), load_external_data=False)
    entries = [entry for tensor in graph_tensors(model.graph) for entry in tensor.external_data
               if entry.key == "location"]
    locations = {entry.value for entry in entries}
    if not locations or locations == {wanted}:
        return None
    if len(locations) > 1:
        raise RuntimeError(f"{graph.name}: weights in {len(locations)} external files, where one was written")
    (previous,) = locations
    os.replace(graph.parent / previous, graph.parent / wanted)
    for entry in entries:
        entry.value = wanted
    graph.write_bytes(model.SerializeToString())
    os.chmod(graph, FILE_MODE)
    return previous
