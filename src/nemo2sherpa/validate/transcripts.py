"""Check 3: transcripts through sherpa-onnx itself, against NeMo's and against the truth when it is known.

NeMo and sherpa-onnx compute features differently (see docs/sherpa-onnx-contract.md), so their texts are compared
as measured rates (exact-match, WER between them), never assumed equal.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Sequence

from nemo2sherpa.validate.results import CheckResult

DEFAULT_MIN_EXACT_MATCH = 0.9
DEFAULT_MAX_WER_VS_NEMO = 5.0  # percent
# Used only when there is no NeMo reference: the reference texts are then the only evidence that the directory's
# graphs and vocabulary belong together (a foreign joiner or swapped tokens read as 90-100% WER)
DEFAULT_MAX_WER_VS_TRUTH = 20.0  # percent


def normalize_for_wer(text: str) -> str:
    """Lowercase, punctuation dropped (apostrophes kept), spaces collapsed: how WER against a reference is fair to
    models with and without punctuation and casing."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch if (ch.isalnum() or ch in " '") else " " for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit operations, reference words) for one utterance; empty references count insertions only."""
    ref_words, hyp_words = reference.split(), hypothesis.split()
    if not ref_words:
        return len(hyp_words), 0
    if not hyp_words:
        return len(ref_words), len(ref_words)
    import jiwer

    out = jiwer.process_words(reference, hypothesis)
    return out.substitutions + out.deletions + out.insertions, len(ref_words)


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str], normalize: bool = False) -> float | None:
    """Percent; None when the references hold no words (WER is undefined)."""
    errors = words = 0
    for ref, hyp in zip(references, hypotheses):
        if normalize:
            ref, hyp = normalize_for_wer(ref), normalize_for_wer(hyp)
        e, w = word_errors(ref, hyp)
        errors += e
        words += w
    return round(100.0 * errors / words, 3) if words else None


@dataclass(frozen=True)
class TranscriptRow:
    name: str
    seconds: float
    truth: str | None
    nemo: str | None
    sherpa: dict[str, str]  # provider -> text


def evaluate(rows: list[TranscriptRow], providers: Sequence[str], min_exact_match: float,
             max_wer_vs_nemo: float, reference_kind: str | None,
             explain: Callable[[str, str], str | None] | None = None,
             max_wer_vs_truth: float | None = DEFAULT_MAX_WER_VS_TRUTH) -> CheckResult:
    """`explain(nemo_text, sherpa_text)`: the model family's known cause of such a difference, or None.
    `max_wer_vs_truth`: the WER against the reference texts that fails the check when no NeMo reference exists
    (None: texts are reported, not judged, as for a model with random weights)."""
    check = CheckResult("transcripts")
    with_nemo = [r for r in rows if r.nemo is not None]
    with_truth = [r for r in rows if r.truth]
    per_provider = {}
    for provider in providers:
        figures: dict[str, float | None] = {}
        if with_nemo:
            exact = sum(same_text(r.nemo or "", r.sherpa[provider]) for r in with_nemo) / len(with_nemo)
            wer = corpus_wer([r.nemo or "" for r in with_nemo], [r.sherpa[provider] for r in with_nemo])
            figures.update(exact_match_rate=round(exact, 4), wer_vs_nemo_percent=wer)
            causes = [explain(r.nemo or "", r.sherpa[provider]) if explain else None for r in with_nemo
                      if not same_text(r.nemo or "", r.sherpa[provider])]
            known = {cause for cause in causes if cause}
            if causes:
                figures["differing"] = len(causes)
                figures["differing_with_known_cause"] = sum(1 for cause in causes if cause)
            if exact < min_exact_match:
                check.fail(f"{provider}: sherpa-onnx matches NeMo exactly on {exact:.0%} of utterances "
                           f"(minimum {min_exact_match:.0%})" +
                           (f"; {sum(1 for c in causes if c)} of the {len(causes)} differences: "
                            f"{'; '.join(sorted(known))}" if known else ""))
            if wer is not None and wer > max_wer_vs_nemo:
                check.fail(f"{provider}: WER between sherpa-onnx and NeMo is {wer:.2f}% (maximum {max_wer_vs_nemo}%)")
        if with_truth:
            truth_wer = corpus_wer([r.truth or "" for r in with_truth], [r.sherpa[provider] for r in with_truth],
                                   normalize=True)
            figures["wer_vs_truth_percent"] = truth_wer
            if not with_nemo and max_wer_vs_truth is not None and truth_wer is not None \
                    and truth_wer > max_wer_vs_truth:
                check.fail(f"{provider}: with no NeMo reference, transcripts are judged against the reference texts: "
                           f"WER {truth_wer:.1f}% (maximum {max_wer_vs_truth:g}%)")
        per_provider[provider] = figures
    check.details["reference"] = reference_kind
    check.details["providers"] = per_provider
    if with_truth and with_nemo:
        both = [r for r in with_truth if r.nemo is not None]
        check.details["nemo_wer_vs_truth_percent"] = corpus_wer([r.truth or "" for r in both],
                                                                [r.nemo or "" for r in both], normalize=True)
    check.details["utterances"] = [
        {"name": r.name, "seconds": round(r.seconds, 3), "truth": r.truth, "nemo": r.nemo, "sherpa": r.sherpa}
        for r in rows
    ]
    if not with_nemo and not with_truth:
        check.reason = "no NeMo reference and no reference texts: transcripts are listed, not judged"
    elif not with_nemo and max_wer_vs_truth is not None:
        check.details["judged_against"] = "reference texts (no NeMo reference)"
        check.details["max_wer_vs_truth_percent"] = max_wer_vs_truth
    elif not with_nemo:
        check.reason = "random weights: transcripts are listed, not judged"
    return check
