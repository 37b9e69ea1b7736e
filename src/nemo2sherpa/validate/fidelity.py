"""Check 2: graph fidelity. NeMo's own features go into the PyTorch encoder and the ONNX encoder; the ONNX graphs
decode greedily; token ids must equal NeMo's greedy decode. A mismatch is traced to the graph that causes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nemo2sherpa.validate.audio import Clip
from nemo2sherpa.validate.greedy import GraphTransducer
from nemo2sherpa.validate.references import Reference
from nemo2sherpa.validate.results import CheckResult

DEFAULT_ENCODER_TOLERANCE = 1e-3
DEFAULT_MAX_SYMBOLS = 10  # NeMo's greedy default


@dataclass(frozen=True)
class ClipFidelity:
    name: str
    encoder_max_abs_diff: float
    tokens_equal: bool
    graph: str | None  # the graph blamed for a mismatch
    detail: str | None


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return index
    return min(len(a), len(b))


def _blame_decoder_or_joiner(graphs: GraphTransducer, reference: Reference, nemo, tolerance: float) -> tuple[str, str]:
    """Walk NeMo's token path with PyTorch and ONNX side by side; the first graph whose output drifts is blamed."""
    states = [np.zeros(graphs.state_shape, dtype=np.float32) for _ in range(2)]
    torch_state = nemo.initial_state()
    path = [graphs.blank, *reference.tokens[:20]]
    for step, token in enumerate(path):
        onnx_out, states = graphs.step(token, states)
        torch_out, torch_state = nemo.decoder_step(token, torch_state)
        diff = float(np.max(np.abs(onnx_out.reshape(-1) - torch_out.reshape(-1))))
        if diff > tolerance:
            return "decoder", f"prediction network output differs by {diff:.3g} after token {token} (step {step})"
        frame = reference.encoded[:, min(step, reference.encoded.shape[1] - 1)]
        onnx_logits = graphs.joint_logits(frame, onnx_out)
        torch_logits = nemo.joint(frame, torch_out.reshape(-1))
        if onnx_logits.shape != torch_logits.shape:
            return "joiner", f"joiner gives {onnx_logits.shape[0]} logits, NeMo's joint {torch_logits.shape[0]}"
        diff = float(np.max(np.abs(onnx_logits - torch_logits)))
        if diff > tolerance * max(1.0, float(np.max(np.abs(torch_logits)))):
            return "joiner", f"logits differ by {diff:.3g} (step {step})"
    return "decoder/joiner", "outputs agree within tolerance on NeMo's path; the difference is a near-tie"


def compare_clip(clip: Clip, reference: Reference, graphs: GraphTransducer, max_symbols: int | None,
                 tolerance: float, nemo=None) -> ClipFidelity:
    encoded, length = graphs.encode(reference.features)
    valid = min(length, reference.encoded.shape[1])
    diff = float(np.max(np.abs(encoded[:, :valid] - reference.encoded[:, :valid]))) if valid else 0.0
    if length != reference.encoded.shape[1]:
        return ClipFidelity(clip.name, diff, False, "encoder",
                            f"encoder gives {length} frames, NeMo {reference.encoded.shape[1]}")
    hypothesis = graphs.greedy(encoded, length, max_symbols)
    if hypothesis.tokens == reference.tokens:
        graph = "encoder" if diff > tolerance else None
        detail = f"encoder output differs by {diff:.3g} (tolerance {tolerance:g})" if graph else None
        return ClipFidelity(clip.name, diff, True, graph, detail)
    where = _first_difference(hypothesis.tokens, reference.tokens)
    if diff > tolerance:
        return ClipFidelity(clip.name, diff, False, "encoder",
                            f"encoder output differs by {diff:.3g} (tolerance {tolerance:g}); tokens differ from "
                            f"position {where}")
    # The encoder agrees: decode NeMo's own encoder output with the ONNX decoder and joiner.
    on_nemo_encoder = graphs.greedy(reference.encoded, reference.encoded.shape[1], max_symbols)
    if on_nemo_encoder.tokens == reference.tokens:
        return ClipFidelity(clip.name, diff, False, "encoder",
                            f"a difference of {diff:.3g} in the encoder output flips a near-tie at token {where}")
    if nemo is None:
        return ClipFidelity(clip.name, diff, False, "decoder/joiner",
                            f"tokens differ from position {where} with the encoder agreeing (NeMo not loaded to "
                            "tell decoder from joiner)")
    graph, detail = _blame_decoder_or_joiner(graphs, reference, nemo, tolerance)
    return ClipFidelity(clip.name, diff, False, graph, f"tokens differ from position {where}: {detail}")


def summarize(results: list[ClipFidelity], tolerance: float, reference_kind: str) -> CheckResult:
    check = CheckResult("graph_fidelity")
    worst = max((r.encoder_max_abs_diff for r in results), default=0.0)
    matched = sum(r.tokens_equal for r in results)
    mismatches = [{"utterance": r.name, "graph": r.graph, "detail": r.detail} for r in results if r.graph]
    check.details.update({
        "reference": reference_kind,
        "utterances": len(results),
        "encoder_max_abs_diff": worst,
        "token_match_rate": matched / len(results) if results else None,
        "mismatches": mismatches,
    })
    for entry in mismatches:
        check.fail(f"{entry['utterance']}: {entry['graph']}: {entry['detail']}")
    if worst > tolerance and not any(m["graph"] == "encoder" for m in mismatches):
        check.fail(f"encoder output differs from NeMo by {worst:.3g} (tolerance {tolerance:g})")
    return check
