"""Walking an ONNX graph's stored tensors: shared by convert (writing external data) and validate (checking it)."""

from __future__ import annotations

from typing import Any, BinaryIO, Iterator


def graph_tensors(graph) -> Iterator:
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
                yield from graph_tensors(attribute.g)
            elif attribute.type == AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from graph_tensors(subgraph)


def external_array(tensor, stream: BinaryIO) -> Any:
    """A tensor stored as external data, read into a fresh numpy array from `stream` (the open file it names):
    a copy, not a memory map, whose pages would count as the reader's memory."""
    import numpy as np
    from onnx import external_data_helper, helper

    info = external_data_helper.ExternalDataInfo(tensor)
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    count = int(np.prod(tensor.dims)) if len(tensor.dims) else 1
    stream.seek(int(info.offset or 0))
    return np.fromfile(stream, dtype=dtype, count=count).reshape(tuple(tensor.dims))
