"""Long inputs in validate: an input beyond the 400 s that a plain export accepts, whenever the manifest claims one.

- `long_input_clip(manifest, clips, sample_rate)`: the validation clips, whole, one after another with short pauses,
  to just beyond the position table of a plain export (450 s by default); None when the manifest claims no more.
- `check_long_input(...)`: the "long_audio" check. Graph level (judged): NeMo's features of the long clip through
  the exported encoder must give NeMo's encoder output and greedy token ids. sherpa-onnx (judged: it must run;
  reported: decode time, peak memory of the process, words, WER against NeMo and against the known text). Small
  models trained on short utterances (the bundled fixtures) transcribe concatenated audio badly in NeMo itself,
  and sherpa-onnx's features flip their near-ties, so those rates are reported, never judged.
- `compare_exports(...)`: the "attention" comparison: WER of this export's transcripts against another export of
  the same checkpoint (a local-attention export against the full-attention one) on the audio both can run.
- NeMo reference helpers: an export whose attention was changed at conversion (--attention local) must be compared
  with NeMo running that same attention, and its cached references must not mix with the checkpoint's own.
- The long decode runs in a child process (validate/sherpa_child.py) with an address-space limit, so a runaway
  allocation cannot take the machine down.

Pure Python and numpy at import time: validate never needs NeMo or torch for this module.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nemo2sherpa.formatting import significant
from nemo2sherpa.validate.audio import Clip
from nemo2sherpa.validate.model_dir import ModelDir
from nemo2sherpa.validate.results import CheckResult
from nemo2sherpa.validate.sherpa_child import decode_in_child

DEFAULT_LONG_SECONDS = 450.0
BEYOND_TABLE_SECONDS = 50.0  # how far past a plain export's limit the long clip goes at least
PAUSE_SECONDS = 0.3
DEFAULT_FRAME_SECONDS = 0.08
DEFAULT_POS_EMB_MAX_LEN = 5000


# ---------------------------------------------------------------------------------------------------------------
# What the manifest claims


def frame_seconds(manifest) -> float:
    export = manifest.export if manifest is not None else {}
    value = export.get("encoder_frame_seconds")
    if value:
        return float(value)
    return manifest.model.encoder_frame_seconds if manifest is not None else DEFAULT_FRAME_SECONDS


def plain_limit_seconds(manifest) -> float:
    """The longest input a plain export of this model accepts: its position table (5000 frames = 400 s)."""
    frames = DEFAULT_POS_EMB_MAX_LEN
    if manifest is not None and manifest.model.architecture.pos_emb_max_len:
        frames = manifest.model.architecture.pos_emb_max_len
    return frames * frame_seconds(manifest)


def supported_seconds(manifest) -> float:
    """The longest input the manifest claims (math.inf: no limit in the graph). Manifests written before the
    export recorded its attention claim what a plain export accepts."""
    if manifest is None or "attention" not in manifest.export:
        return plain_limit_seconds(manifest)
    value = manifest.export.get("max_audio_seconds")
    return math.inf if value is None else float(value)


# onnxruntime's CUDA kernels index tensors with 32 bits. A full-attention encoder aborts its process (CUDA error 700,
# an illegal memory access) once its heads x T x (2T - 1) position scores pass 2^31 elements, which is also where the
# heads x T x T float32 attention scores pass 2^32 bytes: heads x T^2 = 2^30. Measured on an H200 with
# onnxruntime-gpu 1.31.1: the 0.6B and 110M (8 heads) decode 900 s and abort at 960 s and 1200 s, in the fused and in
# the --no-optimize encoder alike; this bound is 926 s for them.
CUDA_HEADS_FRAMES_SQUARED = 2 ** 30


def cuda_limit_seconds(manifest) -> float:
    """The longest input a full-attention export can decode under onnxruntime's CUDA provider; math.inf for local
    attention (its tensors grow linearly) and when the manifest does not say."""
    if manifest is None or attention_of(manifest).get("kind") != "full":
        return math.inf
    heads = manifest.model.architecture.attention_heads
    if not heads:
        return math.inf
    return math.isqrt(CUDA_HEADS_FRAMES_SQUARED // heads) * frame_seconds(manifest)


def claims_long_input(manifest) -> bool:
    return supported_seconds(manifest) > plain_limit_seconds(manifest)


def attention_of(manifest) -> dict[str, Any]:
    return dict((manifest.export.get("attention") or {}) if manifest is not None else {})


# ---------------------------------------------------------------------------------------------------------------
# The long clip


def long_input_clip(manifest, clips: Sequence[Clip], sample_rate: int, seconds: float | None = None) -> Clip | None:
    """Whole clips with 0.3 s pauses, repeated to at least `seconds` (default: 450 s, and at least 50 s beyond a
    plain export's limit, within what the manifest claims). Its text is the clips' texts joined when all are known.
    None when the manifest claims nothing beyond a plain export, or there is no audio."""
    if not claims_long_input(manifest):
        return None
    usable = [c for c in clips if c.audio.size]
    if not usable:
        return None
    floor = plain_limit_seconds(manifest)
    target = float(seconds) if seconds else max(DEFAULT_LONG_SECONDS, floor + BEYOND_TABLE_SECONDS)
    target = min(target, supported_seconds(manifest))
    needed = math.ceil(target * sample_rate)
    pause = np.zeros(int(PAUSE_SECONDS * sample_rate), dtype=np.float32)
    pieces: list[np.ndarray] = []
    texts: list[str | None] = []
    total = 0
    while total < needed:
        for clip in usable:
            audio = clip.audio if clip.sample_rate == sample_rate else _resample(clip, sample_rate)
            pieces += [audio, pause]
            texts.append(clip.text)
            total += audio.size + pause.size
            if total >= needed:
                break
    audio = np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32)
    text = " ".join(t.strip() for t in texts if t) if all(texts) else None
    return Clip(name=f"long-input-{len(audio) / sample_rate:.0f}s", audio=audio, sample_rate=sample_rate, text=text)


def _resample(clip: Clip, sample_rate: int) -> np.ndarray:
    import soxr

    return np.asarray(soxr.resample(clip.audio, clip.sample_rate, sample_rate, quality="HQ"), dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------
# NeMo references for exports whose attention was changed at conversion


def reference_attention(manifest) -> tuple[str, list[int]] | None:
    """(self_attention_model, att_context_size) NeMo must switch to for its reference to match the export; None
    when the export runs the attention the checkpoint was trained with."""
    attention = attention_of(manifest)
    if not attention or attention.get("as_trained", True):
        return None
    context = attention.get("context") or [-1, -1]
    return str(attention["self_attention_model"]), [int(c) for c in context]


def apply_reference_attention(nemo_model: Any, manifest) -> bool:
    """Switch a restored NeMo model to the export's attention (True), or leave it (False)."""
    wanted = reference_attention(manifest)
    if wanted is None:
        return False
    model_name, context = wanted
    nemo_model.change_attention_model(self_attention_model=model_name, att_context_size=context)
    nemo_model.eval()  # NeMo builds the new modules in training mode
    return True


def reference_key(checkpoint_sha256: str, manifest, family: str = "transducer") -> str:
    """The key of cached NeMo references: the checkpoint's sha256 as trained (its transducer), another one per
    changed attention, per other family (a hybrid's CTC branch decodes otherwise) and per look-ahead."""
    wanted = reference_attention(manifest)
    streaming = manifest.model.streaming if manifest is not None else None
    if wanted is None and family == "transducer" and streaming is None:
        return checkpoint_sha256
    tag = checkpoint_sha256 if wanted is None else f"{checkpoint_sha256}:{wanted[0]}:{','.join(map(str, wanted[1]))}"
    if family != "transducer":
        tag = f"{tag}:{family}"
    if streaming is not None:  # each look-ahead is another model
        tag = f"{tag}:lookahead={streaming.lookahead}"
    return hashlib.sha256(tag.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# The checks


def check_long_input(clip: Clip | None, model, spec, reference=None, max_symbols: int | None = None,
                     tolerance: float = 1e-3, threads: int = 2, memory_limit_bytes: int | None = None,
                     graphs=None) -> CheckResult:
    """The long_audio check for a model directory (validate.model_dir.ModelDir) and its contract spec.

    reference: NeMo's validate.references.Reference for the clip, or None (graph level then skipped, noted)."""
    from nemo2sherpa.validate.transcripts import corpus_wer

    manifest = model.manifest
    if clip is None:
        return CheckResult.skipped("long_audio", f"the manifest claims no input beyond "
                                                 f"{plain_limit_seconds(manifest):.0f} s")
    check = CheckResult("long_audio")
    claimed = supported_seconds(manifest)
    check.details.update({
        "utterance": clip.name,
        "seconds": round(clip.seconds, 2),
        "claimed_max_seconds": None if math.isinf(claimed) else claimed,
        "attention": attention_of(manifest) or None,
    })
    variant = getattr(model, "variant", "fp32")
    if reference is not None and variant != "fp32":
        check.details["graph"] = None
        check.details["note"] = (f"{variant} graphs are compared with fp32 by the precision check; here only "
                                 "sherpa-onnx's decode is judged")
    elif reference is not None:
        from nemo2sherpa.validate import fidelity

        graphs = graphs or model.family.graph_decoder(model.graphs, spec, threads=threads)
        result = fidelity.compare_clip(clip, reference, graphs, model.family, max_symbols or spec.max_symbols or
                                       fidelity.DEFAULT_MAX_SYMBOLS, tolerance)
        check.details["graph"] = {"encoder_max_abs_diff": result.encoder_max_abs_diff,
                                  "tokens_equal_nemo": result.tokens_equal, "nemo_tokens": len(reference.tokens)}
        if result.graph:
            check.fail(f"{clip.name}: {result.graph}: {result.detail}")
    else:
        check.details["graph"] = None
        check.details["note"] = "no NeMo reference: the graph-level comparison was skipped"

    decoded = decode_in_child(model, clip.audio, clip.sample_rate, threads=threads, feature_dim=spec.feat_dim,
                              memory_limit_bytes=memory_limit_bytes)
    minutes = clip.seconds / 60.0
    sherpa: dict[str, Any] = {"ok": decoded.ok, "error": decoded.error,
                              "peak_rss_gb": _gb(decoded.peak_rss_bytes)}
    if decoded.ok:
        sherpa.update(
            decode_seconds=decoded.decode_seconds,
            decode_seconds_per_minute=round(decoded.decode_seconds / minutes, 3) if decoded.decode_seconds else None,
            words=len(decoded.text.split()),
            wer_vs_nemo_percent=corpus_wer([reference.text], [decoded.text]) if reference is not None else None,
            wer_vs_truth_percent=corpus_wer([clip.text], [decoded.text], normalize=True) if clip.text else None,
            nemo_wer_vs_truth_percent=corpus_wer([clip.text], [reference.text], normalize=True)
            if clip.text and reference is not None else None,
            text_head=" ".join(decoded.text.split()[:30])[:300],  # a model that never says a space: one long word
        )
    else:
        check.fail(f"sherpa-onnx could not decode the {clip.seconds:.0f} s input: {decoded.error}")
    check.details["sherpa_onnx"] = sherpa
    return check


def compare_exports(this: ModelDir, other_dir: Path, clips: Sequence[Clip], threads: int = 2,
                    feature_dim: int = 80, this_texts: Mapping[str, str] | None = None) -> CheckResult:
    """The "attention" comparison: sherpa-onnx transcripts of this export (the variant being validated) against
    another export of the same checkpoint, on the clips both claim to run (reported, not judged; it fails only when
    one cannot run). this_texts: this export's CPU transcripts where validate already has them, not decoded again."""
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_child import SherpaRequest, run_sherpa
    from nemo2sherpa.validate.transcripts import corpus_wer, same_text

    check = CheckResult("attention")
    dirs = {"this": this, "other": open_model_dir(other_dir, family=this.family.name)}
    limit = min(supported_seconds(this.manifest), supported_seconds(dirs["other"].manifest))
    both = [c for c in clips if c.seconds <= limit]
    skipped = [c.name for c in clips if c.seconds > limit]
    check.details.update({"this": attention_of(dirs["this"].manifest) or None,
                          "other": attention_of(dirs["other"].manifest) or None,
                          "other_directory": Path(other_dir).name, "clips_skipped_too_long": skipped})
    if not both:
        check.reason = "no clip both exports can run"
        return check
    texts: dict[str, dict[str, str]] = {}
    if this_texts is not None and all(c.name in this_texts for c in both):
        texts["this"] = {c.name: this_texts[c.name] for c in both}
    for key, directory in dirs.items():
        if key in texts:
            continue
        request = SherpaRequest.for_model(directory, threads=threads, sample_rate=both[0].sample_rate,
                                          feature_dim=feature_dim, transcribe=[c.name for c in both])
        run = run_sherpa(request, {c.name: c for c in both})
        if not run.ok:
            check.fail(f"sherpa-onnx could not run the {key} export ({directory.directory.name}): {run.error}")
            return check
        texts[key] = {name: entry["text"] for name, entry in run.transcripts.items()}
    groups = {"short": [c for c in both if c.seconds <= plain_limit_seconds(None)],
              "long": [c for c in both if c.seconds > plain_limit_seconds(None)]}
    for group, members in groups.items():
        if not members:
            continue
        other = [texts["other"][c.name] for c in members]
        this = [texts["this"][c.name] for c in members]
        check.details[group] = {
            "utterances": len(members),
            "seconds": round(sum(c.seconds for c in members), 1),
            "wer_vs_other_percent": corpus_wer(other, this),
            "exact_match_rate": round(sum(same_text(a, b) for a, b in zip(other, this)) / len(members), 4),
        }
        truth = [c for c in members if c.text]
        if truth:
            check.details[group]["wer_vs_truth_percent"] = {
                key: corpus_wer([c.text or "" for c in truth], [texts[key][c.name] for c in truth], normalize=True)
                for key in texts}
    return check


def _long_input_explained(graph: Mapping[str, Any], sherpa: Mapping[str, Any], runtime: str) -> list[str]:
    """What the long-input figures mean, so that a large WER under "passed" is read rightly (explained, not judged)."""
    lines = ["Judged here: the graphs against NeMo on the whole input (encoder output within tolerance, token ids "
             f"equal), and that {runtime} decodes it within the machine's memory. The WERs are shown, not judged."]
    to_nemo, to_truth = sherpa.get("wer_vs_nemo_percent"), sherpa.get("wer_vs_truth_percent")
    nemo_truth = sherpa.get("nemo_wer_vs_truth_percent")
    if runtime == "sherpa-onnx" and graph.get("tokens_equal_nemo") and isinstance(to_nemo, (int, float)) \
            and to_nemo > 0:
        lines.append(f"sherpa-onnx's text differs from NeMo's by {to_nemo:.3g}% while the graphs fed NeMo's features "
                     "give NeMo's token ids: the difference is in the features sherpa-onnx computes itself (see "
                     "docs/sherpa-onnx-contract.md), which flip near-ties more often on audio far longer than the "
                     "model was trained on.")
    if isinstance(to_truth, (int, float)) and isinstance(nemo_truth, (int, float)):
        lines.append(f"Against the reference text, NeMo itself scores {nemo_truth:.3g}% WER on this input: that "
                     f"figure (and {runtime}'s {to_truth:.3g}%) measures the model on long audio, not the export.")
    return [" ".join(lines), ""]


def markdown_lines(checks: Mapping[str, Any]) -> list[str]:
    """Report sections for the long_audio and attention checks (report.json dicts), for report.md."""
    lines: list[str] = []
    long = checks.get("long_audio") or {}
    if long.get("status") in ("passed", "failed"):
        attention = long.get("attention") or {}
        kind = attention.get("kind", "?") + (f" {attention['context']}" if attention.get("context") else "")
        graph = long.get("graph") or {}
        sherpa = long.get("sherpa_onnx") or {}
        claimed = long.get("claimed_max_seconds")
        limit = "none in the graph" if claimed is None else f"{claimed:.0f} s"
        runtime = (checks.get("contract") or {}).get("runtime") or "sherpa-onnx"
        header = (f"| encoder max abs diff | token ids equal to NeMo | {runtime} decode s | s per minute | "
                  "peak RSS GB | WER vs NeMo | WER vs reference text |")
        lines += [f"## Long input ({long['seconds']:.0f} s, {kind} attention, claimed maximum {limit})", "",
                  header, "|---|---|---|---|---|---|---|",
                  "| " + " | ".join([
                      significant(graph.get("encoder_max_abs_diff")), significant(graph.get("tokens_equal_nemo")),
                      significant(sherpa.get("decode_seconds")), significant(sherpa.get("decode_seconds_per_minute")),
                      significant(sherpa.get("peak_rss_gb")), significant(sherpa.get("wer_vs_nemo_percent"), "%"),
                      significant(sherpa.get("wer_vs_truth_percent"), "%")]) + " |", ""]
        lines += _long_input_explained(graph, sherpa, runtime)
    compared = checks.get("attention") or {}
    if compared.get("status") in ("passed", "failed") and (compared.get("short") or compared.get("long")):
        lines += [f"## Against `{compared.get('other_directory')}` (same audio, sherpa-onnx on both)", "",
                  "| audio | utterances | seconds | WER vs the other export | exact match |", "|---|---|---|---|---|"]
        for group in ("short", "long"):
            figures = compared.get(group)
            if figures:
                lines.append(f"| {group} | {figures['utterances']} | {figures['seconds']} | "
                             f"{significant(figures['wer_vs_other_percent'], '%')} | "
                             f"{significant(figures['exact_match_rate'])} |")
        lines.append("")
    return lines


def _gb(value: int | None) -> float | None:
    return None if value is None else round(value / 1e9, 3)
