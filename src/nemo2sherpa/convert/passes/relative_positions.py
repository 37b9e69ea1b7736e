"""Rewrites of the relative-position path of NeMo's RelPositionMultiHeadAttention (see optimize_attention).

halve_linear_pos: each layer projects the 2T-1 relative positional embeddings, p = linear_pos(pos_emb), a
(2T-1) x d x d matmul per layer (about 7% of the 1.1B encoder's time). NeMo's embeddings are sinusoids over the
positions T-1 .. -(T-1): pos_emb(-m) has the sine columns of pos_emb(m) negated and the cosine columns equal. With
A = sin(m w) @ W[0::2] and C = cos(m w) @ W[1::2] over m = 0..T-1 (two T x d/2 x d matmuls, half the work):
    pos_emb(m) @ W = C + A,  pos_emb(-m) @ W = C - A,
and the (2T-1) rows are the first reversed (m = T-1..1) followed by the second (m = 0..T-1). sin(m w) and cos(m w)
are the lower half of the embeddings themselves (rows T-1 .. 2T-2, columns 0::2 and 1::2), sliced once for all
layers. Applied only where the embeddings provably have that form: computed in the graph from
Range(T-1, -T, -1) x frequencies (convert/export/relative_positions),
or sliced from a table (NeMo's own export) that is checked
to be odd/even about its centre, by a slice that is checked to be centred (start = c + 1 - T, end = c + T).
The weights are not copied: W[0::2] and W[1::2] are views until the writer streams them out.

fast_rel_shift: NeMo's rel_shift (pad a zero column, view [T, 2T-1] as [2T, T], drop the first row, view back,
keep T columns) copies the [B, H, T, 2T-1] scores three times. out[i, j] = bd[i, T-1-i+j] is bd flattened per
head, read from offset T-1 with row stride 2T-2; so: view as [B, H, T(2T-1)], slice [T-1, T-1 + T(2T-2)), view as
[B, H, T, 2T-2], keep T columns. Two copies, the larger one smaller than before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nemo2sherpa.graphs.editing import GraphEditor, NoMatch, attribute, is_standard, require

SYMMETRY_TOLERANCE = 1e-6


def _linear_form(editor: GraphEditor, name: str, depth: int = 0) -> tuple[str | None, int, int]:
    """`name` as a * symbol + b over one unknown (integer shape arithmetic): (symbol, a, b)."""
    require(depth < 16, "expression too deep")
    value = editor.value(name)
    if value is not None:
        require(value.size == 1 and value.dtype.kind in "iu", "not an integer scalar")
        return None, 0, int(value.reshape(()))
    node = editor.producer.get(name)
    if node is None or node.op_type not in ("Add", "Sub", "Neg", "Unsqueeze", "Squeeze", "Cast", "Identity"):
        return name, 1, 0
    if node.op_type in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
        return _linear_form(editor, node.input[0], depth + 1)
    if node.op_type == "Neg":
        symbol, a, b = _linear_form(editor, node.input[0], depth + 1)
        return symbol, -a, -b
    left = _linear_form(editor, node.input[0], depth + 1)
    right = _linear_form(editor, node.input[1], depth + 1)
    require(left[0] is None or right[0] is None or left[0] == right[0], "two unknowns")
    sign = 1 if node.op_type == "Add" else -1
    return left[0] or right[0], left[1] + sign * right[1], left[2] + sign * right[2]


def _symmetric_positions(editor: GraphEditor, name: str) -> int:
    """d_model if `name` holds sinusoid embeddings [1, 2T-1, d] of the positions T-1 .. -(T-1), sine and cosine
    interleaved: either computed in the graph (convert/export/relative_positions) or sliced from NeMo's
    table. NoMatch otherwise."""
    node = editor.producer.get(name)
    require(node is not None, "positions are an input")
    if node.op_type == "Cast" and attribute(node, "to") == 1:
        node = editor.producer.get(node.input[0])
        require(node is not None, "positions are an input")
    if node.op_type == "Slice":
        return _centred_table(editor, node).shape[2]
    return _computed_positions(editor, node)


def _computed_positions(editor: GraphEditor, reshape: Any) -> int:
    """Reshape(Concat([Unsqueeze(Sin(X), -1), Unsqueeze(Cos(X), -1)], -1), [1, -1, d]) with
    X = Range(T-1, -T, -1)[:, None] * frequencies."""
    require(reshape.op_type == "Reshape", "not computed positions")
    shape = editor.ints(reshape.input[1])
    require(shape is not None and len(shape) == 3 and shape[0] == 1 and shape[1] == -1 and shape[2] % 2 == 0,
            "not [1, -1, d]")
    width = shape[2]
    concat = editor.node_of(reshape.input[0], "Concat")
    require(attribute(concat, "axis") in (-1, 2) and len(concat.input) == 2, "not a stack of two")
    parts = []
    for name, op in zip(concat.input, ("Sin", "Cos")):
        unsqueeze = editor.node_of(name, "Unsqueeze")
        require(editor.ints(unsqueeze.input[1]) in ([-1], [2]), "not stacked last")
        parts.append(editor.node_of(unsqueeze.input[0], op))
    require(parts[0].input[0] == parts[1].input[0], "sine and cosine of different angles")
    angles = editor.node_of(parts[0].input[0], "Mul")
    frequencies = [editor.value(n) for n in angles.input]
    index = 0 if frequencies[1] is not None else 1
    require(frequencies[1 - index] is not None and frequencies[1 - index].shape == (width // 2,), "not frequencies")
    unsqueeze = editor.node_of(angles.input[index], "Unsqueeze")
    require(editor.ints(unsqueeze.input[1]) == [1], "positions not a column")
    positions = editor.node_of(unsqueeze.input[0], "Range")
    require(editor.scalar(positions.input[2]) == -1.0, "not descending by one")
    start, limit = _linear_form(editor, positions.input[0]), _linear_form(editor, positions.input[1])
    require(start[0] is not None and start[0] == limit[0], "range bounds are not over one length")
    require(start[1:] == (1, -1) and limit[1:] == (-1, 0), "range is not T-1 .. -(T-1)")
    return width


def _centred_table(editor: GraphEditor, node: Any) -> np.ndarray:
    """The embedding table if `node` is Slice(table, c+1-T, c+T) over axis 1 of a symmetric sinusoid table."""
    require(node.op_type == "Slice", "not a slice")
    require(len(node.input) >= 4, "slice without axes")
    require(editor.ints(node.input[3]) == [1], "slice over another axis")
    require(editor.has_unit_steps(node), "strided slice")
    shape = editor.shape_of_initializer(node.input[0])
    require(shape is not None and len(shape) == 3 and shape[0] == 1 and shape[1] % 2 == 1 and shape[2] % 2 == 0,
            "not a positional table")
    centre = (shape[1] - 1) // 2
    start, end = _linear_form(editor, node.input[1]), _linear_form(editor, node.input[2])
    require(start[0] is not None and start[0] == end[0], "slice bounds are not over one length")
    require(start[1:] == (-1, centre + 1) and end[1:] == (1, centre), "slice is not centred on position 0")
    table = editor.value(node.input[0])
    require(table is not None, "positional table not readable")
    plus, minus = table[0, centre:], table[0, centre::-1]  # positions 0, -1, -2, ... and 0, 1, 2, ...
    require(np.max(np.abs(plus[:, 0::2] + minus[:, 0::2])) <= SYMMETRY_TOLERANCE, "sine columns are not odd")
    require(np.max(np.abs(plus[:, 1::2] - minus[:, 1::2])) <= SYMMETRY_TOLERANCE, "cosine columns are not even")
    return table


def halve_linear_pos(editor: GraphEditor) -> int:
    """Rewrite every constant projection of a centred sinusoid slice; returns how many."""
    candidates: dict[str, list[Any]] = {}
    for node in editor.graph.node:
        if node.op_type == "MatMul" and is_standard(node):
            candidates.setdefault(node.input[0], []).append(node)
    done = 0
    for positions, matmuls in candidates.items():
        try:
            width = _symmetric_positions(editor, positions)
        except NoMatch:
            continue
        halves = None
        for matmul in matmuls:
            shape = editor.shape_of_initializer(matmul.input[1])
            if shape is None or len(shape) != 2 or shape[0] != width:
                continue
            weight = editor.value(matmul.input[1])
            if weight is None:
                continue
            if halves is None:
                halves = _shared_halves(editor, positions, width)
            _rewrite(editor, matmul, weight, halves)
            done += 1
    return done


def _shared_halves(editor: GraphEditor, positions: str, width: int) -> tuple[str, str]:
    """sin(-m w) and cos(m w) for m = 0..T-1, sliced at run time from the positions (rows T-1 .. 2T-2)."""
    hint = "pos_enc/halves"
    ints = editor.int64s
    rows = editor.add1("Slice", [editor.add1("Shape", [positions], hint), ints(1), ints(2)], hint)  # 2T-1
    length = editor.add1("Div", [editor.add1("Add", [rows, ints(1)], hint), ints(2)], hint)  # T
    first = editor.add1("Sub", [length, ints(1)], hint)  # T-1: position 0
    lower = editor.add1("Slice", [positions, first, rows, ints(1)], hint)  # positions 0, -1, .., -(T-1)
    sines = editor.add1("Slice", [lower, ints(0), ints(width), ints(2), ints(2)], hint)  # columns 0::2
    cosines = editor.add1("Slice", [lower, ints(1), ints(width), ints(2), ints(2)], hint)  # columns 1::2
    return sines, cosines


def _rewrite(editor: GraphEditor, matmul: Any, weight: np.ndarray, halves: tuple[str, str]) -> None:
    hint = matmul.name.rsplit("/", 1)[0] or "linear_pos"
    sines, cosines = halves
    odd = editor.add1("MatMul", [sines, editor.constant(weight[0::2], f"{matmul.input[1]}.sin_rows")], hint)
    even = editor.add1("MatMul", [cosines, editor.constant(weight[1::2], f"{matmul.input[1]}.cos_rows")], hint)
    past = editor.add1("Add", [even, odd], hint)  # positions 0, -1, .., -(T-1)
    ahead = editor.add1("Sub", [even, odd], hint)  # positions 0, 1, .., T-1
    ints = editor.int64s
    ahead = editor.add1("Slice", [ahead, ints(-1), ints(0), ints(1), ints(-1)], hint)  # positions T-1 .. 1
    projected = editor.add1("Concat", [ahead, past], hint, axis=1)
    editor.replace_uses(matmul.output[0], projected)


def fast_rel_shift(editor: GraphEditor) -> int:
    """Replace every NeMo rel_shift chain found; returns how many."""
    done = 0
    for node in list(editor.graph.node):
        if node.op_type != "Pad" or not is_standard(node):
            continue
        try:
            chain = _match_rel_shift(editor, node)
        except NoMatch:
            continue
        _rewrite_rel_shift(editor, *chain)
        done += 1
    return done


def _match_rel_shift(editor: GraphEditor, pad: Any) -> tuple[str, Any, str]:
    """Pad(last axis, 1 before) -> Reshape -> Slice(axis 2, from 1) -> Reshape -> Slice(axis 3, 0:end)."""
    require(editor.is_zero_pad(pad), "not zero padding")
    require(len(pad.input) < 4 or not pad.input[3], "pad with axes")
    require(editor.ints(pad.input[1]) == [0, 0, 0, 1, 0, 0, 0, 0], "not one column before")
    view = editor.only_consumer(pad.output[0], "Reshape")
    drop = editor.only_consumer(view.output[0], "Slice")
    require(drop.input[0] == view.output[0], "slice of something else")
    require(editor.ints(drop.input[1]) == [1] and editor.ints(drop.input[3]) == [2], "not dropping the first row")
    require((editor.ints(drop.input[2]) or [0])[0] >= 2**62, "drop slice has an end")
    require(editor.has_unit_steps(drop), "strided")
    back = editor.only_consumer(drop.output[0], "Reshape")
    keep = editor.only_consumer(back.output[0], "Slice")
    require(keep.input[0] == back.output[0], "slice of something else")
    require(editor.ints(keep.input[1]) == [0] and editor.ints(keep.input[3]) in ([3], [-1]), "not keeping columns")
    require(editor.has_unit_steps(keep), "strided")
    return pad.input[0], keep, keep.input[2]


def _rewrite_rel_shift(editor: GraphEditor, scores: str, keep: Any, columns: str) -> None:
    hint = keep.name.rsplit("/", 1)[0] or "rel_shift"
    ints = editor.int64s
    shape = editor.add1("Shape", [scores], hint)  # [B, H, T, 2T-1]
    length = editor.add1("Slice", [shape, ints(2), ints(3)], hint)  # T
    stride = editor.add1("Sub", [editor.add1("Slice", [shape, ints(3), ints(4)], hint), ints(1)], hint)  # 2T-2
    start = editor.add1("Sub", [length, ints(1)], hint)  # T-1
    end = editor.add1("Add", [start, editor.add1("Mul", [length, stride], hint)], hint)  # T-1 + T(2T-2)
    flat = editor.add1("Reshape", [scores, ints(0, 0, -1)], hint)  # [B, H, T(2T-1)]
    flat = editor.add1("Slice", [flat, start, end, ints(2)], hint)
    view = editor.add1("Concat", [ints(0, 0), length, stride], hint, axis=0)
    shifted = editor.add1("Reshape", [flat, view], hint)  # [B, H, T, 2T-2]
    shifted = editor.add1("Slice", [shifted, ints(0), columns, ints(3)], hint)  # [B, H, T, T]
    editor.replace_uses(keep.output[0], shifted)
