"""Export the three graphs sherpa-onnx runs from the NeMo modules, and probe them.

NeMo's own Exportable.export is used (opset 17, the TorchScript-based exporter): it prepares each module the way NeMo
deploys it (the joint without log-softmax, the prediction network stepping without SOS) and names inputs and outputs
as sherpa-onnx expects. The dynamo exporter is not used: it breaks on the LSTM prediction network.

Probes are inputs of shapes the tracer never saw (an odd number of frames, a random state); the PyTorch outputs on
them are kept so the written ONNX files can be checked against them after the model is freed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nemo2sherpa.convert.lean_export import (
    ExportedGraph,
    captured_parameters,
    graph_with_initializers,
    pretranspose_linears,
)
from nemo2sherpa.convert.loading import quiet_nemo

OPSET = 17
GRAPH_MODULES = {"encoder": "encoder", "decoder": "decoder", "joiner": "joint"}
PROBE_FRAMES = (411, 97)  # not multiples of the subsampling factor, neither equal to the 256-frame trace example


@dataclass
class Probe:
    """Flat ONNX-order inputs and the PyTorch outputs they gave, for one graph."""

    graph: str
    label: str
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]


def export_graphs(model: Any, scratch: Path, on_graph: Callable[[str], Any] | None = None,
                  graphs: tuple[str, ...] = tuple(GRAPH_MODULES),
                  on_linear: Callable[[str, Any], None] | None = None) -> dict[str, ExportedGraph]:
    """Export the named graphs (default: encoder, decoder and joiner), each with its weights held for write_graph
    (see lean_export). on_linear(path, module) sees each pre-transposed linear layer before the export starts."""
    import torch

    exported = {}
    with quiet_nemo(), torch.no_grad():
        for graph in graphs:
            attribute = GRAPH_MODULES[graph]
            module = getattr(model, attribute)
            folder = scratch / graph
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{graph}.onnx"
            with on_graph(graph) if on_graph else contextlib.nullcontext():
                pretranspose_linears(module, on_linear)
                example = _joint_example(module) if graph == "joiner" else None
                with captured_parameters() as parameters:
                    _export(module, path, example)
                result = graph_with_initializers(path, parameters)
                if result is None:  # this torch keeps its internals elsewhere: let the exporter write the weights
                    _export(module, path, example)
                    result = ExportedGraph(model=_load_without_data(path), source=path)
            exported[graph] = result
    return exported


def _export(module: Any, path: Path, example: tuple | None = None) -> None:
    import torch

    torch.manual_seed(0)  # NeMo's example inputs are random; keep exports reproducible
    module.export(str(path), input_example=example, onnx_opset_version=OPSET, use_dynamo=False, check_trace=False)


JOINT_EXAMPLE_FRAMES = 3


def _joint_example(joint: Any) -> tuple:
    """A trace example for the joint of a few encoder frames instead of NeMo's 8192.

    NeMo's example makes the joint compute the logits of the whole vocabulary for 8192 frames, twice (a forward for
    the output example, one for the trace): on the 0.6B-v3 (8198 outputs) a 2.9 s export and 0.7 GB of peak memory,
    for a graph that sherpa-onnx runs one frame at a time. The joint has no length-dependent branch, the frame axis
    stays dynamic, and the self-check runs the written graph on one frame. Not 1: a dimension of size 1 can be
    specialised by the tracer."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        example = joint.input_example(max_batch=1, max_dim=JOINT_EXAMPLE_FRAMES)
    return tuple(example)


def _load_without_data(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False)


def _flatten(value: Any) -> list[np.ndarray]:
    if isinstance(value, (tuple, list)):
        return [item for part in value for item in _flatten(part)]
    return [value.detach().cpu().numpy()]


def _run_export_forward(module: Any, *args: Any) -> Any:
    """Call the module the way its export traced it: forward_for_export when it has one, type checks off."""
    from nemo.core.classes.common import typecheck

    forward = getattr(module, "forward_for_export", None) or module.forward
    with typecheck.disable_checks():
        return forward(*args)


def make_probes(model: Any, extra_frames: tuple[int, ...] = (), seed: int = 1234) -> list[Probe]:
    """PyTorch outputs on probe inputs. Call after export_graphs: the modules are then in their export mode.

    extra_frames: encoder lengths the attention being exported needs checked besides the standard ones (see
    encoder_prep: windows crossed by local attention, lengths beyond NeMo's position table)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    encoder, decoder, joint = model.encoder, model.decoder, model.joint
    mels = int(encoder._feat_in)
    probes = []
    with quiet_nemo(), torch.no_grad():
        for frames in (*PROBE_FRAMES, *extra_frames):
            features = torch.randn(1, mels, frames, generator=generator)
            length = torch.tensor([frames], dtype=torch.int64)
            outputs = _run_export_forward(encoder, features, length)
            probes.append(Probe("encoder", f"{frames} frames", _flatten((features, length)), _flatten(outputs)))

        layers, hidden = int(decoder.pred_rnn_layers), int(decoder.pred_hidden)
        targets = torch.tensor([[min(3, int(decoder.vocab_size) - 1)]], dtype=torch.int32)
        target_length = torch.tensor([1], dtype=torch.int32)
        states = (torch.randn(layers, 1, hidden, generator=generator), torch.randn(layers, 1, hidden, generator=generator))
        outputs = _run_export_forward(decoder, targets, target_length, states)
        probes.append(Probe("decoder", "one step", _flatten((targets, target_length, states)), _flatten(outputs)))

        encoder_out = torch.randn(1, int(joint.encoder_hidden), 1, generator=generator)
        decoder_out = torch.randn(1, int(joint.pred_hidden), 1, generator=generator)
        outputs = _run_export_forward(joint, encoder_out, decoder_out)
        probes.append(Probe("joiner", "one frame", _flatten((encoder_out, decoder_out)), _flatten(outputs)))
    return probes
