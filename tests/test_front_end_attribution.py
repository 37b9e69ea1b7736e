"""A transcript that differs from NeMo's is attributed: to sherpa-onnx's own front end when the exported graphs give
sherpa-onnx's text on sherpa-onnx's features, else left unexplained. Front-end differences do not count against the
exact-match rate; what they cost against the reference texts is judged instead."""

from __future__ import annotations

import numpy as np

from nemo2sherpa import sherpa_front_end
from nemo2sherpa.validate.results import CheckResult
from nemo2sherpa.validate.transcripts import FRONT_END, TranscriptRow, evaluate
from nemo2sherpa.validate.verdict import judge


def _rows(front_end_texts: dict[int, str], sherpa_texts: dict[int, str], count: int = 10) -> list[TranscriptRow]:
    rows = []
    for i in range(count):
        truth = f"word{i} is here"
        rows.append(TranscriptRow(name=f"clip{i}", seconds=2.0, truth=truth, nemo=truth,
                                  sherpa={"cpu": sherpa_texts.get(i, truth)}, front_end=front_end_texts.get(i)))
    return rows


def test_front_end_differences_are_attributed_and_judged_by_their_cost():
    # clips 0 and 1 differ and the graphs fed sherpa-onnx's features say the same: its front end; clip 2 differs
    # and the graphs do not say so: unexplained
    sherpa = {0: "word0 is hear", 1: "word1 his here", 2: "word2 is there"}
    rows = _rows({0: "word0 is hear", 1: "word1 his here", 2: "word2 is here"}, sherpa)
    check = evaluate(rows, ["cpu"], min_exact_match=0.85, max_wer_vs_nemo=5.0, reference_kind="nemo",
                     max_front_end_cost=10.0)
    figures = check.details["providers"]["cpu"]
    assert figures["exact_match_rate"] == 0.7
    assert (figures["differing"], figures["front_end_caused"], figures["unexplained"]) == (3, 2, 1)
    assert not check.failed  # 70% exact + 20% explained by the front end >= 85%
    causes = {u["name"]: u.get("cause", {}).get("cpu") for u in check.details["utterances"]}
    assert causes["clip0"] == causes["clip1"] == FRONT_END
    assert causes["clip2"].startswith("unexplained")
    assert figures["front_end_cost_points"] == round(2 * 100 / 30, 3)  # two words wrong out of 30

    # the same differences, but the front end may cost at most one point: that fails, and says who is to blame
    strict = evaluate(rows, ["cpu"], min_exact_match=0.85, max_wer_vs_nemo=5.0, reference_kind="nemo",
                      max_front_end_cost=1.0)
    assert strict.failed and "front end" in strict.problems[0]

    # without the attribution (no replay), the same clips fail the exact-match rate as before
    bare = evaluate(_rows({}, sherpa), ["cpu"], min_exact_match=0.85, max_wer_vs_nemo=5.0, reference_kind="nemo")
    assert bare.failed and "70%" in bare.problems[0]


def test_the_verdict_names_the_front_ends_share():
    sherpa = {0: "word0 is hear"}
    check = evaluate(_rows({0: "word0 is hear"}, sherpa), ["cpu"], min_exact_match=0.9, max_wer_vs_nemo=5.0,
                     reference_kind="nemo", max_front_end_cost=5.0)
    fidelity = CheckResult("graph_fidelity")
    fidelity.details.update(utterances=10, encoder_max_abs_diff=1e-6)
    verdict = judge({"graph_fidelity": fidelity, "transcripts": check})
    assert verdict.verdict == "passed"
    assert any("1 of the 1 differing clips come from sherpa-onnx's own front end" in line for line in verdict.proven)


def test_each_front_end_factor_changes_the_features():
    """Every switch in sherpa_front_end reaches kaldi-native-fbank or the post-processing: switching it to NeMo's
    value changes the features (a switch that did nothing would make the per-factor sweep meaningless)."""
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    audio[4000:4100] = 0.0  # a silent stretch, where the two log guards differ
    base = sherpa_front_end.features(audio, 80)
    assert base.shape == (80, 100)
    for factor in sherpa_front_end.FACTORS:
        switched = sherpa_front_end.features(audio, 80, sherpa_front_end.SHERPA_ONNX.with_nemo(factor))
        assert switched.shape == base.shape
        assert np.max(np.abs(switched - base)) > 1e-4, factor
