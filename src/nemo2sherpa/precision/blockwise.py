"""The default int8 variant: weight-only, block-wise 8-bit weights in onnxruntime's MatMulNBits, written tensor by
tensor.

Each weight matrix [K, N] of a MatMul is stored as 8-bit integers with one float32 scale per block of `block_size`
consecutive values of K in a column (symmetric: no zero points). onnxruntime's CPU provider computes the product
with the activations quantized per block at run time (accuracy_level 4: int8 dot products), and its CUDA provider
has MatMulNBits kernels for 8 bits (onnxruntime 1.22 and later), so, unlike dynamic quantization, every node of the
variant runs on the GPU. Why this and not dynamic quantization is measured in docs/precision.md
(`bench/int8.py`): on small-tdt-en's held-out speech the dynamic variant loses 1.0 WER point against float32 and
this one 0.27, changing 2.4% of float32's words against 4.7% (6% against 12-18% on long inputs), at the same or
better CPU speed on the 1.1B (1.74x float32 against 1.70x decoding 30 s).

What is quantized:
- every MatMul whose second input is a 2-D float weight (attention projections, feed-forward, the joint's
  projections and output);
- pointwise 1-D convolutions (kernel 1, one group: the conformer convolution module's two pointwise convolutions,
  a CTC head), rewritten as Transpose -> MatMulNBits -> Transpose. onnxruntime cancels the transposes against the
  conformer's own (they would otherwise leave 13% of the 1.1B encoder's time in float32 Conv);
- not: the subsampling convolutions and the depthwise convolutions, which the sensitivity sweep of
  `bench/int8.py sweep` finds the most sensitive to 8-bit weights (and which are a small share of the time), nor
  the LSTM and embedding of the prediction network (no MatMul; quantizing them needs DynamicQuantizeLSTM, which has
  no CUDA kernel).

The values come from onnxruntime's own block quantizer (`quantize_matmul_8bits`/`_4bits`, the C++ routine behind
its MatMulNBitsQuantizer), so they equal what that tool writes; what is written here is the streaming (one float32
weight in memory at a time, as precision/int8.py explains) and the pointwise-convolution rewrite, which
MatMulNBitsQuantizer does not do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nemo2sherpa.graphs.graph import LazyTensor
from nemo2sherpa.graphs.rewriting import (
    FLOAT,
    SourceGraph,
    all_names,
    detached,
    placeholder,
    replace_nodes,
    tensor_types,
    unique_name,
    write_rewritten,
)

UINT8 = 2  # onnx.TensorProto
MICROSOFT = "com.microsoft"


@dataclass(frozen=True)
class BlockwiseOptions:
    bits: int = 8
    block_size: int = 128
    accuracy_level: int = 4  # int8 products on CPU; CUDA ignores it
    pointwise_conv: bool = True
    keep_float: tuple[str, ...] = ()  # regular expressions on node names: nodes left in float32

    def to_dict(self) -> dict[str, Any]:
        return {"bits": self.bits, "block_size": self.block_size, "accuracy_level": self.accuracy_level,
                "symmetric": True, "pointwise_conv": self.pointwise_conv, "keep_float": list(self.keep_float)}


INT8_BLOCKWISE = BlockwiseOptions(bits=8, block_size=128)


def block_quantize(weight: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(packed [N, blocks, block_size * bits / 8] uint8, scales [N, blocks] float32) of a [K, N] float32 weight,
    symmetric, by onnxruntime's own routine (K padded with zeros to whole blocks, as its quantizer does)."""
    from onnxruntime.capi import _pybind_state

    rows, cols = weight.shape
    blocks = -(-rows // block_size)
    padded = np.zeros((blocks * block_size, cols), dtype=np.float32)
    padded[:rows] = weight
    packed = np.zeros((cols, blocks, block_size * bits // 8), dtype=np.uint8)
    scales = np.zeros((cols, blocks), dtype=np.float32)
    zero_points = np.zeros((cols, -(-blocks // (8 // bits))), dtype=np.uint8)  # unused: symmetric
    routine = {8: _pybind_state.quantize_matmul_8bits, 4: _pybind_state.quantize_matmul_4bits}[bits]
    routine(packed, padded, scales, zero_points, block_size, cols, rows, True)
    return packed, scales


class _OnePass:
    """The packed weight and its scales come from one pass over the float32 weight: computed when the writer asks
    for the first of them, dropped once it has taken both (a weight read twice would double the time)."""

    def __init__(self, compute: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        self._compute = compute
        self._result: tuple[np.ndarray, np.ndarray] | None = None
        self._taken: set[int] = set()

    def take(self, index: int) -> np.ndarray:
        if self._result is None:
            self._result = self._compute()
            self._taken.clear()
        value = self._result[index]
        self._taken.add(index)
        if len(self._taken) == 2:
            self._result = None
        return value


def _is_pointwise_conv(node, weight) -> bool:
    """A 1-D convolution with kernel 1, one group, no padding or stride: a MatMul over the channel axis."""
    from onnx import helper

    if weight is None or len(weight.dims) != 3 or weight.dims[2] != 1:
        return False
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (attributes.get("group", 1) == 1 and list(attributes.get("strides", [1])) == [1]
            and not any(attributes.get("pads", [0, 0])))


def quantize_blockwise(path: Path, target: Path, options: BlockwiseOptions = INT8_BLOCKWISE,
                       include: Callable[[Any], bool] | None = None,
                       external_threshold: int | None = None) -> dict[str, Any]:
    """Write the block-wise weight-only quantized version of the float32 graph at `path` to `target`.

    `include(node)`, when given, further restricts which candidate nodes are quantized (the sensitivity sweep
    quantizes one at a time)."""
    import onnx
    from onnx import helper

    keep = [re.compile(pattern) for pattern in options.keep_float]
    with SourceGraph(path) as source:
        model = onnx.ModelProto()
        model.CopyFrom(source.model)
        graph = model.graph
        types = tensor_types(source.model)
        names = all_names(model)
        initializers = {t.name: t for t in graph.initializer}
        tensors: dict[str, Any] = {}
        new_initializers, new_nodes = [], []
        counts = {"MatMul": 0, "Conv (pointwise)": 0, "kept float": 0}

        def quantized(weight_name: str, as_matrix: Callable[[np.ndarray], np.ndarray]) -> tuple[str, str, int, int]:
            """(packed, scales) initializer names and (K, N) of a weight."""
            tensor = detached(initializers[weight_name])
            dims = list(tensor.dims)
            k, n = (dims[1], dims[0]) if len(dims) == 3 else (dims[0], dims[1])
            blocks = -(-k // options.block_size)
            q_name = unique_name(names, f"{weight_name}_Q{options.bits}")
            s_name = unique_name(names, f"{weight_name}_scales")
            names.update((q_name, s_name))

            one_pass = _OnePass(lambda: block_quantize(as_matrix(source.array(tensor)), options.bits,
                                                       options.block_size))
            blob = options.block_size * options.bits // 8
            new_initializers.append(placeholder(q_name, UINT8, (n, blocks, blob)))
            new_initializers.append(placeholder(s_name, FLOAT, (n, blocks)))
            tensors[q_name] = LazyTensor(n * blocks * blob, lambda: one_pass.take(0))
            tensors[s_name] = LazyTensor(n * blocks * 4, lambda: one_pass.take(1))
            return q_name, s_name, k, n

        def matmul_nbits(node, a: str, output: str, q_name: str, s_name: str, k: int, n: int):
            return helper.make_node("MatMulNBits", [a, q_name, s_name], [output], domain=MICROSOFT,
                                    name=unique_name(names, f"{node.name or node.output[0]}_Q{options.bits}"),
                                    K=k, N=n, bits=options.bits, block_size=options.block_size,
                                    accuracy_level=options.accuracy_level)

        for node in graph.node:
            weight = initializers.get(node.input[1]) if len(node.input) > 1 else None
            is_matmul = (node.op_type == "MatMul" and weight is not None and len(weight.dims) == 2
                         and weight.data_type == FLOAT and types.get(node.input[0]) == FLOAT)
            is_conv = (options.pointwise_conv and node.op_type == "Conv" and weight is not None
                       and weight.data_type == FLOAT and types.get(node.input[0]) == FLOAT
                       and _is_pointwise_conv(node, weight))
            if not (is_matmul or is_conv) or (include is not None and not include(node)):
                new_nodes.append(node)
                continue
            if any(pattern.search(node.name or node.output[0]) for pattern in keep):
                counts["kept float"] += 1
                new_nodes.append(node)
                continue
            if is_matmul:
                q_name, s_name, k, n = quantized(node.input[1], lambda w: np.asarray(w, dtype=np.float32))
                new_nodes.append(matmul_nbits(node, node.input[0], node.output[0], q_name, s_name, k, n))
                counts["MatMul"] += 1
                continue
            # pointwise Conv [B, C, T] x [O, C, 1] -> Transpose, [B, T, C] x [C, O], (+ bias), Transpose
            q_name, s_name, k, n = quantized(node.input[1], lambda w: np.ascontiguousarray(w[:, :, 0].T,
                                                                                         dtype=np.float32))
            base = node.name or node.output[0]
            channels_last = unique_name(names, f"{base}_channels_last")
            product = unique_name(names, f"{base}_product")
            names.update((channels_last, product))
            new_nodes.append(helper.make_node("Transpose", [node.input[0]], [channels_last], perm=[0, 2, 1],
                                              name=unique_name(names, f"{base}_to_channels_last")))
            new_nodes.append(matmul_nbits(node, channels_last, product, q_name, s_name, k, n))
            if len(node.input) > 2 and node.input[2]:
                biased = unique_name(names, f"{base}_biased")
                names.add(biased)
                new_nodes.append(helper.make_node("Add", [product, node.input[2]], [biased],
                                                  name=unique_name(names, f"{base}_bias")))
                product = biased
            new_nodes.append(helper.make_node("Transpose", [product], [node.output[0]], perm=[0, 2, 1],
                                              name=unique_name(names, f"{base}_to_channels_first")))
            counts["Conv (pointwise)"] += 1

        replace_nodes(graph, new_nodes, new_initializers)
        if counts["MatMul"] + counts["Conv (pointwise)"] and not any(op.domain == MICROSOFT
                                                                      for op in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MICROSOFT, 1))
        hashes = write_rewritten(model, tensors, source, target, external_threshold)
    return {"method": "nemo2sherpa streamed block-wise weight-only quantization (onnxruntime MatMulNBits)",
            **options.to_dict(), "quantized": counts, "sha256": hashes}
