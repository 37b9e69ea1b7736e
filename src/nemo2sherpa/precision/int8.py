"""The int8 variant: dynamic quantization, as sherpa-onnx's published int8 models have it, written tensor by tensor.

The graphs are those of onnxruntime's `quantize_dynamic` (IntegerOps): each weight is stored in 8 bits with one
scale and zero point (per tensor, onnxruntime's own quantize_data), each activation is quantized at run time
(DynamicQuantizeLinear), and the product is computed in integers (MatMulInteger / ConvInteger, then Cast and Mul by
the two scales; onnxruntime's CPU provider fuses these into DynamicQuantizeMatMul / MatMulIntegerToFloat). Encoder
weights are QUInt8 (asymmetric; u8s8 products can saturate on x86 CPUs without VNNI), decoder and joiner weights
QInt8 (symmetric), like sherpa-onnx's int8 Parakeet models.

Why not call quantize_dynamic on the encoder: it loads the whole float32 model, runs shape inference over it and
keeps copies (13 GB peak RSS and 78 s for the 1.1B encoder). Here the graph is rewritten without its weights and
each weight is read from the float32 `.weights` file twice (once for its range, once when written), so memory holds
the int8 graph being serialised and one float32 tensor. The decoder and joiner (tens of MB) go through
quantize_dynamic itself.

Choices, per graph (measured in docs/precision.md):
- `const_b_only`: quantize only MatMuls whose B is a weight (onnxruntime's MatMulConstBOnly), leaving the attention
  products q.k^T, q.p^T and attn.v in float32 (quantizing both operands of those costs accuracy);
- `conv`: also quantize Conv (the subsampling convolutions and the conformer convolution module's pointwise and
  depthwise convolutions) into ConvInteger.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

UINT8, INT8 = 2, 3  # onnx.TensorProto


@dataclass(frozen=True)
class Int8Options:
    weight_type: str = "QUInt8"  # or "QInt8"
    const_b_only: bool = True
    conv: bool = True

    @property
    def qtype(self) -> int:
        return UINT8 if self.weight_type == "QUInt8" else INT8

    @property
    def symmetric(self) -> bool:
        return self.weight_type == "QInt8"  # onnxruntime's default WeightSymmetric

    def to_dict(self) -> dict[str, Any]:
        return {"weight_type": self.weight_type, "matmul_const_b_only": self.const_b_only, "conv": self.conv}


ENCODER_INT8 = Int8Options("QUInt8", const_b_only=True, conv=True)
SMALL_INT8 = Int8Options("QInt8", const_b_only=True, conv=True)


def _quant_params(rmin: float, rmax: float, options: Int8Options) -> tuple[np.ndarray, np.ndarray]:
    """(zero point, scale) exactly as onnxruntime.quantization computes them for a weight with this range."""
    from onnxruntime.quantization.quant_utils import compute_data_quant_params

    sample = np.zeros(1, dtype=np.float32)
    return compute_data_quant_params(sample, options.qtype, options.symmetric, reduce_range=False,
                                     rmin_override=float(rmin), rmax_override=float(rmax))


def _quantize_array(array: np.ndarray, zero_point, scale, qtype: int) -> np.ndarray:
    from onnxruntime.quantization.quant_utils import quantize_nparray

    return np.asarray(quantize_nparray(qtype, np.asarray(array, dtype=np.float32), scale, zero_point))


def quantize_streamed(path: Path, target: Path, options: Int8Options = ENCODER_INT8,
                      external_threshold: int | None = None) -> dict[str, Any]:
    """Write the dynamically quantized version of the float32 graph at `path` to `target`."""
    import onnx
    from onnx import helper, numpy_helper

    with SourceGraph(path) as source:
        model = onnx.ModelProto()
        model.CopyFrom(source.model)
        graph = model.graph
        types = tensor_types(source.model)
        names = all_names(model)
        initializers = {t.name: t for t in graph.initializer}
        tensors: dict[str, Any] = {}
        new_initializers = []
        quantized_weights: dict[str, tuple[str, str, str]] = {}
        quantized_inputs: dict[str, tuple[str, str, str]] = {}
        counts = {"MatMul": 0, "Conv": 0, "MatMul (activations)": 0}
        new_nodes = []

        def weight(name: str) -> tuple[str, str, str]:
            """(quantized, scale, zero point) initializer names for a float32 weight."""
            if name in quantized_weights:
                return quantized_weights[name]
            tensor = detached(initializers[name])
            values = source.array(tensor)
            rmin, rmax = min(0.0, float(values.min())), max(0.0, float(values.max()))
            del values
            zero_point, scale = _quant_params(rmin, rmax, options)
            q_name = unique_name(names, f"{name}_quantized")
            s_name = unique_name(names, f"{name}_scale")
            z_name = unique_name(names, f"{name}_zero_point")
            new_initializers.append(placeholder(q_name, options.qtype, tensor.dims))
            count = int(np.prod(tensor.dims)) if len(tensor.dims) else 1

            def compute(t=tensor, z=zero_point, s=scale) -> np.ndarray:
                return _quantize_array(source.array(t), z, s, options.qtype)

            tensors[q_name] = LazyTensor(count, compute)
            new_initializers.append(numpy_helper.from_array(np.asarray(scale, dtype=np.float32), s_name))
            new_initializers.append(numpy_helper.from_array(np.asarray(zero_point), z_name))
            quantized_weights[name] = (q_name, s_name, z_name)
            return quantized_weights[name]

        def activation(name: str) -> tuple[str, str, str]:
            if name not in quantized_inputs:
                q_name = unique_name(names, f"{name}_quantized")
                s_name = unique_name(names, f"{name}_scale")
                z_name = unique_name(names, f"{name}_zero_point")
                new_nodes.append(helper.make_node("DynamicQuantizeLinear", [name], [q_name, s_name, z_name],
                                                  name=unique_name(names, f"{name}_QuantizeLinear")))
                quantized_inputs[name] = (q_name, s_name, z_name)
            return quantized_inputs[name]

        def integer_op(node, op_type: str, a: tuple[str, str, str], b: tuple[str, str, str], **attributes) -> str:
            base = node.name or node.output[0]
            integer = unique_name(names, f"{node.output[0]}_output_quantized")
            new_nodes.append(helper.make_node(op_type, [a[0], b[0], a[2], b[2]], [integer],
                                              name=unique_name(names, f"{base}_quant"), **attributes))
            as_float = unique_name(names, f"{integer}_cast_output")
            new_nodes.append(helper.make_node("Cast", [integer], [as_float], name=unique_name(names, f"{integer}_cast"),
                                              to=FLOAT))
            scales = unique_name(names, f"{base}_quant_scales_mul:0")
            new_nodes.append(helper.make_node("Mul", [a[1], b[1]], [scales],
                                              name=unique_name(names, f"{base}_quant_scales_mul")))
            return as_float, scales

        for node in graph.node:
            if node.op_type == "MatMul" and all(types.get(i) == FLOAT for i in node.input):
                b = node.input[1]
                if b in initializers and len(initializers[b].dims) == 2:
                    as_float, scales = integer_op(node, "MatMulInteger", activation(node.input[0]), weight(b))
                    counts["MatMul"] += 1
                elif not options.const_b_only and b not in initializers and node.input[0] not in initializers:
                    as_float, scales = integer_op(node, "MatMulInteger", activation(node.input[0]), activation(b))
                    counts["MatMul (activations)"] += 1
                else:
                    new_nodes.append(node)
                    continue
                new_nodes.append(helper.make_node("Mul", [as_float, scales], [node.output[0]],
                                                  name=unique_name(names, f"{_base(node)}_quant_output_scale_mul")))
                continue
            if (node.op_type == "Conv" and options.conv and len(node.input) >= 2 and node.input[1] in initializers
                    and types.get(node.input[0]) == FLOAT):
                attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                as_float, scales = integer_op(node, "ConvInteger", activation(node.input[0]), weight(node.input[1]),
                                              **attributes)
                has_bias = len(node.input) > 2 and node.input[2]
                scaled = unique_name(names, f"{node.output[0]}_scaled") if has_bias else node.output[0]
                new_nodes.append(helper.make_node("Mul", [as_float, scales], [scaled],
                                                  name=unique_name(names, f"{_base(node)}_quant_output_scale_mul")))
                if has_bias:
                    rank = len(initializers[node.input[1]].dims)
                    shape_name = unique_name(names, f"{node.output[0]}_bias_reshape_shape")
                    shape = np.ones(rank, dtype=np.int64)
                    shape[1] = -1
                    new_initializers.append(numpy_helper.from_array(shape, shape_name))
                    reshaped = unique_name(names, f"{node.output[0]}_bias_reshape_output")
                    new_nodes.append(helper.make_node("Reshape", [node.input[2], shape_name], [reshaped],
                                                      name=unique_name(names, f"{node.output[0]}_bias_reshape")))
                    new_nodes.append(helper.make_node("Add", [scaled, reshaped], [node.output[0]],
                                                      name=unique_name(names, f"{node.output[0]}_bias_add")))
                counts["Conv"] += 1
                continue
            new_nodes.append(node)

        replace_nodes(graph, new_nodes, new_initializers)
        if not any(op.domain in ("", "ai.onnx") and op.version >= 10 for op in model.opset_import):
            raise ValueError(f"{path.name}: opset below 10 has no MatMulInteger")
        hashes = write_rewritten(model, tensors, source, target, external_threshold)
    return {"method": "nemo2sherpa streamed dynamic quantization (onnxruntime IntegerOps graph)",
            **options.to_dict(), "quantized": counts, "sha256": hashes}


def _base(node) -> str:
    return node.name or node.output[0]


def quantize_small(path: Path, target: Path, options: Int8Options = SMALL_INT8) -> dict[str, Any]:
    """onnxruntime's quantize_dynamic itself, for graphs small enough to load whole (decoder, joiner)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from nemo2sherpa.graphs.writing import FILE_MODE

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs advice ("consider pre-processing") on the root logger
    try:
        quantize_dynamic(
            model_input=str(path), model_output=str(target),
            weight_type=QuantType.QUInt8 if options.weight_type == "QUInt8" else QuantType.QInt8,
            extra_options={"MatMulConstBOnly": options.const_b_only, "DefaultTensorType": FLOAT},
            op_types_to_quantize=None if options.conv else ["MatMul", "Gather", "LSTM", "Attention"],
        )
    finally:
        root.setLevel(level)
    target.chmod(FILE_MODE)
    return {"method": "onnxruntime.quantization.quantize_dynamic", **options.to_dict()}
