"""Export the graphs of a model family from the NeMo modules, and probe them.

NeMo's own Exportable.export is used (opset 17, the TorchScript-based exporter): it prepares each module the way NeMo
deploys it (the joint without log-softmax, the prediction network stepping without SOS, a CTC model's encoder and
head as one graph) and names inputs and outputs as sherpa-onnx expects. The dynamo exporter is not used: it breaks
on the LSTM prediction network.

Probes are inputs of shapes the tracer never saw (an odd number of frames, a random state); the PyTorch outputs on
them are kept so the written ONNX files can be checked against them after the model is freed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

from nemo2sherpa.checkpoint.loading import quiet_nemo
from nemo2sherpa.convert.export.lean import (
    OnnxGraph,
    captured_parameters,
    graph_with_initializers,
    pretranspose_linears,
)
from nemo2sherpa.families.base import Family, Probe

OPSET = 17
PROBE_FRAMES = (411, 97)  # not multiples of the subsampling factor, neither equal to the 256-frame trace example


def export_graphs(family: Family, modules: dict[str, Any], scratch: Path,
                  on_graph: Callable[[str], Any] | None = None,
                  on_linear: Callable[[str, Any], None] | None = None) -> dict[str, OnnxGraph]:
    """Export each role's module (family.export_modules), each with its weights held for write_graph (see
    export/lean.py). on_linear(path, module) sees each pre-transposed linear layer before the export starts."""
    import torch

    exported = {}
    with quiet_nemo(), torch.no_grad():
        for role, module in modules.items():
            folder = scratch / role
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{role}.onnx"
            with on_graph(role) if on_graph else contextlib.nullcontext():
                pretranspose_linears(module, on_linear)
                example = family.trace_example(role, module)
                with captured_parameters() as parameters:
                    _export(module, path, example)
                result = graph_with_initializers(path, parameters)
                if result is None:  # this torch keeps its internals elsewhere: let the exporter write the weights
                    _export(module, path, example)
                    result = OnnxGraph(model=_load_without_data(path), source=path)
            exported[role] = result
    return exported


def _export(module: Any, path: Path, example: tuple | None = None) -> None:
    import torch

    torch.manual_seed(0)  # NeMo's example inputs are random; keep exports reproducible
    module.export(str(path), input_example=example, onnx_opset_version=OPSET, use_dynamo=False, check_trace=False)


def _load_without_data(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False)


def make_probes(family: Family, model: Any, extra_frames: tuple[int, ...] = (), seed: int = 1234) -> list[Probe]:
    """PyTorch outputs on probe inputs, for every role of the family. Call after export_graphs: the modules are then
    in their export mode.

    extra_frames: encoder lengths the attention being exported needs checked besides the standard ones (see
    encoder_prep: windows crossed by local attention, lengths beyond NeMo's position table)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with quiet_nemo(), torch.no_grad():
        return family.probes(model, (*PROBE_FRAMES, *extra_frames), generator)
