"""The fp16 variant: a mixed-precision graph pass over the written float32 graphs (see docs/precision.md).

Why not a plain float->float16 conversion: it yields blank-only transcripts on CUDA while looking right on CPU.
onnxruntime's CPU provider has no float16 kernels for most of these ops, so it wraps them in casts and computes in
float32 (and drops cast pairs between them): on CPU the naive graph is silently a float32 graph. On CUDA every op
really runs in float16, and three things break there:

- the length path: the encoder computes its output lengths and the padding masks in floating point
  (NeMo's calc_length: (len + pad - k) / stride + 1, floor, three times). In float16 integers above 2048 are not
  exact, so masks and encoded_lengths go wrong for audio over 20 s;
- the attention scores (q+u)k^T + rel_shift((q+v)p^T), divided by sqrt(d_k) only after the product: NeMo itself keeps
  this block in float32 under autocast (avoid_float16_autocast_context), because it overflows float16;
- activations of checkpoints trained in bf16 (the Parakeet family) are not bounded by float16's 65504: any that are
  larger become inf, then NaN after the next LayerNorm or Softmax, and every frame decodes as blank.

What this pass does, like PyTorch autocast: MatMul/Conv/Gemm/LSTM with weights run in float16 (weights stored in
float16: half the size); LayerNormalization, Softmax, reductions, exp/log and the attention score products run in
float32; elementwise ops promote (float32 if any activation input is float32), shape ops follow their input. The
length path (anything not computed from the float inputs) is left in float32 untouched, and the graph keeps its
float32 inputs and outputs (sherpa-onnx feeds and reads float32). Then a range probe runs the float32 encoder on
speech and keeps in float32 every node whose output (or whose input, for a float16 matmul) comes within a factor of
16 of float16's limit.

`emulate=True` writes the same plan as a float32 graph that rounds every planned-float16 tensor to float16 and back
(Cast pairs, run with graph optimisations off): what CUDA computes, measurable on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nemo2sherpa.features import probe_features
from nemo2sherpa.graphs.graph import LazyTensor, OnnxGraph
from nemo2sherpa.graphs.rewriting import (
    FLOAT,
    FLOAT16,
    SourceGraph,
    all_names,
    detached,
    placeholder,
    replace_nodes,
    tensor_types,
    unique_name,
    write_rewritten,
)

FP16_MAX = 65504.0
RANGE_HEADROOM = 16.0  # keep in float32 what comes within this factor of FP16_MAX on the probe
# Ops whose float16 kernels compute the heavy part; with a weight they run in float16.
COMPUTE = {"MatMul", "Gemm", "Conv", "ConvTranspose", "LSTM", "GRU", "RNN"}
# Elementwise: float32 as soon as one activation input is float32 (autocast's "promote").
PROMOTE = {"Add", "Sub", "Mul", "Div", "Where", "Concat", "Max", "Min", "Sum", "Mean"}
# Follow their data input's precision: shape movement and bounded activations.
FOLLOW = {"Transpose", "Reshape", "Slice", "Split", "Squeeze", "Unsqueeze", "Expand", "Gather", "Pad", "Identity",
          "Sigmoid", "Relu", "Tanh", "Neg", "Abs", "Tile", "Flatten", "Clip", "LeakyRelu", "HardSigmoid", "Dropout"}
# Read only the shape: either precision, no cast.
AGNOSTIC = {"Shape", "Size"}
# Everything else (LayerNormalization, Softmax, LogSoftmax, Reduce*, Pow, Sqrt, Exp, Log, Erf, CumSum, ...) runs
# in float32.


@dataclass
class Fp16Plan:
    """Which node runs in float16, and why others do not (for the manifest and docs)."""

    fp16_nodes: set[str] = field(default_factory=set)
    kept_by_range: list[str] = field(default_factory=list)
    attention_fp32: int = 0

    def summary(self, total_nodes: int) -> dict[str, Any]:
        return {"fp16_nodes": len(self.fp16_nodes), "nodes": total_nodes,
                "fp32_attention_products": self.attention_fp32,
                "kept_fp32_by_range_probe": self.kept_by_range[:50]}


def _node_key(node, index: int) -> str:
    return node.name or f"#{index}"


def plan_fp16(model, types: Mapping[str, int], force_fp32: set[str] = frozenset(),
              attention_fp32: bool = True, naive: bool = False) -> tuple[Fp16Plan, dict[str, int]]:
    """Decide each node's precision. Returns the plan and the precision (FLOAT/FLOAT16) of every activation.

    `naive` plans what a plain float->float16 conversion computes (every float tensor, the length path included,
    in float16): only for emulation (docs/precision.md, bench/precision.py)."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    constants.update(n.output[0] for n in graph.node if n.op_type == "Constant")
    precision: dict[str, int] = {}
    data: set[str] = set()
    for value in graph.input:
        if types.get(value.name) == FLOAT:
            precision[value.name] = FLOAT
            data.add(value.name)
    plan = Fp16Plan()
    for index, node in enumerate(graph.node):
        key = _node_key(node, index)
        floats = [i for i in node.input if i and types.get(i) == FLOAT]
        activations = [i for i in floats if i in data]
        outputs = [o for o in node.output if o and types.get(o) == FLOAT]
        if naive:
            mode = FLOAT16 if outputs and node.op_type not in AGNOSTIC | {"Constant"} else FLOAT
            if mode == FLOAT16:
                plan.fp16_nodes.add(key)
            for output in outputs:
                precision[output] = mode
                data.add(output)
            continue
        if not activations or node.op_type in AGNOSTIC:
            for output in outputs:
                precision[output] = FLOAT
            continue
        if key in force_fp32:
            mode = FLOAT
        elif node.op_type in COMPUTE:
            weights = [i for i in floats if i in constants]
            both_activations = len([i for i in floats if i not in constants]) >= 2 and node.op_type == "MatMul"
            if attention_fp32 and both_activations:
                mode = FLOAT
                plan.attention_fp32 += 1
            else:
                mode = FLOAT16 if (weights or node.op_type == "MatMul") else FLOAT
        elif node.op_type in PROMOTE:
            mode = FLOAT if any(precision.get(i, FLOAT) == FLOAT for i in activations) else FLOAT16
        elif node.op_type in FOLLOW:
            mode = precision.get(activations[0], FLOAT)
        else:
            mode = FLOAT
        if mode == FLOAT16:
            plan.fp16_nodes.add(key)
        for output in outputs:
            precision[output] = mode
            data.add(output)
    return plan, precision


def _to_fp16(array: np.ndarray) -> np.ndarray:
    """Float16 values, clamped to its finite range (a weight beyond 65504 would otherwise become inf)."""
    return np.asarray(np.clip(np.asarray(array, dtype=np.float32), -FP16_MAX, FP16_MAX)).astype(np.float16)


def rewrite_fp16(source: SourceGraph, plan: Fp16Plan, emulate: bool = False) -> OnnxGraph:
    """Apply `plan` to the source graph: float16 nodes, casts at every precision boundary, float16 weights, float32
    graph inputs and outputs. With `emulate`, the graph stays float32 and rounds instead (Cast pairs)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(source.model)
    graph = model.graph
    types = tensor_types(source.model)
    names = all_names(model)
    initializers = {t.name: t for t in graph.initializer}
    constant_nodes = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    tensors: dict[str, Any] = {}
    fp16_consts: dict[str, str] = {}  # float32 constant -> its float16 (or rounded) copy
    casts: dict[tuple[str, int], str] = {}
    precision: dict[str, int] = {v.name: FLOAT for v in graph.input if types.get(v.name) == FLOAT}
    new_nodes = []
    new_initializers = []
    graph_outputs = {o.name for o in graph.output}

    def const_fp16(name: str) -> str:
        if name in fp16_consts:
            return fp16_consts[name]
        new = unique_name(names, f"{name}_fp16")
        if name in initializers:
            tensor = detached(initializers[name])
            nbytes = (int(np.prod(tensor.dims)) if len(tensor.dims) else 1) * (4 if emulate else 2)

            def compute(t=tensor) -> np.ndarray:
                rounded = _to_fp16(np.asarray(source.array(t), dtype=np.float32))
                return rounded.astype(np.float32) if emulate else rounded

            new_initializers.append(placeholder(new, FLOAT if emulate else FLOAT16, tensor.dims))
            tensors[new] = LazyTensor(nbytes, compute)
        else:
            value = numpy_helper.to_array(next(a.t for a in constant_nodes[name].attribute if a.name == "value"))
            rounded = _to_fp16(value.astype(np.float32))
            new_nodes.append(helper.make_node("Constant", [], [new], name=unique_name(names, new + "_const"),
                                              value=numpy_helper.from_array(
                                                  rounded.astype(np.float32) if emulate else rounded, new)))
        fp16_consts[name] = new
        return new

    def cast(name: str, to: int) -> str:
        if emulate:
            return name
        if (name, to) not in casts:
            suffix = "fp16" if to == FLOAT16 else "fp32"
            out = unique_name(names, f"{name}_{suffix}")
            new_nodes.append(helper.make_node("Cast", [name], [out], name=unique_name(names, f"{out}_cast"), to=to))
            casts[(name, to)] = out
        return casts[(name, to)]

    for index, node in enumerate(list(graph.node)):
        key = _node_key(node, index)
        mode = FLOAT16 if key in plan.fp16_nodes else FLOAT
        if mode == FLOAT16:
            for position, name in enumerate(node.input):
                if not name or types.get(name) != FLOAT:
                    continue
                if name in initializers or name in constant_nodes:
                    node.input[position] = const_fp16(name)
                elif precision.get(name, FLOAT) != FLOAT16:
                    node.input[position] = cast(name, FLOAT16)
            rounded_outputs = []
            for position, name in enumerate(node.output):
                if name and types.get(name) == FLOAT:
                    precision[name] = FLOAT16
                    if emulate:
                        raw = unique_name(names, f"{name}_raw")
                        node.output[position] = raw
                        rounded_outputs.append((raw, name))
            new_nodes.append(node)
            for raw, name in rounded_outputs:
                half = unique_name(names, f"{raw}_fp16")
                new_nodes.append(helper.make_node("Cast", [raw], [half], name=unique_name(names, half + "_cast"),
                                                  to=FLOAT16))
                new_nodes.append(helper.make_node("Cast", [half], [name], name=unique_name(names, name + "_cast"),
                                                  to=FLOAT))
        else:
            if node.op_type not in AGNOSTIC:
                for position, name in enumerate(node.input):
                    if name and precision.get(name) == FLOAT16:
                        node.input[position] = cast(name, FLOAT)
            for name in node.output:
                if name and types.get(name) == FLOAT:
                    precision[name] = FLOAT
            new_nodes.append(node)

    # Graph outputs produced in float16: rename inside, cast back to float32 under the public name.
    if not emulate:
        renames = {}
        for output in graph.output:
            if precision.get(output.name) == FLOAT16:
                renames[output.name] = unique_name(names, f"{output.name}_fp16")
        if renames:
            for node in new_nodes:
                for position, name in enumerate(node.output):
                    if name in renames:
                        node.output[position] = renames[name]
                for position, name in enumerate(node.input):
                    if name in renames:
                        node.input[position] = renames[name]
            for public, inner in renames.items():
                new_nodes.append(helper.make_node("Cast", [inner], [public], name=unique_name(names, public + "_cast"),
                                                  to=FLOAT))
    # new_nodes are already in order: casts and constants come just before their first reader; float32 weights
    # nothing reads any more (all their readers run in float16) are dropped
    replace_nodes(graph, new_nodes, new_initializers, keep=graph_outputs)
    return OnnxGraph(model=model, tensors=tensors)


# ------------------------------------------------------------------------------------------------ range probe

def activation_ranges(path: Path, feeds: Mapping[str, np.ndarray], names: list[str], threads: int = 2,
                      chunk: int = 400) -> dict[str, float]:
    """max |x| of each named float tensor when the graph at `path` runs on `feeds` (float32, CPU). The graph is
    run with `chunk` extra outputs at a time, from a copy written beside it (its external data stays where it is)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path), load_external_data=False)
    ranges: dict[str, float] = {}
    probe = path.parent / f".{path.stem}.range-probe.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        for start in range(0, len(names), chunk):
            part = names[start:start + chunk]
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            existing = {o.name for o in copy.graph.output}
            for name in part:
                if name not in existing:
                    copy.graph.output.append(onnx.helper.make_tensor_value_info(name, FLOAT, None))
            probe.write_bytes(copy.SerializeToString())
            session = ort.InferenceSession(str(probe), options, providers=["CPUExecutionProvider"])
            outputs = session.run(part, dict(feeds))
            for name, value in zip(part, outputs):
                value = np.asarray(value)
                ranges[name] = float(np.max(np.abs(value))) if value.size else 0.0
            del session
    finally:
        probe.unlink(missing_ok=True)
    return ranges


def encoder_feeds(model, feat_dim: int, seconds: float = 8.0) -> dict[str, np.ndarray]:
    features = probe_features(feat_dim, seconds)
    inputs = [i.name for i in model.graph.input]
    return {inputs[0]: features[np.newaxis], inputs[1]: np.array([features.shape[1]], dtype=np.int64)}


def range_keep(model, types: Mapping[str, int], plan_precision: Mapping[str, int], ranges: Mapping[str, float],
               limit: float) -> set[str]:
    """Nodes planned in float16 that the probe shows too close to float16's range (output, or float input)."""
    keep = set()
    for index, node in enumerate(model.graph.node):
        outputs = [o for o in node.output if o and plan_precision.get(o) == FLOAT16]
        if not outputs:
            continue
        values = [ranges.get(o, 0.0) for o in outputs]
        values += [ranges.get(i, 0.0) for i in node.input if i and types.get(i) == FLOAT]
        if values and max(values) > limit:
            keep.add(_node_key(node, index))
    return keep


# ------------------------------------------------------------------------------------------------ the variant

def convert_graph_fp16(path: Path, target: Path, probe: Mapping[str, np.ndarray] | None = None,
                       external_threshold: int | None = None, emulate: bool = False,
                       attention_fp32: bool = True, range_probe: bool = True, naive: bool = False,
                       threads: int = 2) -> dict[str, Any]:
    """Write the fp16 (or emulated) version of the float32 graph at `path` to `target`; returns what was done."""
    with SourceGraph(path) as source:
        types = tensor_types(source.model)
        plan, precision = plan_fp16(source.model, types, attention_fp32=attention_fp32, naive=naive)
        if naive and not emulate:
            raise ValueError("the naive plan exists only as an emulation")
        if range_probe and probe is not None and not naive:
            names = [name for name, p in precision.items() if p == FLOAT16]
            for node in source.model.graph.node:  # float inputs of float16 nodes too (they are cast to float16)
                names.extend(i for i in node.input if i and precision.get(i) == FLOAT and i not in names)
            ranges = activation_ranges(path, probe, sorted(set(names)), threads=threads)
            keep = range_keep(source.model, types, precision, ranges, FP16_MAX / RANGE_HEADROOM)
            if keep:
                plan, precision = plan_fp16(source.model, types, force_fp32=keep, attention_fp32=attention_fp32)
                plan.kept_by_range = sorted(keep)
            peak = max(ranges.values(), default=0.0)
        else:
            peak = None
        rewritten = rewrite_fp16(source, plan, emulate=emulate)
        hashes = write_rewritten(rewritten.model, rewritten.tensors, source, target, external_threshold)
    info = plan.summary(len(source.model.graph.node))
    info["probe_max_abs_activation"] = peak
    info["sha256"] = hashes
    return info


# ------------------------------------------------------------------------------------------------ emulation

def emulate_fp16_graph(path: Path, target: Path, external_threshold: int | None = None) -> None:
    """Write a float32 graph that computes what the float16 graph at `path` computes on CUDA: every float16 tensor
    becomes float32 rounded to float16 (a Cast pair after its producer), float16 weights become float32 with the
    same values. onnxruntime's CPU provider keeps explicit Cast pairs, so this runs float16 numerics on a CPU.
    Works for any float16 graph (ours, or a plain float->float16 conversion downloaded elsewhere)."""
    import onnx
    from onnx import helper, numpy_helper

    with SourceGraph(path) as source:
        model = onnx.ModelProto()
        model.CopyFrom(source.model)
        graph = model.graph
        types = tensor_types(source.model)
        names = all_names(model)
        tensors: dict[str, Any] = {}
        for index, tensor in enumerate(graph.initializer):
            if tensor.data_type != FLOAT16:
                continue
            original = detached(tensor)
            replacement = placeholder(tensor.name, FLOAT, tensor.dims)
            graph.initializer[index].CopyFrom(replacement)
            count = int(np.prod(original.dims)) if len(original.dims) else 1
            tensors[tensor.name] = LazyTensor(count * 4, lambda t=original: np.asarray(source.array(t),
                                                                                         dtype=np.float32))
        new_nodes = []
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == FLOAT16:
                    value = numpy_helper.to_array(attribute.t).astype(np.float32)
                    attribute.t.CopyFrom(numpy_helper.from_array(value, attribute.t.name))
                if node.op_type == "Cast" and attribute.name == "to" and attribute.i == FLOAT16:
                    attribute.i = FLOAT
            rounded = []
            for position, name in enumerate(node.output):
                if name and types.get(name) == FLOAT16:
                    raw = unique_name(names, f"{name}_raw")
                    node.output[position] = raw
                    rounded.append((raw, name))
            new_nodes.append(node)
            for raw, name in rounded:
                half = unique_name(names, f"{raw}_fp16")
                new_nodes.append(helper.make_node("Cast", [raw], [half], name=unique_name(names, half + "_cast"),
                                                  to=FLOAT16))
                new_nodes.append(helper.make_node("Cast", [half], [name], name=unique_name(names, name + "_cast"),
                                                  to=FLOAT))
        del graph.node[:]
        graph.node.extend(new_nodes)
        for value in [*graph.input, *graph.output]:
            if value.type.tensor_type.elem_type == FLOAT16:
                value.type.tensor_type.elem_type = FLOAT
        del graph.value_info[:]
        write_rewritten(model, tensors, source, target, external_threshold)
