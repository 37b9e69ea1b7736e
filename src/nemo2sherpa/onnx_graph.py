"""Walking an ONNX graph's stored tensors: shared by convert (writing external data) and validate (checking it)."""

from __future__ import annotations

from typing import Iterator


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
