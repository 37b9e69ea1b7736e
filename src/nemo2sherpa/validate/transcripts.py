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
# What sherpa-onnx's own feature extraction may cost against the reference texts, in WER points over NeMo's text on
# the same clips. Generous: the export cannot change sherpa-onnx's front end, and a model it suits less (a small or
# under-trained one) loses a few points to it (docs/accuracy.md); what the default catches is a front end that does
# not fit the model at all (preprocessor settings sherpa-onnx ignores). Every cost is reported, whatever it is.
DEFAULT_MAX_FRONT_END_COST = 5.0


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
    front_end: str | None = None  # the graphs' text on sherpa-onnx's own features (only where texts differ)


FRONT_END = "sherpa-onnx's front end"
UNEXPLAINED = ("unexplained: the graphs fed sherpa-onnx's features do not give its text either (a near-tie that "
               "sherpa-onnx's own onnxruntime build decides otherwise, or a difference outside the features)")


def cause_of(row: TranscriptRow, text: str, explain: Callable[[str, str], str | None] | None) -> str | None:
    """Why sherpa-onnx's `text` differs from NeMo's: its front end (the graphs give the same text on sherpa-onnx's
    features), the family's known cause, or None (unexplained)."""
    if row.front_end is not None and same_text(row.front_end, text):
        return FRONT_END
    return explain(row.nemo or "", text) if explain else None


def evaluate(rows: list[TranscriptRow], providers: Sequence[str], min_exact_match: float,
             max_wer_vs_nemo: float, reference_kind: str | None,
             explain: Callable[[str, str], str | None] | None = None,
             max_wer_vs_truth: float | None = DEFAULT_MAX_WER_VS_TRUTH,
             max_front_end_cost: float = DEFAULT_MAX_FRONT_END_COST) -> CheckResult:
    """`explain(nemo_text, sherpa_text)`: the model family's known cause of such a difference, or None.
    `max_wer_vs_truth`: the WER against the reference texts that fails the check when no NeMo reference exists
    (None: texts are reported, not judged, as for a model with random weights).

    A difference that sherpa-onnx's front end is proven to cause is not the export's: it does not count against
    the exact-match rate. With reference texts, what those differences cost is judged instead (sherpa-onnx's WER
    minus its WER with NeMo's text on those clips, at most `max_front_end_cost` points) and the WER between
    sherpa-onnx and NeMo is judged on the other differences; without them, on all of them."""
    check = CheckResult("transcripts")
    with_nemo = [r for r in rows if r.nemo is not None]
    with_truth = [r for r in rows if r.truth]
    both = [r for r in with_truth if r.nemo is not None]
    nemo_truth_wer = corpus_wer([r.truth or "" for r in both], [r.nemo or "" for r in both], normalize=True) \
        if both else None
    per_provider = {}
    for provider in providers:
        figures: dict[str, float | None] = {}
        if with_nemo:
            _judge_against_nemo(check, provider, with_nemo, figures, min_exact_match, max_wer_vs_nemo, explain,
                                judge_wer_on_unexplained=bool(both))
        if with_truth:
            truth_wer = corpus_wer([r.truth or "" for r in with_truth], [r.sherpa[provider] for r in with_truth],
                                   normalize=True)
            figures["wer_vs_truth_percent"] = truth_wer
            if not with_nemo and max_wer_vs_truth is not None and truth_wer is not None \
                    and truth_wer > max_wer_vs_truth:
                check.fail(f"{provider}: with no NeMo reference, transcripts are judged against the reference texts: "
                           f"WER {truth_wer:.1f}% (maximum {max_wer_vs_truth:g}%)")
        if both and figures.get("front_end_caused"):
            # what the front end's differences alone cost: sherpa-onnx's WER, against the same with NeMo's text on
            # the clips whose difference the front end causes
            texts = [r.sherpa[provider] for r in both]
            without = [r.nemo or "" if cause_of(r, t, explain) == FRONT_END else t for r, t in zip(both, texts)]
            references = [r.truth or "" for r in both]
            cost = round((corpus_wer(references, texts, normalize=True) or 0.0)
                         - (corpus_wer(references, without, normalize=True) or 0.0), 3)
            figures["front_end_cost_points"] = cost
            if cost > max_front_end_cost:
                check.fail(f"{provider}: sherpa-onnx's own front end costs {cost:.2f} WER points against the reference "
                           f"texts (maximum {max_front_end_cost:g}): the graphs are not the cause, its features are")
        per_provider[provider] = figures
    check.details["reference"] = reference_kind
    check.details["providers"] = per_provider
    if both:
        check.details["nemo_wer_vs_truth_percent"] = nemo_truth_wer
    check.details["utterances"] = [_utterance(r, explain) for r in rows]
    if not with_nemo and not with_truth:
        check.reason = "no NeMo reference and no reference texts: transcripts are listed, not judged"
    elif not with_nemo and max_wer_vs_truth is not None:
        check.details["judged_against"] = "reference texts (no NeMo reference)"
        check.details["max_wer_vs_truth_percent"] = max_wer_vs_truth
    elif not with_nemo:
        check.reason = "random weights: transcripts are listed, not judged"
    return check


def option_figures(rows: list[TranscriptRow], texts: dict[str, str]) -> dict[str, float | None]:
    """What sherpa-onnx gives with a front-end option set (`texts`: clip -> text): how often it matches NeMo's text,
    and, with reference texts, its WER and how far that is from NeMo's on the same clips. Reported, not judged: the
    option is the user's to set."""
    with_nemo = [r for r in rows if r.nemo is not None and r.name in texts]
    figures: dict[str, float | None] = {}
    if with_nemo:
        hypotheses = [texts[r.name] for r in with_nemo]
        figures["exact_match_rate"] = round(
            sum(same_text(r.nemo or "", t) for r, t in zip(with_nemo, hypotheses)) / len(with_nemo), 4)
        figures["wer_vs_nemo_percent"] = corpus_wer([r.nemo or "" for r in with_nemo], hypotheses)
    both = [r for r in with_nemo if r.truth]
    if both:
        references = [r.truth or "" for r in both]
        wer = corpus_wer(references, [texts[r.name] for r in both], normalize=True)
        nemo = corpus_wer(references, [r.nemo or "" for r in both], normalize=True)
        figures["wer_vs_truth_percent"] = wer
        if wer is not None and nemo is not None:
            figures["points_above_nemo"] = round(wer - nemo, 3)
    return figures


def _judge_against_nemo(check: CheckResult, provider: str, rows: list[TranscriptRow], figures: dict,
                        min_exact_match: float, max_wer_vs_nemo: float,
                        explain: Callable[[str, str], str | None] | None, judge_wer_on_unexplained: bool) -> None:
    texts = [r.sherpa[provider] for r in rows]
    exact = sum(same_text(r.nemo or "", t) for r, t in zip(rows, texts)) / len(rows)
    wer = corpus_wer([r.nemo or "" for r in rows], texts)
    figures.update(exact_match_rate=round(exact, 4), wer_vs_nemo_percent=wer)
    causes = [cause_of(r, t, explain) for r, t in zip(rows, texts) if not same_text(r.nemo or "", t)]
    if not causes:
        return
    front_end = sum(1 for c in causes if c == FRONT_END)
    known = sorted({c for c in causes if c and c != FRONT_END})
    figures.update(differing=len(causes), front_end_caused=front_end,
                   differing_with_known_cause=sum(1 for c in causes if c and c != FRONT_END),
                   unexplained=sum(1 for c in causes if not c))
    judged = exact + front_end / len(rows)
    if judged < min_exact_match:
        check.fail(f"{provider}: sherpa-onnx matches NeMo exactly on {exact:.0%} of utterances" +
                   (f" ({judged:.0%} counting the {front_end} its front end causes)" if front_end else "") +
                   f" (minimum {min_exact_match:.0%})" +
                   (f"; {len(causes) - front_end - figures['unexplained']} of the other differences: "
                    f"{'; '.join(known)}" if known else ""))
    if judge_wer_on_unexplained and front_end:
        # the front end's share is judged against the truth instead: NeMo's text stands in for those rows
        kept = [r.nemo if cause_of(r, t, explain) == FRONT_END else t for r, t in zip(rows, texts)]
        wer = corpus_wer([r.nemo or "" for r in rows], kept)
        figures["wer_vs_nemo_without_front_end_percent"] = wer
    if wer is not None and wer > max_wer_vs_nemo:
        check.fail(f"{provider}: WER between sherpa-onnx and NeMo is {wer:.2f}% (maximum {max_wer_vs_nemo}%)" +
                   (" outside the differences its front end causes" if judge_wer_on_unexplained and front_end
                    else ""))


def _utterance(row: TranscriptRow, explain: Callable[[str, str], str | None] | None) -> dict:
    entry = {"name": row.name, "seconds": round(row.seconds, 3), "truth": row.truth, "nemo": row.nemo,
             "sherpa": row.sherpa}
    if row.nemo is not None:
        causes = {p: cause_of(row, t, explain) for p, t in row.sherpa.items() if not same_text(row.nemo, t)}
        if causes:
            entry["cause"] = {p: c or UNEXPLAINED if row.front_end is not None else c or "not attributed"
                              for p, c in causes.items()}
        if row.front_end is not None:
            entry["graphs_on_sherpa_features"] = row.front_end
    return entry
