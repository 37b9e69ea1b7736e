"""Export a graph without letting the exporter write its weights.

The TorchScript exporter, asked for a model over 2 GB, serialises every tensor into protobuf and writes one file
per tensor (640 for the 1.1B encoder), which nemo2sherpa then has to read back into a single file: the weights are
copied in memory and written to disk twice. Here the exporter runs with export_params=False and its final parameter
dict (after constant folding, the values the graph really needs) is caught on its way to the serialiser; the graph
comes back small, and the caller writes each tensor once, straight into the external-data file.

Constant folding would still copy most weights: a Linear on 3-D input exports as MatMul(x, W^T) and the transpose
is folded into a new tensor. Swapping each Linear for a MatMul over a weight stored already transposed (one layer
at a time, so memory never holds two copies of the model) leaves nothing big to fold.

Both hooks touch torch internals; if a torch release moves them, capture comes back empty and the caller falls back
to the exporter's own files (slower, same result).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

from nemo2sherpa.graphs.graph import OnnxGraph
from nemo2sherpa.memory import release_free_memory


def _matmul_linear_class():
    import torch

    class MatMulLinear(torch.nn.Module):
        """y = x @ W^T + b with W^T stored: exports as MatMul over an initializer, nothing left to fold."""

        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.weight_t = torch.nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
            self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(),
                                                                            requires_grad=False)

        def forward(self, x):
            y = torch.matmul(x, self.weight_t)
            return y if self.bias is None else y + self.bias

    return MatMulLinear


def pretranspose_linears(module: Any, on_replaced: Callable[[str, Any], None] | None = None) -> int:
    """Replace every nn.Linear inside `module` in place; returns how many. The module computes the same function.

    on_replaced(path, new_module) is called as each one is made (weights_ahead starts writing it then)."""
    import torch

    matmul_linear = _matmul_linear_class()
    # Names only: holding the modules themselves would keep every original weight alive until the end.
    paths = [name for name, child in module.named_modules() if type(child) is torch.nn.Linear]
    for path in paths:
        parent_path, _, name = path.rpartition(".")
        parent = module.get_submodule(parent_path) if parent_path else module
        replacement = matmul_linear(getattr(parent, name))
        setattr(parent, name, replacement)  # the old Linear and its weight are freed here
        release_free_memory()  # and returned to the system now, not after the whole model was copied once more
        if on_replaced is not None:
            on_replaced(path, replacement)
    return len(paths)


@contextlib.contextmanager
def captured_parameters() -> Iterator[dict[str, Any]]:
    """Inside the block, torch.onnx.export writes no weights and the folded parameter dict lands in the yielded
    dict (name -> torch.Tensor)."""
    import torch
    import torch.onnx

    captured: dict[str, Any] = {}
    real_dedup = getattr(torch._C, "_jit_pass_onnx_deduplicate_initializers", None)
    real_export = torch.onnx.export
    if real_dedup is None:
        yield captured
        return

    def dedup(graph, params, training):
        result = real_dedup(graph, params, training)
        captured.clear()
        captured.update(result)
        return result

    def export(*args, **kwargs):
        kwargs["export_params"] = False
        return real_export(*args, **kwargs)

    torch._C._jit_pass_onnx_deduplicate_initializers = dedup
    torch.onnx.export = export
    try:
        yield captured
    finally:
        torch._C._jit_pass_onnx_deduplicate_initializers = real_dedup
        torch.onnx.export = real_export


def graph_with_initializers(path: Path, parameters: dict[str, Any]) -> OnnxGraph | None:
    """Turn the parameter inputs of a weightless export back into initializers whose data are `parameters`.

    None when the graph does not have exactly those inputs (the capture did not work as expected)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    inputs = {value.name for value in model.graph.input}
    if not parameters or not set(parameters) <= inputs:
        return None
    tensors = {}
    for name, tensor in parameters.items():
        array = tensor.detach().cpu().numpy()
        tensors[name] = array
        initializer = model.graph.initializer.add()
        initializer.name = name
        initializer.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        initializer.dims.extend(array.shape)
    kept = [value for value in model.graph.input if value.name not in parameters]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return OnnxGraph(model=model, source=path, tensors=tensors)
