"""Check 2: graph fidelity. NeMo's own features go into NeMo and into the ONNX graphs; the graphs' output (the
transducer's encoder output, a CTC model's log-probabilities) must match NeMo's, and greedy token ids must equal NeMo's
greedy decode. A mismatch is traced to the graph that causes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nemo2sherpa.families import Family
from nemo2sherpa.families.base import GraphDecoder
from nemo2sherpa.validate.audio import Clip
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


def compare_clip(clip: Clip, reference: Reference, graphs: GraphDecoder, family: Family, max_symbols: int | None,
                 tolerance: float, nemo=None) -> ClipFidelity:
    first = family.encoder_role.name
    encoded, length = graphs.encode(reference.features)
    valid = min(length, reference.encoded.shape[1])
    diff = float(np.max(np.abs(encoded[:, :valid] - reference.encoded[:, :valid]))) if valid else 0.0
    if length != reference.encoded.shape[1]:
        return ClipFidelity(clip.name, diff, False, first,
                            f"{first} gives {length} frames, NeMo {reference.encoded.shape[1]}")
    hypothesis = graphs.greedy(encoded, length, max_symbols)
    if hypothesis.tokens == reference.tokens:
        graph = first if diff > tolerance else None
        detail = f"{first} output differs by {diff:.3g} (tolerance {tolerance:g})" if graph else None
        return ClipFidelity(clip.name, diff, True, graph, detail)
    where = _first_difference(hypothesis.tokens, reference.tokens)
    if diff > tolerance:
        return ClipFidelity(clip.name, diff, False, first,
                            f"{first} output differs by {diff:.3g} (tolerance {tolerance:g}); tokens differ from "
                            f"position {where}")
    if not family.decodes_reference_output:
        return ClipFidelity(clip.name, diff, False, first,
                            f"a difference of {diff:.3g} in the {first} output flips a near-tie at token {where}")
    # The encoder agrees: decode NeMo's own encoder output with the ONNX graphs after it.
    on_nemo_encoder = graphs.greedy(reference.encoded, reference.encoded.shape[1], max_symbols)
    if on_nemo_encoder.tokens == reference.tokens:
        return ClipFidelity(clip.name, diff, False, first,
                            f"a difference of {diff:.3g} in the {first} output flips a near-tie at token {where}")
    after = "/".join(role.name for role in family.roles if not role.holds_encoder)
    if nemo is None:
        return ClipFidelity(clip.name, diff, False, after,
                            f"tokens differ from position {where} with the {first} agreeing (NeMo not loaded to "
                            f"tell which of {after})")
    blame = family.blame(graphs, reference, nemo, tolerance)
    graph, detail = (blame.graph, blame.detail) if blame else (after, "not traced")
    return ClipFidelity(clip.name, diff, False, graph, f"tokens differ from position {where}: {detail}")


def summarize(results: list[ClipFidelity], tolerance: float, reference_kind: str, first: str = "encoder"
              ) -> CheckResult:
    """`first`: the family's encoder-holding graph, whose output was compared."""
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
    if worst > tolerance and not any(m["graph"] == first for m in mismatches):
        check.fail(f"{first} output differs from NeMo by {worst:.3g} (tolerance {tolerance:g})")
    return check
