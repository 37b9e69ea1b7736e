"""Check the written ONNX files against the PyTorch outputs recorded on probe inputs.

Tracing bakes shapes and branches into a graph; an export that is right only for the traced example (as a plain
export of a local-attention encoder is) is caught here, at conversion time, instead of by a user's garbled text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nemo2sherpa.convert.export.graphs import Probe
from nemo2sherpa.errors import UserError

RELATIVE_TOLERANCE = 1e-3


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # The graph's function is what is checked here, not onnxruntime's fastest form of it (validate runs sherpa-onnx
    # itself): basic optimisations and no weight prepacking load the 1.1B encoder in 0.2 s instead of 2.5 s.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_probes(graph_files: dict[str, Path], probes: list[Probe]) -> dict[str, dict[str, float]]:
    """Max abs difference per probe; a UserError naming the graph when one is off by more than the tolerance."""
    results: dict[str, dict[str, float]] = {}
    sessions = {}
    try:
        for probe in probes:
            if probe.graph not in sessions:
                sessions[probe.graph] = _session(graph_files[probe.graph])
            session = sessions[probe.graph]
            names = [i.name for i in session.get_inputs()]
            feed = {name: value for name, value in zip(names, probe.inputs)}
            got = session.run(None, feed)
            worst = 0.0
            for expected, actual in zip(probe.outputs, got):
                if expected.dtype.kind in "iu":
                    if not np.array_equal(expected.astype(np.int64), np.asarray(actual).astype(np.int64)):
                        raise UserError(f"the exported {probe.graph} gives other lengths than PyTorch "
                                        f"on a {probe.label} probe; the export is not faithful")
                    continue
                if expected.shape != np.shape(actual):
                    raise UserError(f"the exported {probe.graph} gives shape {np.shape(actual)} where PyTorch gives "
                                    f"{expected.shape} on a {probe.label} probe; the export is not faithful")
                diff = float(np.max(np.abs(expected - actual))) if expected.size else 0.0
                scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
                if not np.isfinite(diff) or diff > RELATIVE_TOLERANCE * scale:
                    raise UserError(f"the exported {probe.graph} differs from PyTorch by {diff:.3g} (max abs) on a "
                                    f"{probe.label} probe, above the tolerance {RELATIVE_TOLERANCE * scale:.3g}; "
                                    "the export is not faithful")
                worst = max(worst, diff)
            results.setdefault(probe.graph, {})[probe.label] = worst
    finally:
        sessions.clear()
    return results
