"""The model card (README.md of the published repository), rendered from the manifest, the validation report and
the recipe catalog.

Why generated and not templated by hand: every figure on the card must come from a file in the same commit
(manifest.json, validation/report.json), so a reader can check it, and nothing is ever invented: a check that was
skipped says so, a figure that was not measured is "n/a". Pure function of its inputs (no clock, no network), so
the dry run writes byte for byte the card that would be uploaded. Local paths never reach the card: a local source
is shown by file name only, and path-like text from the report is cut down to its last component.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PureWindowsPath
from typing import Any

import yaml

from nemo2sherpa.families import family_named
from nemo2sherpa.formatting import (
    NA,
    count,
    exact_bytes,
    fixed,
    human_bytes,
    is_number,
    percent,
    plain,
    plural,
    rate,
    scientific,
    seconds,
    table_cell,
)
from nemo2sherpa.licence import Licence
from nemo2sherpa.manifest import MANIFEST_NAME, Manifest
from nemo2sherpa.precision.catalog import CATALOG, PRECISIONS
from nemo2sherpa.publish.plan import VALIDATION_DIR, PublishPlan
from nemo2sherpa.recipes import Recipe, recipe_of_source
from nemo2sherpa.validation_report import PLOT, REPORT_JSON, REPORT_MD, ValidationReport

PROJECT_URL = "https://github.com/nemo2sherpa/nemo2sherpa"
SHERPA_ONNX_URL = "https://github.com/k2-fsa/sherpa-onnx"
MIN_SHERPA_ONNX_EXTERNAL_DATA = "1.12.36"  # first sherpa-onnx that loads external weights from the model's path
CHECK_NAMES = {"contract": "sherpa-onnx contract", "graph_fidelity": "graph fidelity", "transcripts": "transcripts",
               "providers": "providers", "speed": "speed"}

# An absolute path (POSIX or Windows) not inside a URL: reduced to its last component.
_PATH = re.compile(r"(?<![\w.:/~-])(?:[A-Za-z]:[\\/]|/|~/)(?:[^\s/\\|`'\"()<>]+[\\/])*([^\s/\\|`'\"()<>]+)")


def render_card(plan: PublishPlan, repo_id: str, revision: str = "main") -> str:
    manifest = plan.manifest
    recipe = recipe_of_source(manifest.source)
    sections = [
        front_matter(manifest, recipe, plan.licence),
        _title(plan, repo_id, recipe),
        _source(manifest, recipe, plan.licence),
        _model(manifest),
        _files(plan),
        _usage(plan, repo_id, revision),
        _validation(plan),
        _conversion(manifest),
    ]
    return "\n".join(part.rstrip("\n") + "\n" for part in sections if part)


def front_matter(manifest: Manifest, recipe: Recipe | None, licence: Licence | None) -> str:
    """The YAML block the Hub reads: licence, base model, library, task, languages, tags."""
    metadata: dict[str, Any] = dict(licence.front_matter()) if licence is not None else {}
    repo_id = manifest.source.get("repo_id")
    if repo_id:
        metadata["base_model"] = str(repo_id)
    metadata["library_name"] = "sherpa-onnx"
    metadata["pipeline_tag"] = "automatic-speech-recognition"
    if recipe is not None and recipe.languages:
        metadata["language"] = list(recipe.languages)
    kinds = [("tdt" if manifest.model.is_tdt else "rnnt") if name == "transducer" else name
             for name in manifest.families]
    metadata["tags"] = ["nemo", "parakeet", *kinds, "onnx", "sherpa-onnx"]
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) + "---\n"


# --- what it is and where it came from ---------------------------------------------------------------------------


def _title(plan: PublishPlan, repo_id: str, recipe: Recipe | None) -> str:
    manifest = plan.manifest
    lines = [f"# {repo_id.split('/')[-1]}", ""]
    if plan.forced:
        lines += [f"> **Not validated: published with `--force`; {_redact(plan.forced_because or '')}.** "
                  "Nothing below proves that this model transcribes like the original; see "
                  "[Validation](#validation).", ""]
    transducer = f"{'TDT' if manifest.model.is_tdt else 'RNNT'} transducer"
    kinds = [transducer if name == "transducer" else f"{name.upper()} model" for name in manifest.families]
    lines.append(f"A NeMo FastConformer {' and '.join(kinds)} ({manifest.model.model_class}) for "
                 f"[sherpa-onnx]({SHERPA_ONNX_URL}): {_source_link(manifest.source)} converted to float32 ONNX by "
                 f"[nemo2sherpa]({PROJECT_URL}) {manifest.tool_version}. The weights are the checkpoint's own; only "
                 "the format changed.")
    if "Hybrid" in manifest.model.model_class:
        exported = " and ".join(name.upper() if name == "ctc" else name for name in manifest.families)
        lines.append(f"The checkpoint is a hybrid transducer-CTC model; exported here: its {exported} branch"
                     + ("es, each with its own files." if len(manifest.families) > 1 else " only."))
    if recipe is not None and recipe.description:
        lines += ["", f"{recipe.description}."]
    return "\n".join(lines) + "\n"


def _source_link(source: dict[str, Any]) -> str:
    if source.get("repo_id"):
        return f"[{source['repo_id']}](https://huggingface.co/{source['repo_id']})"
    return f"the checkpoint `{_file_name(source.get('filename'))}`"


def _file_name(name: Any) -> str:
    """A file name only: a local source must not leak where it lived."""
    return PureWindowsPath(str(name)).name if name else "unknown"  # either separator, any OS


def _source(manifest: Manifest, recipe: Recipe | None, licence: Licence | None) -> str:
    source = manifest.source
    rows: list[tuple[str, str]] = []
    kind = source.get("kind")
    if source.get("repo_id"):
        rows.append(("repository", _source_link(source)))
    elif kind == "bundled":
        rows.append(("origin", "shipped with nemo2sherpa"))
    else:
        rows.append(("origin", "a local file (not published on the Hub)"))
    rows.append(("file", f"`{_file_name(source.get('filename'))}`"))
    if source.get("repo_id"):
        resolved = source.get("resolved_revision")
        rows.append(("revision", f"`{source.get('revision') or 'main'}`"
                     + (f", commit `{resolved}`" if resolved else ", commit not recorded")))
    rows.append(("sha256", f"`{source['sha256']}`" if source.get("sha256") else NA))
    if source.get("size") is not None:
        rows.append(("size", f"{exact_bytes(int(source['size']))} bytes"))
    if recipe is not None:
        rows.append(("recipe", f"`{recipe.name}` (nemo2sherpa's catalog)"))
    rows.append(("licence", _licence(licence)))
    lines = ["## Source", "", "| | |", "|---|---|", *[f"| {k} | {table_cell(v)} |" for k, v in rows], ""]
    lines += _attribution(source, licence)
    return "\n".join(lines) + "\n"


def _licence(licence: Licence | None) -> str:
    if licence is None:
        return "not recorded: published with --force; the licence of the source checkpoint applies"
    return licence.text()


def _attribution(source: dict[str, Any], licence: Licence | None) -> list[str]:
    if licence is None:
        return []
    if licence.id.startswith("cc-by") and source.get("repo_id"):
        owner = str(source["repo_id"]).split("/")[0]
        return [f"Attribution: this model is derived from {_source_link(source)} by {owner}, licensed under "
                f"{_licence(licence)}. Changes: exported to ONNX for sherpa-onnx (same weights, float32); "
                "no endorsement by the original authors is implied.", ""]
    return [f"Licensed under {_licence(licence)}, as its source.", ""]


def _model(manifest: Manifest) -> str:
    facts, arch = manifest.model, manifest.model.architecture
    rows = [
        ("encoder", f"FastConformer: {plural(arch.encoder_layers, 'layer')}, d_model {arch.d_model}, "
                    f"{plural(arch.attention_heads, 'attention head')} ({arch.attention}), "
                    f"subsampling x{arch.subsampling_factor}"),
        ("vocabulary", f"{facts.vocab_size} tokens + blank (`{family_named(manifest.default_family).tokens_file}`)"),
        ("input", f"{arch.mels} mel bins, {facts.sample_rate} Hz mono, normalisation `{facts.normalize or 'none'}`"),
        ("parameters", count(facts.parameters)),
    ]
    several = len(manifest.families) > 1
    for name, record in manifest.families.items():
        family = family_named(name)
        for key, value in family.card_rows(facts, record.metadata, _redact):
            rows.insert(1 if key == "decoder" else len(rows), (f"{key} ({family.title})" if several else key, value))
    table = [f"| {k} | {table_cell(v)} |" for k, v in rows]
    return "\n".join(["## Model", "", "| | |", "|---|---|", *table, ""]) + "\n"


def _files(plan: PublishPlan) -> str:
    manifest = plan.manifest
    lines = ["## Files", "", "| file | bytes | sha256 |", "|---|---:|---|"]
    total = 0
    for name, record in sorted(manifest.files.items()):
        lines.append(f"| `{name}` | {exact_bytes(record.size)} | `{record.sha256}` |")
        total += record.size
    manifest_bytes = (plan.directory / MANIFEST_NAME).read_bytes()
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    lines.append(f"| `{MANIFEST_NAME}` | {exact_bytes(len(manifest_bytes))} | `{manifest_sha}` |")
    lines += ["", f"Model files: {human_bytes(total)}. `{MANIFEST_NAME}` records the source, the model facts, the "
                  "versions used and these hashes.", ""]
    lines += _variant_lines(manifest)
    external = sorted(set((manifest.export.get("external_data") or {}).values()))
    if external:
        lines.append(f"Keep {', '.join(f'`{n}`' for n in external)} next to the `.onnx` file(s): they hold the "
                     "weights (ONNX external data), " + (
                         f"which sherpa-onnx {MIN_SHERPA_ONNX_EXTERNAL_DATA} and later load from the model's directory."
                         if family_named(manifest.default_family).runtime == "sherpa-onnx" else
                         "which onnxruntime loads from the model's directory."))
        lines.append("")
    if plan.validation.files:
        lines.append("The validation report is in " + ", ".join(
            f"[`{VALIDATION_DIR}/{n}`]({VALIDATION_DIR}/{n})" for n in plan.validation.files) + ".")
        lines.append("")
    return "\n".join(lines) + "\n"


def _variant_lines(manifest) -> list[str]:
    """What each precision variant in the repository is, and where it runs: a user picks a file by this."""
    present = {p for record in manifest.families.values() for p in record.variants if p != "fp32"}
    if not present:
        return []
    lines = ["Precision variants beside the float32 graphs:", ""]
    for name in (p for p in PRECISIONS if p in present):
        lines.append(f"- `{name}`: {CATALOG[name].summary}; for {CATALOG[name].runs_on}.")
    return lines + [""]


# --- how to load it -----------------------------------------------------------------------------------------------


def _usage(plan: PublishPlan, repo_id: str, revision: str) -> str:
    manifest = plan.manifest
    local = repo_id.split("/")[-1]
    mels = manifest.model.architecture.mels
    rate = manifest.model.sample_rate
    threshold = _check(plan.validation.report, "speed").get("recommended_gpu_min_seconds")
    provider_note = (f"\"cuda\" measured faster from {fixed(threshold, 1)} s of audio (see Speed)"
                     if is_number(threshold) else "or \"cuda\" with a CUDA-enabled onnxruntime")
    revision_flag = f" --revision {revision}" if revision != "main" else ""
    blocks = []
    for name, record in manifest.families.items():
        family = family_named(name)
        variant = record.variants.get("fp32") or next(iter(record.variants.values()))
        files = {role: f"{local}/{file}" for role, file in variant.files.items()}
        heading = f"### The {family.title} model\n\n" if len(manifest.families) > 1 else ""
        blocks.append(heading + family.usage(files, f"{local}/{family.tokens_file}", feature_dim=mels, sample_rate=rate,
                                             provider_note=provider_note, metadata=record.metadata,
                                             variants=list(record.variants)))
    return f"""## Usage

Download (needs `huggingface_hub`):

```bash
hf download {repo_id}{revision_flag} --local-dir {local}
```

""" + "\n".join(blocks)


# --- the proof ----------------------------------------------------------------------------------------------------


def _validation(plan: PublishPlan) -> str:
    report = plan.validation.report
    lines = ["## Validation", ""]
    if report is None:
        lines += ["**No validation report**: published with `--force`. Run `nemo2sherpa validate` on the downloaded "
                  "directory before relying on it.", ""]
        return "\n".join(lines)
    verdict = "PASSED" if plan.validation.passed else report.verdict.upper()
    lines.append(f"**{verdict}**: `nemo2sherpa validate` {_redact(report.tool_version)}, "
                 f"{_redact(report.created)}, variant `{_redact(report.variant)}`.")
    if plan.forced:
        lines.append("Published anyway, with `--force`.")
    lines += ["", f"Hardware: {_hardware(report)}.", ""]
    audio = report.audio
    if report.proven or report.not_proven:
        lines += ["", *[f"- Proven: {_redact(item)}" for item in report.proven],
                  *[f"- Not proven: {_redact(item)}" for item in report.not_proven]]
    if audio:
        lines += [f"Audio: {audio.get('utterances', NA)} utterances, {fixed(audio.get('total_seconds'), 1)} s, "
                  f"{_redact(str(audio.get('source', NA)))}; {audio.get('with_text', NA)} with reference text.", ""]
    lines += _checks_table(report)
    lines += _fidelity(report) + _transcripts(report) + _providers(report)
    lines += _speed(report, has_plot=PLOT in plan.validation.files)
    from nemo2sherpa.families.online_recognizer import latency_markdown

    lines += latency_markdown(_check(report, "streaming"), heading="###")
    links = [f"[`{n}`]({VALIDATION_DIR}/{n})" for n in (REPORT_MD, REPORT_JSON) if n in plan.validation.files]
    lines += [f"Full report: {', '.join(links)}.", ""]
    return "\n".join(lines)


def _check(report: ValidationReport | None, name: str) -> dict[str, Any]:
    """A check's record as a mapping of its figures (empty when the report lacks it)."""
    check = report.check(name) if report is not None else None
    return check.to_dict() if check is not None else {}


def _ran(check: dict[str, Any]) -> bool:
    return check.get("status") in ("passed", "failed")


def _status(report: ValidationReport, name: str) -> str:
    """A check's status as the card shows it: run or not, and why not."""
    check = _check(report, name)
    if not check:
        return "not run"
    if check.get("status") == "skipped":
        return f"skipped: {_redact(str(check.get('reason') or 'no reason given'))}"
    return str(check.get("status"))


def _checks_table(report: ValidationReport) -> list[str]:
    thresholds = report.thresholds
    lines = ["| check | status | problems |", "|---|---|---|"]
    for name, title in CHECK_NAMES.items():
        problems = "; ".join(_redact(str(p)) for p in _check(report, name).get("problems") or [])
        lines.append(f"| {title} | {table_cell(_status(report, name))} | {table_cell(problems)} |")
    lines.append("")
    if thresholds:
        stated = ", ".join(f"{table_cell(str(k))} {plain(v)}" for k, v in thresholds.items())
        lines += [f"Thresholds: {stated}.", ""]
    return lines


def _skipped_note(report: ValidationReport, name: str) -> list[str]:
    return [f"{CHECK_NAMES[name].capitalize()}: {_status(report, name)}.", ""]


def _fidelity(report: ValidationReport) -> list[str]:
    check = _check(report, "graph_fidelity")
    lines = ["### Graph fidelity", ""]
    if not _ran(check):
        return lines + _skipped_note(report, "graph_fidelity")
    lines += ["The ONNX graphs against NeMo on the same features (NeMo's preprocessor feeds both).", "",
              "| reference | utterances | encoder max abs diff | token ids equal to NeMo's |", "|---|---:|---:|---:|",
              f"| {table_cell(str(check.get('reference', NA)))} | {check.get('utterances', NA)} | "
              f"{scientific(check.get('encoder_max_abs_diff'))} | {rate(check.get('token_match_rate'))} |", ""]
    for mismatch in (check.get("mismatches") or [])[:10]:
        lines.append(f"- `{_redact(str(mismatch.get('utterance')))}`, {_redact(str(mismatch.get('graph')))}: "
                     f"{_redact(str(mismatch.get('detail')))}")
    return lines + ([""] if check.get("mismatches") else [])


def _transcripts(report: ValidationReport) -> list[str]:
    check = _check(report, "transcripts")
    lines = ["### Transcripts: sherpa-onnx against NeMo", ""]
    if not _ran(check) or not check.get("providers"):
        return lines + _skipped_note(report, "transcripts")
    lines += [f"Reference: {table_cell(str(check.get('reference', NA)))}. sherpa-onnx computes its own features, so a "
              "small share of differing transcripts is expected (see the sherpa-onnx contract).", "",
              "| provider | exact match with NeMo | WER vs NeMo | WER vs reference text |", "|---|---:|---:|---:|"]
    for provider, figures in check["providers"].items():
        figures = figures or {}
        lines.append(f"| {table_cell(str(provider))} | {rate(figures.get('exact_match_rate'))} | "
                     f"{percent(figures.get('wer_vs_nemo_percent'))} | "
                     f"{percent(figures.get('wer_vs_truth_percent'))} |")
    if check.get("nemo_wer_vs_truth_percent") is not None:
        lines.append(f"| NeMo itself | | | {percent(check['nemo_wer_vs_truth_percent'])} |")
    return lines + [""]


def _providers(report: ValidationReport) -> list[str]:
    check = _check(report, "providers")
    lines = ["### Providers", ""]
    if not _ran(check):
        return lines + _skipped_note(report, "providers")
    for provider in report.providers:
        info = check.get(provider) or {}
        if info.get("available"):
            runtime = f" ({_redact(str(info['runtime']))})" if info.get("runtime") else ""
            lines.append(f"- {provider}: available{runtime}")
        else:
            lines.append(f"- {provider}: not available ({_redact(str(info.get('reason') or 'no reason given'))})")
    if check.get("cpu_cuda_exact_match_rate") is not None:
        lines.append(f"- CPU and CUDA transcripts identical: {rate(check['cpu_cuda_exact_match_rate'])}")
    return lines + [""]


def _speed(report: ValidationReport, has_plot: bool) -> list[str]:
    check = _check(report, "speed")
    lines = ["### Speed", ""]
    buckets = check.get("buckets") or []
    if not _ran(check) or not buckets:
        return lines + _skipped_note(report, "speed")
    timed = [p for p in ("cpu", "cuda") if any(p in b for b in buckets)]
    lines.append(f"sherpa-onnx decode time per audio length: median of {check.get('repeats', NA)} runs after a "
                 f"warm-up, {check.get('threads', NA)} threads, on {_hardware(report)}.")
    lines.append("")
    header = ["audio (s)"] + [f"{p.upper()} {h}" for p in timed for h in ("decode (s)", "RTFx")]
    if "cuda" in timed and "cpu" in timed:
        header.append("CUDA speedup")
    lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for bucket in buckets:
        cells = [fixed(bucket.get("seconds"), 1)]
        for provider in timed:
            figures = bucket.get(provider) or {}
            cells += [fixed(figures.get("decode_seconds"), 3), fixed(figures.get("rtfx"), 1)]
        if len(header) > 1 + 2 * len(timed):
            cells.append(fixed(bucket.get("cuda_speedup"), 2))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    loads = check.get("load_seconds") or {}
    if loads:
        lines.append("Model load: " + ", ".join(f"{p.upper()} {fixed(s, 2)} s" for p, s in loads.items()) + ".")
    if "cuda" in timed:
        lines.append(f"Break-even (CUDA faster from): {seconds(check.get('break_even_seconds'))}. "
                     f"Recommended: CUDA for audio of at least {seconds(check.get('recommended_gpu_min_seconds'))}, "
                     "CPU below.")
    else:
        lines.append("CUDA was not timed: no break-even or recommendation.")
    lines.append("")
    if has_plot:
        lines += [f"![decode time against audio length]({VALIDATION_DIR}/{PLOT})", ""]
    return lines


def _hardware(report: ValidationReport) -> str:
    env = report.environment
    cpu = f"{_redact(str(env.get('cpu') or 'unknown CPU'))} ({env.get('cores', '?')} cores)"
    gpu = env.get("gpu")
    if isinstance(gpu, dict) and gpu.get("name"):
        driver = f", driver {_redact(str(gpu['driver']))}" if gpu.get("driver") else ""
        return f"{cpu}, GPU {_redact(str(gpu['name']))}{driver}"
    return f"{cpu}, no GPU"


# --- how it was made ----------------------------------------------------------------------------------------------


def _conversion(manifest: Manifest) -> str:
    export = manifest.export
    lines = ["## Conversion", "",
             f"Converted on {manifest.created} by nemo2sherpa {manifest.tool_version}"
             + (f" in {fixed(manifest.conversion_seconds, 1)} s" if manifest.conversion_seconds is not None else "")
             + f": opset {export.get('opset', NA)}, {_redact(str(export.get('exporter', NA)))}.", ""]
    lines += ["| package | version |", "|---|---|",
              *[f"| {table_cell(k)} | {table_cell(v)} |" for k, v in manifest.versions.items()]]
    lines.append("")
    self_check = export.get("self_check_max_abs_diff") or {}
    if self_check:
        lines.append("At conversion, each graph was run with onnxruntime on inputs the exporter never traced and "
                     "compared with PyTorch (max abs diff): " + "; ".join(
                         f"{graph} " + ", ".join(f"{scientific(v)} ({probe})" for probe, v in (probes or {}).items())
                         for graph, probes in self_check.items()) + ".")
        lines.append("")
    return "\n".join(lines)


# --- redaction ---------------------------------------------------------------------------------------------------


def _redact(text: str) -> str:
    """Cut absolute local paths down to their last component (URLs are left alone)."""
    return _PATH.sub(lambda m: m.group(1), text)


