"""Write the validation report: report.json (stable keys, see docs/validation-report.md), report.md (tables a person
reads) and decode_time.png (decode time against audio length per provider)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nemo2sherpa.formatting import compact, gigabytes, percent, rate
from nemo2sherpa.hashing import sha256_file
from nemo2sherpa.validation_report import CHECK_ORDER, PLOT, REPORT_JSON, REPORT_MD, SEAL


def write_report(report: dict[str, Any], directory: Path) -> list[Path]:
    """Write the files atomically each (readers never see a half-written report): report.md and the plot, then
    report.json recording their hashes, then report.json's own hash beside it (what publish checks)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [_atomic_write(directory / REPORT_MD, render_markdown(report))]
    plot = plot_decode_times(report, directory / PLOT)
    if plot:
        written.append(plot)
    else:
        (directory / PLOT).unlink(missing_ok=True)  # a plot of an earlier run must not pass for this one's
    report["artifacts"] = {path.name: sha256_file(path) for path in written}
    written.insert(0, _atomic_write(directory / REPORT_JSON, json.dumps(report, indent=2) + "\n"))
    written.append(_atomic_write(directory / SEAL, f"{sha256_file(written[0])}  {REPORT_JSON}\n"))
    return written


def _atomic_write(path: Path, text: str) -> Path:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return path


def _routing_line(speed: dict[str, Any]) -> str:
    """Where to send audio by length, in words: the measured break-even and the shortest length from which CUDA
    wins at every longer one."""
    threshold, crossing = speed.get("recommended_gpu_min_seconds"), speed.get("break_even_seconds")
    if threshold is None:
        return "CUDA was not faster at any measured length for this model: run it on the CPU."
    if crossing == 0.0:
        return (f"CUDA was faster at every measured length (from {threshold:g} s): send everything to the GPU, "
                "or measure shorter lengths with --speed-lengths.")
    return (f"Break-even (CUDA faster from): {compact(crossing, 2)} s; recommended: CUDA for audio of at least "
            f"{threshold:g} s, CPU below.")


def _cuda_evidence_lines(evidence: dict[str, Any] | None) -> list[str]:
    """Why the CUDA figures are GPU figures: the provider library loaded, the provider list, GPU memory used."""
    if not evidence:
        return []
    lines = [f"  - onnxruntime's CUDA provider library loaded in sherpa-onnx's process: "
             f"{'yes' if evidence.get('cuda_provider_loaded') else 'no'}"]
    if evidence.get("onnxruntime_available_providers"):
        lines.append(f"  - onnxruntime's providers: {', '.join(evidence['onnxruntime_available_providers'])}")
    memory = evidence.get("gpu_memory") or {}
    if memory.get("available"):
        own = f", {gigabytes(memory['process_peak_bytes'])} by the process itself" if memory.get("process_peak_bytes") \
            else ""
        lines.append(f"  - GPU memory in use while it ran ({memory.get('device')}): "
                     f"{gigabytes(memory.get('peak_above_baseline_bytes'))} above the idle device{own}")
    elif memory:
        lines.append(f"  - GPU memory: not measured ({memory.get('reason')})")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    checks = report["checks"]
    lines = [f"# Validation of `{report['model_dir']}` ({report['variant']})", ""]
    lines += [f"**{report['verdict'].upper()}** - nemo2sherpa {report['tool_version']}, {report['created']}", ""]
    lines += verdict_lines(report)
    env = report.get("environment", {})
    gpu = env.get("gpu")
    hardware = f"{env.get('cpu', '?')} ({env.get('cores', '?')} cores)" + (f"; GPU {gpu['name']}" if gpu else "")
    lines += [f"Hardware: {hardware}. Audio: {report['audio']['utterances']} utterances, "
              f"{report['audio']['total_seconds']:.1f} s ({report['audio']['source']}).", ""]
    lines += ["| check | status | notes |", "|---|---|---|"]
    for name in CHECK_ORDER:
        check = checks.get(name)
        if check is None:
            continue
        notes = "; ".join(check.get("problems") or []) or (check.get("reason") or "")
        lines.append(f"| {name.replace('_', ' ')} | {check['status']} | {notes.replace('|', '/')} |")
    lines.append("")

    fidelity = checks.get("graph_fidelity", {})
    if fidelity.get("status") in ("passed", "failed"):
        lines += ["## Graph fidelity (NeMo features into both)", "",
                  "| utterances | encoder max abs diff | token ids equal to NeMo |", "|---|---|---|",
                  f"| {fidelity['utterances']} | {compact(fidelity['encoder_max_abs_diff'])} | "
                  f"{rate(fidelity['token_match_rate'])} |", ""]
        for mismatch in fidelity.get("mismatches", []):
            lines.append(f"- `{mismatch['utterance']}`: **{mismatch['graph']}**: {mismatch['detail']}")
        lines.append("")

    transcripts = checks.get("transcripts", {})
    if transcripts.get("providers"):
        runtime = transcripts.get("runtime") or "sherpa-onnx"
        lines += [f"## Transcripts through {runtime}", "",
                  "| provider | exact match with NeMo | WER vs NeMo | WER vs reference text |", "|---|---|---|---|"]
        for provider, figures in transcripts["providers"].items():
            lines.append(f"| {provider} | {rate(figures.get('exact_match_rate'))} | "
                         f"{percent(figures.get('wer_vs_nemo_percent'), 2)} | "
                         f"{percent(figures.get('wer_vs_truth_percent'), 2)} |")
        if transcripts.get("nemo_wer_vs_truth_percent") is not None:
            lines.append(f"| NeMo itself | | | {percent(transcripts['nemo_wer_vs_truth_percent'], 2)} |")
        lines.append("")
        differing = [u for u in transcripts.get("utterances", [])
                     if u.get("nemo") is not None and any(" ".join(t.split()) != " ".join(u["nemo"].split())
                                                          for t in u["sherpa"].values())]
        if differing:
            lines += _front_end_summary(transcripts)
            lines += [f"Utterances where {runtime} and NeMo differ, and why:", ""]
            for u in differing[:20]:
                causes = u.get("cause") or {}
                lines.append(f"- `{u['name']}`: NeMo: \"{u['nemo']}\"; " +
                             "; ".join(f"{p}: \"{t}\"" + (f" ({causes[p]})" if causes.get(p) else "")
                                       for p, t in u["sherpa"].items()))
            lines.append("")

    providers = checks.get("providers", {})
    if providers.get("status") in ("passed", "failed"):
        lines += ["## Providers", ""]
        for provider in report.get("providers", []):
            info = providers.get(provider, {})
            state = "available" if info.get("available") else f"NOT available: {info.get('reason')}"
            runtime = f" ({info['runtime']})" if info.get("runtime") else ""
            lines.append(f"- {provider}: {state}{runtime}")
            lines += _cuda_evidence_lines(info.get("evidence"))
        if providers.get("cpu_cuda_exact_match_rate") is not None:
            lines.append(f"- CPU and CUDA transcripts identical on {rate(providers['cpu_cuda_exact_match_rate'])}")
        lines.append("")

    speed = checks.get("speed", {})
    if speed.get("buckets"):
        providers_timed = [p for p in ("cpu", "cuda") if any(p in b for b in speed["buckets"])]
        header = "| audio s | " + " | ".join(f"{p} decode s | {p} RTFx" for p in providers_timed)
        header += " | CUDA speedup |" if "cuda" in providers_timed else " |"
        lines += [f"## Speed (median of {speed['repeats']} after warm-up, {speed['threads']} threads)", "",
                  header, "|" + "---|" * (1 + 2 * len(providers_timed) + ("cuda" in providers_timed))]
        for bucket in speed["buckets"]:
            cells = [compact(bucket["seconds"], 1)]
            for p in providers_timed:
                figures = bucket.get(p, {})
                cells += [compact(figures.get("decode_seconds"), 3), compact(figures.get("rtfx"), 1)]
            if "cuda" in providers_timed:
                cells.append(compact(bucket.get("cuda_speedup"), 2))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if speed.get("note"):
            lines.append(f"Note: {speed['note']}.")
        nemo = speed.get("nemo_decode_seconds") or {}
        if nemo:
            lines.append("NeMo (PyTorch, CPU, the same threads, one run each after a warm-up): "
                         + ", ".join(f"{length} s in {compact(t, 3)} s" for length, t in nemo.items()) + ".")
        loads = ", ".join(f"{p} {compact(s, 2)} s" for p, s in speed.get("load_seconds", {}).items())
        lines.append(f"Model load: {loads}.")
        memory = ", ".join(f"{p} {gigabytes(b)}" for p, b in (speed.get("peak_rss_bytes") or {}).items() if b)
        if memory:
            lines.append(f"Peak resident memory of the decoding process: {memory}.")
        gpu = ", ".join(f"{p} {gigabytes(b)}" for p, b in (speed.get("gpu_peak_bytes") or {}).items() if b is not None)
        if gpu:
            lines.append(f"Peak GPU memory in use (above the idle device): {gpu}.")
        if "cuda" in providers_timed:
            lines.append(_routing_line(speed))
        if speed.get("cuda_skipped_lengths"):
            lines.append(f"Not run on CUDA: {', '.join(f'{s:g} s' for s in speed['cuda_skipped_lengths'])}. A "
                         f"full-attention encoder decodes at most {speed['cuda_length_limit_seconds']:.0f} s under "
                         "onnxruntime's CUDA provider (beyond, its attention tensors pass 32-bit indexing and the "
                         "process aborts); convert with --attention local for longer audio on a GPU.")
        lines += ["", f"![decode time]({PLOT})", ""]
    lines += _precision_section(checks.get("precision"))
    from nemo2sherpa.families.online_recognizer import latency_markdown

    lines += latency_markdown(checks.get("streaming"))
    from nemo2sherpa.validate.long_audio import markdown_lines

    lines += markdown_lines(checks)
    versions = env.get("versions", {})
    if versions:
        lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(lines)


def _precision_section(precision: dict[str, Any] | None) -> list[str]:
    if not precision or precision.get("status") == "skipped":
        return []
    variant = precision.get("variant", "variant")
    lines = [f"## Precision: {variant} against fp32", ""]
    if precision.get("method"):
        lines += [f"{variant}: {precision['method']}.", ""]
    sizes = precision.get("size_bytes") or {}
    if sizes:
        total = lambda key: (sizes.get(key) or {}).get("total")  # noqa: E731
        lines += [f"Size: {compact(total(variant) / 1e6 if total(variant) else None, 1)} MB against "
                  f"{compact(total('fp32') / 1e6 if total('fp32') else None, 1)} MB "
                  f"(ratio {compact(sizes.get('ratio'), 3)}).",
                  ""]
    graphs = {k: v for k, v in (precision.get("graphs") or {}).items() if isinstance(v, dict)}
    if graphs:
        lines += ["| graphs | utterances | encoder max abs diff vs fp32 | token ids equal to fp32 | blank-only |",
                  "|---|---|---|---|---|"]
        for kind, g in graphs.items():
            lines.append(f"| {kind.replace('_', ' ')} | {g.get('utterances')} | "
                         f"{compact(g.get('encoder_max_abs_diff'))}"
                         f" | {rate(g.get('token_match_rate'))} | {g.get('blank_only')} |")
        lines.append("")
    transcripts = precision.get("transcripts") or {}
    if transcripts:
        lines += ["| provider | identical to fp32 | WER vs fp32 | WER delta (abs) |", "|---|---|---|---|"]
        for provider, t in transcripts.items():
            if "skipped" in t:
                lines.append(f"| {provider} | skipped: {t['skipped']} | | |")
                continue
            lines.append(f"| {provider} | {rate(t.get('exact_match_vs_fp32'))} | "
                         f"{percent(t.get('wer_vs_fp32_percent'), 2)} | {compact(t.get('wer_delta_abs'), 2)} |")
        lines.append("")
    for provider, rows in (precision.get("speed") or {}).items():
        if not rows:
            continue
        lines += [f"| audio ({provider}) | fp32 s | {variant} s | speed-up |", "|---|---|---|---|"]
        for bucket, row in rows.items():
            lines.append(f"| {bucket} | {compact(row.get('fp32_seconds'))} | "
                         f"{compact(row.get(f'{variant}_seconds'))} | "
                         f"{compact(row.get('speedup'), 2)} |")
        lines.append("")
    if precision.get("cuda_kernels") is not None:
        lines += [f"CUDA kernels: {'every node has one' if precision['cuda_kernels'] else 'some nodes have none'} "
                  "in onnxruntime" + (f" ({precision['cuda_note']})" if precision.get("cuda_note") else "") + ".", ""]
    for warning in precision.get("warnings") or []:
        lines.append(f"- warning: {warning}")
    return lines + [""] if precision.get("warnings") else lines


def plot_decode_times(report: dict[str, Any], path: Path) -> Path | None:
    speed = report["checks"].get("speed", {})
    if not speed.get("buckets"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    runtime = (report.get("checks", {}).get("contract") or {}).get("runtime") or "sherpa-onnx"
    lines = {f"{runtime} {p.upper()}": [(b["seconds"], b[p]["decode_seconds"]) for b in speed["buckets"] if p in b]
             for p in ("cpu", "cuda")}
    lines["NeMo PyTorch CPU"] = [(float(s), t) for s, t in (speed.get("nemo_decode_seconds") or {}).items()]
    for (label, points), marker in zip(lines.items(), ("o", "s", "^")):
        if points:
            xs, ys = zip(*points)
            axis.plot(xs, ys, marker=marker, label=label)
    axis.set_xscale("log")
    axis.set_yscale("log")  # lengths span 2 s to minutes: on log axes equal real-time factors are parallel lines
    from matplotlib.ticker import FixedLocator, NullFormatter, StrMethodFormatter

    axis.xaxis.set_major_locator(FixedLocator([b["seconds"] for b in speed["buckets"]]))
    axis.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.xaxis.set_minor_formatter(NullFormatter())
    if speed.get("break_even_seconds"):
        axis.axvline(speed["break_even_seconds"], color="grey", linestyle=":", label="break-even")
    axis.set_xlabel("audio length (s)")
    axis.set_ylabel("decode time (s)")
    axis.set_title(f"{report['model_dir']} ({report['variant']}): decode time by audio length")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    figure.savefig(temporary)
    plt.close(figure)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return path


def verdict_lines(report: dict[str, Any]) -> list[str]:
    """What the run proved and what it could not, in words: the first thing a reader of the report needs."""
    lines = []
    if report.get("proven"):
        lines += ["Proven:", "", *[f"- {item}" for item in report["proven"]], ""]
    if report.get("not_proven"):
        lines += ["Not proven:", "", *[f"- {item}" for item in report["not_proven"]], ""]
    return lines


def _front_end_summary(transcripts: dict) -> list[str]:
    """One line per provider on who causes the differences: sherpa-onnx's front end (the graphs fed its features
    give its text) or something else."""
    lines = []
    for provider, figures in transcripts.get("providers", {}).items():
        if not figures.get("differing"):
            continue
        line = (f"- {provider}: {figures['differing']} difference(s) from NeMo; {figures.get('front_end_caused', 0)} "
                "caused by sherpa-onnx's own front end (the exported graphs give sherpa-onnx's text when fed its "
                "features, and NeMo's when fed NeMo's)")
        if figures.get("unexplained"):
            line += f"; {figures['unexplained']} not explained by it"
        if figures.get("front_end_cost_points") is not None:
            line += f"; it costs {figures['front_end_cost_points']:+.2f} WER points against the reference texts"
        lines.append(line)
    option = transcripts.get("front_end_option")
    if option:
        lines.append(_option_line(option, transcripts))
    if transcripts.get("front_end_note"):
        lines.append(f"- {transcripts['front_end_note']}")
    return lines + [""] if lines else []


def _option_line(option: dict, transcripts: dict) -> str:
    """What the family's front-end option gives, beside what sherpa-onnx's default gives on the same provider."""
    head = (f"- with `{option['python']}` (`{option['flag']}`: {option['does']}), sherpa-onnx on {option['provider']}")
    if option.get("error"):
        return f"{head} did not run: {option['error']}"
    default = transcripts.get("providers", {}).get(option["provider"], {})
    line = f"{head} matches NeMo's text on {option['exact_match_rate']:.0%} of the clips"
    if default.get("exact_match_rate") is not None:
        line += f" (default: {default['exact_match_rate']:.0%})"
    if option.get("points_above_nemo") is not None:
        nemo = transcripts["nemo_wer_vs_truth_percent"]
        line += (f"; its WER against the reference texts is {option['wer_vs_truth_percent']:.2f}%, "
                 f"{option['points_above_nemo']:+.2f} points from NeMo's {nemo:.2f}%")
        if default.get("wer_vs_truth_percent") is not None:
            line += (f" (default: {default['wer_vs_truth_percent']:.2f}%, "
                     f"{default['wer_vs_truth_percent'] - nemo:+.2f})")
    return line
