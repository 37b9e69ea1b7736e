"""Check "precision": a variant (int8, int8-dynamic, fp16) against the float32 graphs of the same directory, and
against NeMo.

What it measures, each clip fed identically to both:
- graphs: encoder max |diff| and greedy token agreement, variant vs fp32 (onnxruntime, CPU); for fp16 also the
  *emulated* float16 graphs (every float16 tensor rounded as CUDA computes it: onnxruntime's CPU provider computes
  float16 graphs in float32, so a CPU run alone cannot show a float16 failure);
- transcripts through sherpa-onnx per provider: exact-match and WER vs fp32, WER vs the truth (and NeMo) for both
  and the delta, and blank-only outputs (empty where fp32 is not);
- size of the variant's files against fp32's;
- speed: sherpa-onnx decode time per audio length, variant vs fp32, per provider;
- CUDA placement: which nodes onnxruntime's CUDA provider hands to CPU kernels, measured by profiling a CUDA
  session when this process's onnxruntime has CUDA; otherwise the ops that have no CUDA kernel are listed as a
  prediction, and a sherpa-onnx CUDA run slower than its CPU run is flagged from the timings.

It fails on blank-only outputs, on a WER delta whose 95% interval (paired bootstrap over utterances, wer_delta.py)
lies above `max_wer_delta` (absolute percentage points), and for fp16 on an agreement with fp32 below
`min_fp16_agreement`; a delta above the maximum that the set is too small to tell from noise, and CPU kernels under
CUDA, are warnings (details["warnings"]).
No NeMo, no torch.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nemo2sherpa.precision.catalog import CATALOG, cuda_clean_variants
from nemo2sherpa.validate.audio import Clip
from nemo2sherpa.validate.model_dir import ModelDir
from nemo2sherpa.validate.results import CheckResult
from nemo2sherpa.validate.wer_delta import paired_wer_delta

DEFAULT_MAX_WER_DELTA = 0.5  # absolute percentage points, variant minus fp32, against the truth (else NeMo)
DEFAULT_MIN_FP16_AGREEMENT = 0.99  # fp16: share of utterances transcribed exactly as fp32
DEFAULT_SPEED_LENGTHS = (2.0, 30.0)
# onnxruntime's CUDA provider registers no kernel for these (onnxruntime 1.2x/1.3x): a session puts them on CPU.
NO_CUDA_KERNEL = {"DynamicQuantizeLinear", "ConvInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
                  "MatMulIntegerToFloat"}
# onnxruntime also places a few small compute nodes on CPU itself (measured on an H200 with 1.31.1: two Neg and two
# Transpose of the position path, 0.1-0.4% of kernel time in fp32 and fp16 encoders); only a share above this is a
# fallback worth a warning.
MATERIAL_CPU_SHARE = 0.05
# A variant this much slower than fp32 on the same provider is flagged (int8 under CUDA: 3.2-3.6x on the 0.6B).
SLOWER_THAN_FP32 = 0.8
# Nodes onnxruntime keeps on CPU on purpose (shape arithmetic): not a fallback.
SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Range", "Equal", "Where", "Expand",
             "ConstantOfShape", "Cast", "Reshape", "Less", "Not", "And", "Mul", "Add", "Sub", "Div", "Floor", "Tile"}


def file_sizes(model: ModelDir) -> dict[str, int]:
    """Bytes per graph, external weights included."""
    sizes = {}
    for graph, path in model.graphs.items():
        total = path.stat().st_size if path.exists() else 0
        weights = path.with_suffix(".weights")
        if weights.exists():
            total += weights.stat().st_size
        sizes[graph] = total
    sizes["total"] = sum(sizes.values())
    return sizes


def _features(clips: Sequence[Clip], references: Mapping[str, Any] | None, feat_dim: int) -> dict[str, np.ndarray]:
    from nemo2sherpa.features import log_mel

    out = {}
    for clip in clips:
        reference = (references or {}).get(clip.name)
        out[clip.name] = reference.features if reference is not None else log_mel(clip.audio, feat_dim,
                                                                                   clip.sample_rate)
    return out


def _graph_agreement(family, variant: Mapping[str, Path], fp32: Mapping[str, Path], spec,
                     features: Mapping[str, np.ndarray], threads: int) -> dict[str, Any]:
    """The variant's graphs against fp32's on the same features: output difference and greedy token agreement."""
    reference = family.graph_decoder(fp32, spec, threads=threads)
    candidate = family.graph_decoder(variant, spec, threads=threads)
    worst, same, empty, differing = 0.0, 0, 0, []
    for name, feats in features.items():
        encoded_a, length_a = reference.encode(feats)
        encoded_b, length_b = candidate.encode(feats)
        n = min(length_a, length_b)
        diff = float(np.max(np.abs(encoded_a[:, :n] - encoded_b[:, :n]))) if n else 0.0
        finite = bool(np.all(np.isfinite(encoded_b[:, :n])))
        worst = max(worst, diff if finite else float("inf"))
        tokens_a = reference.greedy(encoded_a, length_a).tokens
        tokens_b = candidate.greedy(encoded_b, length_b).tokens
        same += tokens_a == tokens_b
        if tokens_a and not tokens_b:
            empty += 1
        if tokens_a != tokens_b:
            differing.append({"utterance": name, "encoded_length": [length_a, length_b], "encoder_max_abs_diff": diff})
    count = len(features)
    return {"utterances": count, "encoder_max_abs_diff": worst, "token_match_rate": round(same / count, 4) if count
            else None, "blank_only": empty, "differing": differing[:20]}


def _emulated(variant: ModelDir, scratch: Path) -> dict[str, Path]:
    from nemo2sherpa.precision.fp16 import emulate_fp16_graph

    paths = {}
    for graph, path in variant.graphs.items():
        target = scratch / f"{graph}.emulated.onnx"
        emulate_fp16_graph(path, target)
        paths[graph] = target
    return paths


def cuda_placement(graph: Path, feeds: Mapping[str, np.ndarray], runs: int = 2) -> dict[str, Any]:
    """Measured: profile a CUDA session of `graph` and count what ran on CPU kernels. Needs an onnxruntime with
    CUDA in this process (onnxruntime-gpu); otherwise {"measured": False, ...}."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"measured": False, "reason": "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"}
    from nemo2sherpa.validate.ort_runtime import preload_cuda_libraries

    preload_cuda_libraries()  # NVIDIA's pip libraries: without them the CUDA session cannot start
    with tempfile.TemporaryDirectory(prefix="nemo2sherpa-profile-") as scratch:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "profile")
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(graph), options,
                                           providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - a CUDA session that cannot start is a finding, not a crash
            return {"measured": False, "reason": f"CUDA session failed: {type(exc).__name__}: {exc}"[:300]}
        if "CUDAExecutionProvider" not in session.get_providers():
            return {"measured": True, "cuda_active": False, "reason": "the session did not enable CUDA"}
        for _ in range(runs):
            session.run(None, dict(feeds))
        events = json.loads(Path(session.end_profiling()).read_text())
    return summarize_profile(events)


def summarize_profile(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per provider: node count and kernel time; the compute ops (not shape arithmetic) that ran on CPU."""
    by_provider: dict[str, dict[str, float]] = {}
    cpu_ops: dict[str, int] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        provider = args.get("provider", "?")
        entry = by_provider.setdefault(provider, {"nodes": 0, "microseconds": 0.0})
        entry["nodes"] += 1
        entry["microseconds"] += float(event.get("dur", 0))
        op = args.get("op_name", "?")
        if provider == "CPUExecutionProvider" and op not in SHAPE_OPS:
            cpu_ops[op] = cpu_ops.get(op, 0) + 1
    total = sum(e["microseconds"] for e in by_provider.values()) or 1.0
    cpu_share = by_provider.get("CPUExecutionProvider", {}).get("microseconds", 0.0) / total
    without_kernel = {op: n for op, n in cpu_ops.items() if op in NO_CUDA_KERNEL or op == "MatMulInteger"}
    return {"measured": True, "cuda_active": True, "providers": by_provider, "cpu_time_share": round(cpu_share, 4),
            "cpu_compute_ops": cpu_ops, "ops_without_cuda_kernel": without_kernel,
            "falls_back": bool(without_kernel) or cpu_share > MATERIAL_CPU_SHARE}


def predicted_cpu_ops(*graphs: Path) -> dict[str, int]:
    """Ops of the graphs that onnxruntime's CUDA provider has no kernel for, counted over all of them (a
    prediction, not a measurement). Every graph of a variant counts: a decoder's DynamicQuantizeLSTM falls back too."""
    import onnx

    found: dict[str, int] = {}
    for graph in graphs:
        for node in onnx.load(str(graph), load_external_data=False).graph.node:
            if node.op_type in NO_CUDA_KERNEL:
                found[node.op_type] = found.get(node.op_type, 0) + 1
    return found


def _encoder_feeds(encoder: Path, feat_dim: int) -> dict[str, np.ndarray]:
    import onnx

    from nemo2sherpa.features import probe_features

    features = probe_features(feat_dim, 4.0)
    names = [i.name for i in onnx.load(str(encoder), load_external_data=False).graph.input]
    return {names[0]: features[np.newaxis], names[1]: np.array([features.shape[1]], dtype=np.int64)}


def compare_with_fp32(variant: ModelDir, fp32: ModelDir, clips: Sequence[Clip], references: Mapping[str, Any] | None,
                      spec, *, providers: Sequence[str] = ("cpu",), threads: int = 2, repeats: int = 3,
                      speed_lengths: Sequence[float] = DEFAULT_SPEED_LENGTHS,
                      variant_runs: Mapping[str, Any] | None = None,
                      max_wer_delta: float = DEFAULT_MAX_WER_DELTA,
                      min_fp16_agreement: float = DEFAULT_MIN_FP16_AGREEMENT, measure_speed: bool = True,
                      sample_rate: int = 16000, progress=None) -> CheckResult:
    """The "precision" check (see the module docstring). `variant_runs`: sherpa-onnx runs of the variant already
    made by the pipeline (provider -> SherpaRun, with the same clips and speed buckets); missing ones are made."""
    from nemo2sherpa.progress import Progress
    from nemo2sherpa.validate import speed as speed_module
    from nemo2sherpa.validate.sherpa_child import run_on_providers
    from nemo2sherpa.validate.transcripts import corpus_wer, same_text

    progress = progress or Progress(enabled=False)
    check = CheckResult("precision")
    precision = variant.variant
    check.details["variant"] = precision
    check.details["method"] = CATALOG[precision].summary
    check.details["reference"] = fp32.variant
    warnings: list[str] = []

    sizes_fp32, sizes_variant = file_sizes(fp32), file_sizes(variant)
    check.details["size_bytes"] = {"fp32": sizes_fp32, precision: sizes_variant,
                                   "ratio": round(sizes_variant["total"] / max(1, sizes_fp32["total"]), 3)}

    features = _features(clips, references, spec.feat_dim)
    family = variant.family
    with progress.stage(f"compare {precision} graphs with fp32"):
        graphs = {"onnxruntime_cpu": _graph_agreement(family, variant.graphs, fp32.graphs, spec, features, threads)}
    if precision == "fp16":
        with progress.stage("emulate fp16 numerics (as CUDA computes them) on CPU"), \
                tempfile.TemporaryDirectory(prefix="nemo2sherpa-fp16-") as scratch:
            emulated = _emulated(variant, Path(scratch))
            graphs["emulated_fp16"] = _graph_agreement(family, emulated, fp32.graphs, spec, features, threads)
        graphs["note"] = ("onnxruntime's CPU provider computes float16 graphs in float32; emulated_fp16 rounds every "
                          "float16 tensor as CUDA does")
    check.details["graphs"] = graphs
    for kind, figures in graphs.items():
        if isinstance(figures, dict) and figures.get("blank_only"):
            check.fail(f"{precision} ({kind}): {figures['blank_only']} utterance(s) decode to nothing where fp32 "
                       "transcribes")
    if precision == "fp16":
        agreement = graphs["emulated_fp16"]["token_match_rate"]
        if agreement is not None and agreement < min_fp16_agreement:
            check.fail(f"fp16 (emulated CUDA numerics): tokens equal fp32's on {agreement:.0%} of utterances "
                       f"(minimum {min_fp16_agreement:.0%})")

    buckets = speed_module.make_bucket_clips(clips, speed_lengths, sample_rate) if measure_speed else {}
    settings = {"threads": threads, "repeats": repeats, "sample_rate": sample_rate, "feature_dim": spec.feat_dim}
    with progress.stage(f"sherpa-onnx fp32 and {precision} on {', '.join(providers)}"):
        fp32_runs = run_on_providers(fp32, clips, buckets, tuple(providers), **settings)
        missing = [p for p in providers if not variant_runs or p not in variant_runs]
        runs = dict(variant_runs or {})
        runs.update(run_on_providers(variant, clips, buckets, tuple(missing), **settings))

    transcripts: dict[str, Any] = {}
    speed: dict[str, Any] = {}
    truth = [c.text for c in clips]
    for provider in providers:
        a, b = fp32_runs.get(provider), runs.get(provider)
        if a is None or b is None or not a.ok or not b.ok or a.fallback_to_cpu or b.fallback_to_cpu:
            why = next((r.error for r in (a, b) if r is not None and not r.ok), None) or "sherpa-onnx fell back to CPU"
            transcripts[provider] = {"skipped": why}
            continue
        texts_a = [a.transcripts[c.name]["text"] for c in clips]
        texts_b = [b.transcripts[c.name]["text"] for c in clips]
        exact = sum(same_text(x, y) for x, y in zip(texts_a, texts_b)) / len(clips) if clips else None
        figures: dict[str, Any] = {"exact_match_vs_fp32": round(exact, 4) if exact is not None else None,
                                   "wer_vs_fp32_percent": corpus_wer(texts_a, texts_b),
                                   "blank_only": sum(bool(x.strip()) and not y.strip()
                                                     for x, y in zip(texts_a, texts_b))}
        judged_against, against = None, []
        if all(truth):
            judged_against, against = "truth", truth
        elif references and all(c.name in references for c in clips):
            judged_against, against = "nemo", [references[c.name].text for c in clips]
        paired = paired_wer_delta(against, texts_a, texts_b, normalize=judged_against == "truth") \
            if judged_against else None
        if paired:
            wer_a, wer_b = paired["baseline"], paired["candidate"]
            delta = round(wer_b - wer_a, 3)
            low, high = paired["interval_95"]
            figures.update({f"wer_vs_{judged_against}_percent": {"fp32": wer_a, precision: wer_b},
                            "wer_delta_abs": delta, "wer_delta_interval_95": [low, high]})
            if low > max_wer_delta:
                check.fail(f"{provider}: {precision} WER vs {judged_against} is {wer_b:.2f}% against fp32's "
                           f"{wer_a:.2f}% (+{delta:.2f}; its 95% interval [{low:+.2f}, {high:+.2f}] lies above the "
                           f"maximum +{max_wer_delta})")
            elif delta > max_wer_delta:
                warnings.append(f"{provider}: {precision} WER vs {judged_against} is +{delta:.2f} points against "
                                f"fp32 (maximum +{max_wer_delta}), but its 95% interval over these {len(clips)} "
                                f"utterances is [{low:+.2f}, {high:+.2f}]: too few to tell; validate on more audio "
                                "(--dataset) to know")
        if figures["blank_only"]:
            check.fail(f"{provider}: {precision} transcribes {figures['blank_only']} utterance(s) as nothing where "
                       "fp32 does not")
        if precision == "fp16" and provider == "cuda" and exact is not None and exact < min_fp16_agreement:
            check.fail(f"cuda: fp16 transcripts equal fp32's on {exact:.0%} of utterances "
                       f"(minimum {min_fp16_agreement:.0%})")
        transcripts[provider] = figures
        if buckets:
            rows = {}
            for length in speed_lengths:
                name = speed_module.bucket_name(length)
                t_a, t_b = a.median(name), b.median(name)
                if t_a and t_b:
                    rows[f"{length:g}s"] = {"fp32_seconds": round(t_a, 4), f"{precision}_seconds": round(t_b, 4),
                                            "speedup": round(t_a / t_b, 3)}
            speed[provider] = rows
    check.details["transcripts"] = transcripts
    check.details["speed"] = speed or None

    placement = {}
    feeds = _encoder_feeds(variant.encoder, spec.feat_dim)
    measured = cuda_placement(variant.encoder, feeds)
    placement["encoder"] = measured
    predicted = predicted_cpu_ops(*variant.graphs.values())
    if predicted:
        placement["predicted_cpu_ops"] = predicted
    if measured.get("measured") and measured.get("falls_back"):
        on_cpu = measured.get("ops_without_cuda_kernel") or measured["cpu_compute_ops"]
        warnings.append(f"{precision} on CUDA: onnxruntime runs {on_cpu} on CPU kernels "
                        f"({measured['cpu_time_share']:.0%} of kernel time): on GPUs use fp32 or "
                        f"{' or '.join(cuda_clean_variants())}")
    elif not measured.get("measured") and predicted:
        warnings.append(f"{precision}: {', '.join(sorted(predicted))} have no CUDA kernel in onnxruntime; under "
                        "CUDA these nodes run on CPU (predicted, not measured here): use it on CPU; on GPUs use "
                        f"fp32 or {' or '.join(cuda_clean_variants())}, whose every node has a CUDA kernel")
    check.details["cuda_kernels"] = not predicted
    if not predicted and "cuda" not in providers:
        check.details["cuda_note"] = ("MatMulNBits' 8-bit CUDA kernel needs onnxruntime 1.22 or later; the CUDA "
                                      "speed is measured with --provider cuda")
    for provider, rows in speed.items():
        # against fp32 on the same provider: a small model can be slower on CUDA than on CPU in fp32 too (fixed
        # per-call costs), which says nothing about the variant
        slow = {bucket: row["speedup"] for bucket, row in rows.items() if row["speedup"] < SLOWER_THAN_FP32}
        if slow:
            worst = min(slow, key=slow.get)
            warnings.append(f"{precision} decodes {worst} {1 / slow[worst]:.1f}x slower than fp32 on {provider} "
                            f"(slower at {', '.join(slow)}): use fp32" + (" or fp16" if provider == "cuda" else ""))
    if precision == "fp16" and "cpu" in providers:
        warnings.append("fp16 is a CUDA variant: onnxruntime's CPU provider computes it in float32 through casts "
                        "(slower than fp32 on CPU); CUDA speed is measured only with --provider cuda")
    check.details["cuda_placement"] = placement
    check.details["warnings"] = warnings
    return check
