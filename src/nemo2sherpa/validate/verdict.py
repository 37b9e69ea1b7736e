"""The verdict of a validation: passed only when something proved the export faithful to its checkpoint.

Checks that merely did not fail prove nothing: a directory with no manifest, no NeMo and no cached reference, or one
with random weights, runs every stage without finding a fault because nothing was there to compare with. Such a run
is "unproven" (exit 3), never "passed"; what was and was not established is said in words, in the report's first
lines and on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nemo2sherpa.validate.results import FAILED, PASSED, CheckResult

PASSED_VERDICT, FAILED_VERDICT, UNPROVEN_VERDICT = "passed", "failed", "unproven"
EXIT_CODES = {PASSED_VERDICT: 0, FAILED_VERDICT: 1, UNPROVEN_VERDICT: 3}


@dataclass
class Verdict:
    verdict: str
    proven: list[str] = field(default_factory=list)
    not_proven: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


def judge(checks: dict[str, CheckResult], random_weights: bool = False) -> Verdict:
    """Failed when a check failed; passed when graph fidelity or sherpa-onnx's transcripts were compared with NeMo
    and held; unproven otherwise."""
    proven: list[str] = []
    missing: list[str] = []
    contract = checks.get("contract")
    if contract is not None and contract.status == PASSED:
        runtime = contract.details.get("runtime", "sherpa-onnx")
        proven.append(f"the files meet {runtime}'s contract (names, inputs, outputs, metadata, vocabulary)")
    fidelity = checks.get("graph_fidelity")
    if fidelity is not None and fidelity.status == PASSED:
        d = fidelity.details
        proven.append(f"the graphs' token ids equal NeMo's greedy decode on {d.get('utterances', '?')} clips "
                      f"(encoder output within {d.get('encoder_max_abs_diff', 0):.2g} of NeMo's)")
    elif fidelity is not None and fidelity.status != FAILED:
        missing.append(f"graph fidelity to NeMo: {fidelity.reason or 'not compared'}")
    transcripts = checks.get("transcripts")
    compared_with_nemo = False
    runtime = (transcripts.details.get("runtime") if transcripts is not None else None) or "sherpa-onnx"
    if transcripts is not None and transcripts.status == PASSED:
        providers = transcripts.details.get("providers") or {}
        for provider, figures in providers.items():
            if figures.get("exact_match_rate") is not None:
                compared_with_nemo = True
                proven.append(f"{runtime} on {provider} transcribes like NeMo within the thresholds: identical "
                              f"text on {100 * figures['exact_match_rate']:.0f}% of clips, WER between them "
                              f"{figures.get('wer_vs_nemo_percent')}%" + _front_end_share(figures) +
                              _option_share(transcripts.details.get("front_end_option"), provider))
            elif figures.get("wer_vs_truth_percent") is not None and \
                    transcripts.details.get("judged_against"):
                proven.append(f"{runtime} on {provider} transcribes the reference texts at WER "
                              f"{figures['wer_vs_truth_percent']}% (no NeMo reference to compare with)")
        if not compared_with_nemo:
            missing.append(f"{runtime}'s transcripts against NeMo's: no NeMo reference")
    if random_weights:
        missing.insert(0, "anything about text: the directory holds random weights (--random-weights), an "
                          "architecture stand-in")
    failed = [name for name, check in checks.items() if check.status == FAILED]
    faithful = (fidelity is not None and fidelity.status == PASSED) or compared_with_nemo
    if failed:
        verdict = FAILED_VERDICT
    elif faithful and not random_weights:
        verdict = PASSED_VERDICT
    else:
        verdict = UNPROVEN_VERDICT
    return Verdict(verdict=verdict, proven=proven, not_proven=missing)


def _option_share(option: dict | None, provider: str) -> str:
    """What the family's front-end option gives on this provider, where validate measured it."""
    if not option or option.get("provider") != provider or option.get("points_above_nemo") is None:
        return ""
    return (f"; with `{option['python']}` ({option['does']}) its WER against the reference texts is "
            f"{option['wer_vs_truth_percent']:.2f}%, {option['points_above_nemo']:+.2f} points from NeMo's")


def _front_end_share(figures: dict) -> str:
    """How many of the differences sherpa-onnx's own feature extraction causes, and what it costs."""
    caused = figures.get("front_end_caused")
    if not caused:
        return ""
    cost = figures.get("front_end_cost_points")
    return (f"; {caused} of the {figures.get('differing')} differing clips come from sherpa-onnx's own front end "
            "(the graphs give its text when fed its features)" +
            (f", which costs {cost:+.2f} WER points against the reference texts" if cost is not None else ""))
