"""Graph-level optimisation of the exported encoder. Only what measurably speeds up sherpa-onnx and keeps
transcripts identical belongs here (see bench/encoder_speed.py and docs/optimization.md).

The encoder's time goes to matrix products that no rewrite can remove (on the 1.1B model and 30 s of audio, about
85% is MatMul/Conv at the CPU's float32 peak). What is left is NeMo's relative-position attention as exported,
which onnxruntime's own optimiser does not recognise; three rewrites of it are applied, each only where its pattern
is verified in full (anything else is left as exported):

- fused_attention (optimize_attention): the attention core becomes onnxruntime's MultiHeadAttention with the
  rel-shifted positional scores as its attention bias;
- fast_rel_shift (optimize_relpos): rel_shift in two copies instead of three;
- halved_linear_pos (optimize_relpos): each layer's projection of the 2T-1 relative positions computed from T
  positions, using the sinusoids' symmetry (half the work).

The result needs an onnxruntime with its contrib operators (domain com.microsoft), as every onnxruntime package
and sherpa-onnx's bundled runtime have; `nemo2sherpa convert --no-optimize` writes the graph as exported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nemo2sherpa.convert.passes.attention import fuse_attention
from nemo2sherpa.convert.passes.relative_positions import fast_rel_shift, halve_linear_pos
from nemo2sherpa.graphs.editing import MS_DOMAIN, GraphEditor
from nemo2sherpa.graphs.graph import OnnxGraph

# In this order: the attention fusion reads the rel_shift chain and the projections as exported.
_REWRITES: dict[str, Callable[[GraphEditor], int]] = {
    "fused_attention": fuse_attention,
    "fast_rel_shift": fast_rel_shift,
    "halved_linear_pos": halve_linear_pos,
}
REWRITES = tuple(_REWRITES)
# Linear layers (by attribute name) whose weights the rewrites replace with new tensors: halved_linear_pos splits
# each positional projection into its sine and cosine rows. Their weights are not written ahead (weights_ahead).
REPLACED_WEIGHTS = ("linear_pos",)
BACKUP_LIMIT = 64 * 2**20


def optimize_encoder(graph: OnnxGraph, only: tuple[str, ...] = REWRITES) -> tuple[OnnxGraph, dict[str, Any]]:
    """The graph, optimised in place where that helps, and what was done (for the manifest).

    `only` selects rewrites by name (benchmarks measure them one by one); the default applies them all."""
    if _has_subgraphs(graph.model.graph):  # nothing NeMo exports for these encoders; not worth handling
        return graph, {"optimizations": []}
    # The structure is small (the weights are beside it, see export/lean.py), so it is kept to fall back to; not when
    # the exporter's fallback wrote a small model with its weights inline (then a failure is raised, as is).
    model_backup = _copy_model(graph.model) if graph.model.ByteSize() <= BACKUP_LIMIT else None
    tensors_backup = dict(graph.tensors)
    try:
        applied = _apply(graph, only)
    except Exception as exc:  # a rewrite that breaks must cost the speed-up, never the conversion
        if model_backup is None:
            raise
        graph.model.CopyFrom(model_backup)
        graph.tensors.clear()
        graph.tensors.update(tensors_backup)
        return graph, {"optimizations": [], "optimization_failed": f"{type(exc).__name__}: {exc}"}
    return graph, {"optimizations": applied}


def _apply(graph: OnnxGraph, only: tuple[str, ...]) -> list[dict[str, Any]]:
    editor = GraphEditor(graph)
    applied = []
    for name, rewrite in _REWRITES.items():
        if name not in only:
            continue
        count = rewrite(editor)
        if count:
            applied.append({"name": name, "count": count})
    if applied:
        editor.finish()
        _ensure_opset(graph.model, MS_DOMAIN, 1)
    return applied


def _copy_model(model):
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _has_subgraphs(graph) -> bool:
    from onnx import AttributeProto

    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in graph.node for a in n.attribute)


def _ensure_opset(model, domain: str, version: int) -> None:
    if any(node.domain == domain for node in model.graph.node) and \
            not any(o.domain == domain for o in model.opset_import):
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version
