"""The WER difference between two precisions comes with an interval that says what the test set can tell apart."""

from __future__ import annotations

from nemo2sherpa.validate.transcripts import corpus_wer
from nemo2sherpa.validate.wer_delta import paired_wer_delta

TRUTH = ["the cat sat on the mat"] * 100  # 600 words


def test_a_few_flipped_words_on_a_small_set_cannot_be_told_from_noise():
    candidate = ["the cat sat on a mat"] * 3 + TRUTH[3:]  # 3 errors in 600 words: +0.5 points
    result = paired_wer_delta(TRUTH, TRUTH, candidate)
    assert result["delta"] == 0.5 and (result["utterances"], result["words"]) == (100, 600)
    assert (result["baseline"], result["candidate"]) == (corpus_wer(TRUTH, TRUTH, normalize=True),
                                                         corpus_wer(TRUTH, candidate, normalize=True))
    low, high = result["interval_95"]
    assert low <= 0.0 < 0.5 < high  # the interval holds both "no loss" and "more than half a point"


def test_a_real_regression_lies_beyond_doubt():
    candidate = ["the dog sat on a mat"] * 60 + TRUTH[60:]  # 120 errors in 600 words: +20 points
    low, high = paired_wer_delta(TRUTH, TRUTH, candidate)["interval_95"]
    assert 0.5 < low < 20.0 < high


def test_errors_both_systems_make_do_not_widen_the_interval():
    """Paired: an utterance both get wrong in the same way moves neither WER's difference nor its interval."""
    both_wrong = ["the dog sat on a mat"] * 50 + TRUTH[50:]
    result = paired_wer_delta(TRUTH, both_wrong, both_wrong)
    assert result["delta"] == 0.0 and result["interval_95"] == [0.0, 0.0]


def test_no_reference_words_gives_no_figure():
    assert paired_wer_delta(["", ""], ["a", ""], ["", "b"]) is None
