"""Graph-level optimisation of the exported encoder. Only what measurably speeds up sherpa-onnx and keeps
transcripts identical belongs here (see bench/encoder_speed.py and docs/benchmarks.md)."""

from __future__ import annotations

from typing import Any

from nemo2sherpa.convert.lean_export import ExportedGraph


def optimize_encoder(graph: ExportedGraph) -> tuple[ExportedGraph, dict[str, Any]]:
    """The graph, optimised in place where that helps, and what was done (for the manifest)."""
    return graph, {"optimizations": []}
