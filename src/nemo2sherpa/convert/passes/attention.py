"""Rewrites of NeMo's relative-position self-attention (RelPositionMultiHeadAttention) as exported.

NeMo exports each layer's attention as separate nodes: q, k, v projections, `q + pos_bias_u` and `q + pos_bias_v`,
matrix_ac = (q+u) k^T, matrix_bd = (q+v) p^T followed by rel_shift (Pad, Reshape, Slice, Reshape, Slice), then
(ac + bd) / sqrt(d_k), masked_fill(-10000), softmax, masked_fill(0), attn @ v and a transpose back.
onnxruntime does not recognise any of it (its attention fusions look for BERT-style patterns).

fuse_attention: the core becomes onnxruntime's contrib MultiHeadAttention (CPU kernel: per-head GEMMs, mask, bias
and softmax in one pass over each score matrix, output written straight in [batch, time, d_model] layout):
    MHA(query=x Wq, key=x Wk, value=x Wv, bias=[bq + u, bk, bv], key_padding_mask=attend (int32 [B, T, T]),
        attention_bias=rel_shift((q+v) p^T) / sqrt(d_k), scale=1/sqrt(d_k), mask_filter_value=-10000)
(the mask goes in MultiHeadAttention's key_padding_mask input, whose [B, T, T] form is a full attention mask)
and the rows NeMo zeroes (queries with nothing to attend to: padding) are zeroed by one multiply with a row mask.
Masked scores are `score - 10000` instead of exactly -10000; both vanish in the softmax, so valid rows are equal.
The 1/sqrt(d_k) scale of the positional scores is applied to (q+v) before its matmul (a [B, T, d] multiply
instead of one over [B, H, T, T]): the positional path is linear (matmul, zero padding, reshapes, slices).

The masks (attend, and the rows with anything to attend to) are derived once from NeMo's own [B, T, T] mask and
shared by all layers, so padded batches and limited attention contexts (banded masks) stay exact. The positional
path itself is rewritten by optimize_relpos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from nemo2sherpa.graphs.editing import MS_DOMAIN, GraphEditor, NoMatch, attribute, is_standard, require

BOOL, INT32, FLOAT = 9, 6, 1  # onnx.TensorProto data types


@dataclass
class _Linear:
    matmul: Any  # MatMul(x, W) node
    bias: np.ndarray | None  # the Add's constant, if any


@dataclass
class _Attention:
    heads: int
    head_size: int
    scale: float
    mask_value: float
    mask_root: str  # the boolean [B, T, T] mask NeMo derives every layer's masking from (True = masked)
    q: _Linear
    k: _Linear
    v: _Linear
    u: np.ndarray
    pos_v: np.ndarray
    q4_shape: str  # the shape input of that Reshape
    qv_transpose: Any  # Transpose((q + pos_bias_v)) feeding matrix_bd
    bd_scores: str  # rel-shifted positional scores [B, H, T, T], unscaled
    ac: Any  # MatMul((q+u), k^T): gone after the rewrite, but the exporter reads its shape for rel_shift's slice
    context: str  # attention output [B, T, H*d_k], before linear_out


def _linear(editor: GraphEditor, name: str) -> _Linear:
    """x @ W (+ b) with W and b constants."""
    node = editor.producer.get(name)
    require(node is not None, "no producer")
    bias = None
    if node.op_type == "Add":
        for index in (0, 1):
            candidate = editor.value(node.input[1 - index])
            inner = editor.producer.get(node.input[index])
            if candidate is not None and inner is not None and inner.op_type == "MatMul":
                bias, node = candidate, inner
                break
        require(bias is not None, "Add is not a bias")
    require(node.op_type == "MatMul", "not a projection")
    require(editor.shape_of_initializer(node.input[1]) is not None, "projection weight is not constant")
    return _Linear(matmul=node, bias=bias)


def _mask_root(editor: GraphEditor, name: str) -> str:
    """Walk back through the Cast(bool) / Unsqueeze(axis 1) NeMo puts between its mask and each masked_fill."""
    for _ in range(4):
        node = editor.producer.get(name)
        if node is None or not _is_mask_view(editor, node):
            return name
        name = node.input[0]
    return name


def _is_mask_view(editor: GraphEditor, node: Any) -> bool:
    if node.op_type == "Cast":
        return attribute(node, "to") == BOOL
    if node.op_type == "Unsqueeze":
        axes = editor.ints(node.input[1]) if len(node.input) > 1 else list(attribute(node, "axes") or [])
        return axes == [1]
    return False


def _transpose(editor: GraphEditor, name: str, perm: list[int]) -> Any:
    transpose = editor.node_of(name, "Transpose")
    require(attribute(transpose, "perm") == perm, "unexpected transpose")
    return transpose


def _head_view(editor: GraphEditor, name: str, perm: list[int]) -> tuple[Any, Any]:
    """Transpose(Reshape(x, [B, T, H, d_k]), perm): returns (transpose, reshape)."""
    transpose = _transpose(editor, name, perm)
    return transpose, editor.node_of(transpose.input[0], "Reshape")


def _bias_add(editor: GraphEditor, name: str) -> tuple[str, np.ndarray]:
    """Add(x, c) with c a constant [H, d_k]: returns (x, c)."""
    node = editor.node_of(name, "Add")
    for index in (0, 1):
        value = editor.value(node.input[1 - index])
        if value is not None and value.ndim == 2:
            return node.input[index], value
    raise NoMatch("not a positional bias")


def match_attention(editor: GraphEditor, softmax: Any) -> _Attention:
    require(attribute(softmax, "axis") in (-1, 3), "softmax over another axis")
    masked = editor.node_of(softmax.input[0], "Where")
    mask_value = editor.scalar(masked.input[1])
    require(mask_value is not None and mask_value <= -1000.0, "not a -inf style fill")
    root = _mask_root(editor, masked.input[0])

    zeroed = editor.only_consumer(softmax.output[0], "Where")
    require(zeroed.input[2] == softmax.output[0] and editor.scalar(zeroed.input[1]) == 0.0, "no masked_fill(0)")
    require(_mask_root(editor, zeroed.input[0]) == root, "two different masks")
    weighted = editor.only_consumer(zeroed.output[0], "MatMul")
    require(weighted.input[0] == zeroed.output[0], "attention weights on the wrong side")
    _, v4 = _head_view(editor, weighted.input[1], [0, 2, 1, 3])
    back = editor.only_consumer(weighted.output[0], "Transpose")
    require(attribute(back, "perm") == [0, 2, 1, 3], "unexpected output transpose")
    context = editor.only_consumer(back.output[0], "Reshape")

    scores = editor.producer.get(masked.input[2])
    require(scores is not None and scores.op_type in ("Div", "Mul"), "no scaling")
    factor = editor.scalar(scores.input[1])
    require(factor is not None and factor != 0.0, "scale is not a constant")
    scale = 1.0 / factor if scores.op_type == "Div" else factor
    total = editor.node_of(scores.input[0], "Add")

    for index in (0, 1):
        ac = editor.producer.get(total.input[index])
        if ac is None or ac.op_type != "MatMul":
            continue
        try:
            qu_t = _transpose(editor, ac.input[0], [0, 2, 1, 3])
            _, k4 = _head_view(editor, ac.input[1], [0, 2, 3, 1])
        except NoMatch:
            continue
        bd_scores = total.input[1 - index]
        break
    else:
        raise NoMatch("no matrix_ac")
    q4, u = _bias_add(editor, qu_t.input[0])
    q4_node = editor.node_of(q4, "Reshape")
    heads, head_size = u.shape
    require(abs(scale * math.sqrt(head_size) - 1.0) < 1e-4, "scale is not 1/sqrt(d_k)")

    # The positional path: only reshapes, slices and zero padding between matrix_bd and the scores.
    name = bd_scores
    for _ in range(8):
        node = editor.producer.get(name)
        require(node is not None, "positional scores are an input")
        readers = [n for n in editor.consumers.get(name, []) if n.op_type != "Shape"]  # sizes do not scale
        require(len(readers) == 1 and name not in editor.outputs, "shared positional path")
        if node.op_type == "MatMul":
            break
        require(node.op_type in ("Slice", "Reshape", "Pad"), f"{node.op_type} on the positional path")
        if node.op_type == "Pad":
            require(editor.is_zero_pad(node), "non-zero padding")
        name = node.input[0]
    else:
        raise NoMatch("positional path too long")
    bd = node
    qv_t = _transpose(editor, bd.input[0], [0, 2, 1, 3])
    require(len([n for n in editor.consumers[qv_t.output[0]] if n.op_type != "Shape"]) == 1, "shared q + v")
    for reader in editor.consumers[ac.output[0]]:
        require(reader is total or (reader.op_type == "Shape" and not reader.attribute), "matrix_ac read elsewhere")
    q4_again, pos_v = _bias_add(editor, qv_t.input[0])
    require(q4_again == q4 and pos_v.shape == u.shape, "q + v is not over the same q")

    q = _linear(editor, q4_node.input[0])
    k = _linear(editor, k4.input[0])
    v = _linear(editor, v4.input[0])
    width = heads * head_size
    for linear in (q, k, v):
        shape = editor.shape_of_initializer(linear.matmul.input[1])
        require(shape is not None and len(shape) == 2 and shape[1] == width, "projection width")
        require(linear.bias is None or linear.bias.shape == (width,), "bias shape")
    return _Attention(heads=int(heads), head_size=int(head_size), scale=float(scale), mask_value=float(mask_value),
                      mask_root=root, q=q, k=k, v=v, u=u, pos_v=pos_v, q4_shape=q4_node.input[1],
                      qv_transpose=qv_t, bd_scores=bd_scores, ac=ac, context=context.output[0])


def fuse_attention(editor: GraphEditor) -> int:
    """Every matching attention core becomes MultiHeadAttention; returns how many."""
    softmaxes = [n for n in editor.graph.node if n.op_type == "Softmax" and is_standard(n)]
    masks: dict[tuple[str, int], tuple[str, str, str]] = {}
    fused = 0
    for softmax in softmaxes:
        try:
            found = match_attention(editor, softmax)
        except NoMatch:
            continue
        _rewrite(editor, found, masks)
        fused += 1
    return fused


def _shared_masks(editor: GraphEditor, root: str, heads: int,
                  masks: dict[tuple[str, int], tuple[str, str, str]]) -> tuple[str, str, str]:
    """Built once per mask: attend (int32 [B, T, T]), whether a row has anything to attend to (float [B, T, 1]),
    and the shape of the score matrices, [B, H, T, T]."""
    key = (root, heads)
    if key not in masks:
        attend = editor.add1("Not", [editor.add1("Cast", [root], "attention_mask", to=BOOL)], "attention_mask")
        attend = editor.add1("Cast", [attend], "attention_mask", to=INT32)
        rows = editor.add1("ReduceMax", [attend], "attention_mask", axes=[-1], keepdims=1)
        rows = editor.add1("Cast", [rows], "attention_mask", to=FLOAT)
        shape = editor.add1("Shape", [root], "attention_mask")
        batch = editor.add1("Slice", [shape, editor.int64s(0), editor.int64s(1)], "attention_mask")
        times = editor.add1("Slice", [shape, editor.int64s(1), editor.int64s(3)], "attention_mask")
        scores = editor.add1("Concat", [batch, editor.int64s(heads), times], "attention_mask", axis=0)
        masks[key] = (attend, rows, scores)
    return masks[key]


def _rewrite(editor: GraphEditor, a: _Attention, masks: dict[tuple[str, int], tuple[str, str, str]]) -> None:
    hint = a.context.rsplit("/", 1)[0] or "attention"
    width = a.heads * a.head_size
    attend, rows, scores_shape = _shared_masks(editor, a.mask_root, a.heads, masks)
    for reader in list(editor.consumers[a.ac.output[0]]):
        if reader.op_type == "Shape":
            editor.replace_uses(reader.output[0], scores_shape)

    # (q + pos_bias_v) / sqrt(d_k) for matrix_bd, from the projection before its bias: one add, one multiply
    q_bias = a.q.bias if a.q.bias is not None else np.zeros(width, np.float32)
    qv_bias = (q_bias.reshape(a.heads, a.head_size) + a.pos_v).astype(np.float32)
    qv = editor.add1("Reshape", [a.q.matmul.output[0], a.q4_shape], hint)
    qv = editor.add1("Add", [qv, editor.constant(qv_bias, f"{hint}/qv_bias")], hint)
    qv = editor.add1("Mul", [qv, editor.constant(np.array(a.scale, np.float32), f"{hint}/scale")], hint)
    editor.set_input(a.qv_transpose, 0, qv)

    biases = [q_bias + a.u.reshape(-1)]
    for linear in (a.k, a.v):
        biases.append(linear.bias if linear.bias is not None else np.zeros(width, np.float32))
    bias = editor.constant(np.concatenate(biases).astype(np.float32), f"{hint}/qkv_bias")
    context = editor.add1(
        "MultiHeadAttention",
        [a.q.matmul.output[0], a.k.matmul.output[0], a.v.matmul.output[0], bias, attend, a.bd_scores],
        hint, domain=MS_DOMAIN, num_heads=a.heads, scale=a.scale, mask_filter_value=a.mask_value)
    context = editor.add1("Mul", [context, rows], hint)
    editor.replace_uses(a.context, context)
