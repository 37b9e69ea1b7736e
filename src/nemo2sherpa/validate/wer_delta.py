"""How much worse one system's WER is than another's on the same utterances, and how sure that is.

Why an interval and not the bare difference: on a test set of a hundred short sentences four words are half a WER
point, and which four words flip between two faithful variants is chance. Measured on small-tdt-en's 100 bundled
held-out clips through sherpa-onnx: block-wise int8 +0.53 points against float32, the same variant +0.21 on the 200
clips of the full held-out set. A limit on the bare difference fails such a variant on noise, and passes a worse one
on a lucky draw; the paired bootstrap over utterances says which differences the set can tell apart.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

RESAMPLES = 2000


def paired_wer_delta(references: Sequence[str], baseline: Sequence[str], candidate: Sequence[str],
                     normalize: bool = True, seed: int = 0) -> dict[str, Any] | None:
    """Both WERs (percent, as transcripts.corpus_wer gives them), the candidate's minus the baseline's (percentage
    points) and its 95% interval from a paired bootstrap that resamples utterances (each resample keeps an
    utterance's errors in both systems together); None when the references hold no words."""
    from nemo2sherpa.validate.transcripts import normalize_for_wer, word_errors

    rows = []
    for ref, a, b in zip(references, baseline, candidate):
        if normalize:
            ref, a, b = normalize_for_wer(ref), normalize_for_wer(a), normalize_for_wer(b)
        errors_a, words = word_errors(ref, a)
        errors_b, _ = word_errors(ref, b)
        rows.append((errors_a, errors_b, words))
    if not rows or not sum(w for _, _, w in rows):
        return None
    errors = np.array(rows, dtype=np.float64)
    difference, words = errors[:, 1] - errors[:, 0], errors[:, 2]
    picks = np.random.default_rng(seed).integers(0, len(rows), size=(RESAMPLES, len(rows)))
    totals = words[picks].sum(axis=1)
    resampled = 100.0 * difference[picks].sum(axis=1) / np.where(totals > 0, totals, 1.0)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"baseline": round(float(100.0 * errors[:, 0].sum() / words.sum()), 3),
            "candidate": round(float(100.0 * errors[:, 1].sum() / words.sum()), 3),
            "delta": round(float(100.0 * difference.sum() / words.sum()), 3),
            "interval_95": [round(float(low), 3), round(float(high), 3)], "utterances": len(rows),
            "words": int(words.sum())}
