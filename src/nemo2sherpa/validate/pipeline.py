"""validate(): run the checks in order and write the report. Exit status follows `passed`."""

from __future__ import annotations

import datetime as dt
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo2sherpa import __version__
from nemo2sherpa.errors import UserError
from nemo2sherpa.progress import Progress
from nemo2sherpa.validate import fidelity, speed, transcripts
from nemo2sherpa.validate.audio import Clip, clips_from_files, read_dataset
from nemo2sherpa.validate.contract_check import ModelSpec, check_contract
from nemo2sherpa.validate.long_audio import cuda_limit_seconds, long_input_clip
from nemo2sherpa.validate.model_dir import ModelDir, open_model_dir
from nemo2sherpa.validate.report import CHECK_ORDER, FORMAT, FORMAT_VERSION, write_report
from nemo2sherpa.validate.results import PASSED, SKIPPED, CheckResult

PROVIDERS = ("cpu", "cuda")


@dataclass(frozen=True)
class ValidateOptions:
    directory: Path
    nemo: Path | None = None
    audio: tuple[Path, ...] = ()
    dataset: Path | None = None
    providers: tuple[str, ...] = ("cpu",)
    report_dir: Path | None = None
    variant: str | None = None
    family: str | None = None  # which of the directory's model families (default: its first)
    threads: int = 2
    repeats: int = 3
    speed_lengths: tuple[float, ...] = speed.DEFAULT_LENGTHS
    measure_speed: bool = True
    use_nemo: bool = True
    encoder_tolerance: float = fidelity.DEFAULT_ENCODER_TOLERANCE
    min_exact_match: float = transcripts.DEFAULT_MIN_EXACT_MATCH
    max_wer_vs_nemo: float = transcripts.DEFAULT_MAX_WER_VS_NEMO
    min_provider_agreement: float = 1.0
    long_audio: bool = True
    compare_with: Path | None = None


@dataclass
class ValidationOutcome:
    report: dict[str, Any]
    report_dir: Path
    checks: dict[str, CheckResult] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.report["passed"])


def validate(options: ValidateOptions, progress: Progress | None = None) -> ValidationOutcome:
    progress = progress or Progress()
    for provider in options.providers:
        if provider not in PROVIDERS:
            raise UserError(f"unknown provider {provider!r}; use cpu, cuda or both (cpu,cuda)")
    if options.compare_with is not None and not options.compare_with.is_dir():
        raise UserError.about(options.compare_with, "--compare-with needs a model directory")
    model = open_model_dir(options.directory, options.variant, options.family)
    report_dir = options.report_dir or model.directory / report_dir_name(model)
    checks: dict[str, CheckResult] = {}

    with progress.stage("check the sherpa-onnx contract"):
        checks["contract"], spec = check_contract(model)
    fp32_model = open_model_dir(options.directory, "fp32", model.family.name) if model.variant != "fp32" else None
    sample_rate = model.manifest.model.sample_rate if model.manifest else 16000
    with progress.stage("load audio"):
        clips, audio_source = _clips(options, model, sample_rate)
    long_clip = long_input_clip(model.manifest, clips, sample_rate) if options.long_audio and spec else None

    if spec is None:
        skipped = ("graph_fidelity", "transcripts", "providers", "speed", "long_audio") + \
            (("precision",) if fp32_model else ()) + (("attention",) if options.compare_with else ())
        for name in skipped:
            checks[name] = CheckResult.skipped(name, "the contract check failed")
    else:
        references, reference_kind, nemo, reason = _references(
            options, model, clips + ([long_clip] if long_clip else []), progress)
        with progress.stage("compare graphs with NeMo"):
            checks["graph_fidelity"] = _graph_fidelity(options, model, spec, clips, references, reference_kind,
                                                       nemo, reason)
        runs, cuda_skipped = _run_sherpa(options, model, spec, clips, sample_rate, progress)
        checks["providers"] = _providers_check(options, clips, runs)
        usable = [p for p in options.providers if runs[p].ok and not runs[p].fallback_to_cpu]
        rows = [transcripts.TranscriptRow(
            name=c.name, seconds=c.seconds, truth=c.text,
            nemo=references[c.name].text if c.name in references else None,
            sherpa={p: runs[p].transcripts[c.name]["text"] for p in usable}) for c in clips]
        if usable:
            checks["transcripts"] = transcripts.evaluate(rows, usable, options.min_exact_match,
                                                         options.max_wer_vs_nemo, reference_kind,
                                                         explain=model.family.explain_transcript_difference)
        else:
            checks["transcripts"] = CheckResult.skipped("transcripts", "sherpa-onnx did not run on any provider")
        if options.measure_speed and usable:
            checks["speed"] = speed.summarize(
                [speed.ProviderTimes(p, runs[p].load_seconds,
                                     {length: runs[p].median(speed.bucket_name(length))
                                      for length in options.speed_lengths
                                      if runs[p].median(speed.bucket_name(length)) is not None},
                                     peak_rss_bytes=runs[p].peak_rss_bytes,
                                     gpu_peak_bytes=(runs[p].gpu_memory or {}).get("peak_above_baseline_bytes"))
                 for p in usable], options.threads, options.repeats)
            if cuda_skipped:
                checks["speed"].details["cuda_length_limit_seconds"] = round(cuda_limit_seconds(model.manifest), 1)
                checks["speed"].details["cuda_skipped_lengths"] = cuda_skipped
        else:
            checks["speed"] = CheckResult.skipped("speed", "not requested (--no-speed)" if not options.measure_speed
                                                  else "sherpa-onnx did not run")
        if fp32_model is not None:
            from nemo2sherpa.validate.variants import compare_with_fp32

            checks["precision"] = compare_with_fp32(
                model, fp32_model, clips, references, spec, providers=options.providers, threads=options.threads,
                repeats=options.repeats, speed_lengths=options.speed_lengths,
                variant_runs={p: runs[p] for p in usable}, measure_speed=options.measure_speed,
                sample_rate=sample_rate, progress=progress)
        checks["long_audio"] = _long_audio(options, model, spec, long_clip, references, nemo, progress)
        if options.compare_with is not None:
            from nemo2sherpa.validate.long_audio import compare_exports

            with progress.stage(f"compare with {options.compare_with.name}"):
                checks["attention"] = compare_exports(
                    model, options.compare_with, clips, threads=options.threads, feature_dim=spec.feat_dim,
                    this_texts={n: e["text"] for n, e in runs["cpu"].transcripts.items()} if "cpu" in usable else None)

    report = _assemble(options, model, checks, clips, audio_source)
    with progress.stage("write report"):
        write_report(report, report_dir)
    progress.note(f"{'PASSED' if report['passed'] else 'FAILED'}: report in {report_dir}")
    return ValidationOutcome(report=report, report_dir=report_dir, checks=checks)


def report_dir_name(model: ModelDir) -> str:
    """validation/ for the directory's default family; validation-<family>/ for another one (a hybrid converted with
    --decoder both has two models, each validated on its own)."""
    default = model.manifest.default_family if model.manifest is not None else model.family.name
    return "validation" if model.family.name == default else f"validation-{model.family.name}"


def _long_audio(options, model, spec: ModelSpec, clip, references, nemo, progress) -> CheckResult:
    from nemo2sherpa.validate.long_audio import check_long_input

    if not options.long_audio:
        return CheckResult.skipped("long_audio", "not requested (--no-long-audio)")
    if clip is None:
        return check_long_input(None, model, spec)
    with progress.stage(f"long input: {clip.seconds:.0f} s through the graphs and sherpa-onnx"):
        return check_long_input(clip, model, spec, references.get(clip.name),
                                max_symbols=nemo.max_symbols if nemo is not None else None,
                                tolerance=options.encoder_tolerance, threads=options.threads,
                                memory_limit_bytes=_physical_memory())


def _physical_memory() -> int | None:
    """The long decode's address-space cap: a runaway allocation fails in its child, not the machine."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def _clips(options: ValidateOptions, model: ModelDir, sample_rate: int) -> tuple[list[Clip], str]:
    if options.audio and options.dataset:
        raise UserError("give --audio or --dataset, not both")
    if options.audio:
        return clips_from_files(options.audio, sample_rate), "files"
    if options.dataset:
        return read_dataset(options.dataset, sample_rate), "dataset"
    recipe = _recipe_of(model)
    if recipe is not None and recipe.dataset_path() is not None:
        return read_dataset(recipe.dataset_path(), sample_rate), f"the {recipe.name} test set"
    from nemo2sherpa.validate.testset import synthesized_clips

    return synthesized_clips(sample_rate), "synthesized (espeak-ng)"


def _recipe_of(model: ModelDir):
    from nemo2sherpa.recipes import find_recipe

    if model.manifest is None:
        return None
    name = model.manifest.source.get("recipe")
    return find_recipe(name) if name else None


def _checkpoint(options: ValidateOptions, model: ModelDir) -> tuple[Path | None, str | None, str | None]:
    """(checkpoint path or None, its sha256 or None, why there is none)."""
    from nemo2sherpa.hashing import sha256_file

    source = model.manifest.source if model.manifest else {}
    expected = source.get("sha256")
    if options.nemo is not None:
        if not options.nemo.is_file():
            raise UserError.about(options.nemo, "no such checkpoint file")
        digest = sha256_file(options.nemo)
        if expected and digest != expected:
            raise UserError.about(options.nemo, "is not the checkpoint this directory was converted from "
                                                f"(sha256 {digest[:12]}..., the manifest says {expected[:12]}...)")
        return options.nemo, digest, None
    if model.manifest is None:
        return None, None, "no manifest and no --nemo: nothing to compare with"
    if model.manifest.random_weights:
        return None, None, "random weights: there is no checkpoint to compare with"
    recipe = _recipe_of(model)
    if source.get("kind") == "bundled" and recipe is not None and recipe.bundled_path():
        return recipe.bundled_path(), expected, None
    if source.get("repo_id") and source.get("filename"):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source["repo_id"], source["filename"],
                                        revision=source.get("resolved_revision"))
        if isinstance(cached, str):
            return Path(cached), expected, None
        return None, expected, (f"{source['repo_id']}/{source['filename']} is not in the Hugging Face cache; "
                                "pass --nemo PATH")
    return None, expected, "the checkpoint was a local file; pass --nemo PATH"


def _references(options, model, clips, progress):
    """NeMo's result for every clip, from the cache or computed now. Returns (references, kind, nemo or None,
    reason when references are missing)."""
    from nemo2sherpa.validate.long_audio import reference_key
    from nemo2sherpa.validate.references import Reference, ReferenceStore

    checkpoint, digest, reason = _checkpoint(options, model)
    if digest is None:
        return {}, None, None, reason
    store = ReferenceStore(reference_key(digest, model.manifest, model.family.name))
    references = {c.name: r for c in clips if (r := store.load(c)) is not None}
    missing = [c for c in clips if c.name not in references]
    kind = "cache" if references else None
    nemo = None
    if missing:
        if checkpoint is None or not options.use_nemo:
            return references, kind, None, (reason or "NeMo disabled (--no-nemo)") + \
                f"; {len(missing)} of {len(clips)} clips have no cached NeMo reference"
        try:
            from nemo2sherpa.validate.nemo_reference import NemoReference
        except ImportError:
            return references, kind, None, "NeMo is not installed (pip install nemo2sherpa[convert])"
        with progress.stage(f"NeMo reference for {len(missing)} clip(s)"):
            nemo = NemoReference(checkpoint, threads=options.threads, manifest=model.manifest, family=model.family)
            for clip in missing:
                result = nemo.run(clip.audio)
                reference = Reference(tokens=result.tokens, text=result.text, features=result.features,
                                      encoded=result.encoded)
                store.save(clip, reference)
                references[clip.name] = reference
        kind = "nemo"
    return references, kind, nemo, None


def _graph_fidelity(options, model, spec: ModelSpec, clips, references, reference_kind, nemo, reason):
    if not references:
        return CheckResult.skipped("graph_fidelity", reason or "no NeMo reference")
    tolerance = options.encoder_tolerance
    if model.variant != "fp32":
        from nemo2sherpa.validate.variants import VARIANT_ENCODER_TOLERANCE

        # a quantized encoder differs from NeMo by design; its token ids are what must still agree
        tolerance = max(tolerance, VARIANT_ENCODER_TOLERANCE.get(model.variant, tolerance))
    graphs = model.family.graph_decoder(model.graphs, spec, threads=options.threads)
    max_symbols = nemo.max_symbols if nemo is not None and nemo.max_symbols else \
        (spec.max_symbols or fidelity.DEFAULT_MAX_SYMBOLS)
    results = [fidelity.compare_clip(c, references[c.name], graphs, model.family, max_symbols, tolerance, nemo)
               for c in clips if c.name in references]
    check = fidelity.summarize(results, tolerance, reference_kind or "nemo", first=model.family.encoder_role.name)
    if reason:
        check.details["note"] = reason
    return check


def _runtime_for(provider: str) -> tuple[str | None, str | None]:
    """(onnxruntime library to route sherpa-onnx through, or None for its own; a reason CUDA cannot work)."""
    if provider != "cuda":
        return None, None
    from nemo2sherpa.validate import ort_runtime

    bundled = ort_runtime.sherpa_runtime_info()
    if bundled.cuda_provider:
        return None, None  # an official CUDA build of sherpa-onnx
    gpu_library = ort_runtime.onnxruntime_gpu_library()
    if gpu_library is not None and ort_runtime.has_cuda_provider(gpu_library.parent):
        return str(gpu_library), None
    return None, (f"sherpa-onnx's onnxruntime {bundled.version} is a CPU build and no onnxruntime-gpu is "
                  "installed: `pip install onnxruntime-gpu` (matching your CUDA) and nemo2sherpa routes sherpa-onnx "
                  "through it, or install a CUDA build of sherpa-onnx")


def _run_sherpa(options, model, spec: ModelSpec, clips, sample_rate, progress):
    """sherpa-onnx on each provider; returns the runs and the speed lengths left out on CUDA because a
    full-attention encoder cannot run them there (long_audio.cuda_limit_seconds)."""
    from nemo2sherpa.validate.sherpa_worker import SherpaRequest, SherpaRun, run_sherpa

    buckets = speed.make_bucket_clips(clips, options.speed_lengths, sample_rate) if options.measure_speed else {}
    audio = {**{c.name: c for c in clips}, **buckets}
    cuda_limit = cuda_limit_seconds(model.manifest)
    cuda_skipped = [length for length in options.speed_lengths if length > cuda_limit] \
        if "cuda" in options.providers and options.measure_speed else []
    runs = {}
    for provider in options.providers:
        library, reason = _runtime_for(provider)
        if reason:
            runs[provider] = SherpaRun(provider=provider, ok=False, error=reason)
            continue
        timed = [name for name, clip in buckets.items() if provider != "cuda" or clip.seconds <= cuda_limit]
        request = SherpaRequest.for_model(
            model, provider=provider, threads=options.threads, sample_rate=sample_rate, feature_dim=spec.feat_dim,
            transcribe=[c.name for c in clips], speed=timed, repeats=options.repeats, runtime_library=library)
        with progress.stage(f"sherpa-onnx on {provider}: {len(clips)} clips"
                            + (f", {len(timed)} speed buckets x {options.repeats}" if timed else "")):
            runs[provider] = run_sherpa(request, audio)
    return runs, cuda_skipped


def _providers_check(options, clips, runs) -> CheckResult:
    check = CheckResult("providers")
    for provider in options.providers:
        run = runs[provider]
        info: dict[str, Any] = {"available": run.ok and not run.fallback_to_cpu,
                                "runtime": _describe_runtime(run.runtime), "reason": None}
        if provider == "cuda" and run.ok:
            info["evidence"] = _cuda_evidence(run)
        if not run.ok:
            info["reason"] = run.error
            check.fail(f"{provider}: {run.error}")
        elif run.fallback_to_cpu:
            from nemo2sherpa.validate.ort_runtime import fallback_messages

            said = " ".join(_strip_source_paths(m) for m in fallback_messages(run.log))[:600]
            info["reason"] = f"sherpa-onnx fell back to CPU: {said}"
            check.fail(f"{provider}: sherpa-onnx silently fell back to CPU ({said}); no {provider} figures are "
                       "reported. Install onnxruntime-gpu matching your CUDA with its CUDA/cuDNN libraries "
                       "(pip install 'onnxruntime-gpu[cuda,cudnn]'; nemo2sherpa routes sherpa-onnx through it) or a "
                       "CUDA build of sherpa-onnx")
        elif provider == "cuda" and not info["evidence"]["cuda_provider_loaded"]:
            info["available"] = False
            info["reason"] = "onnxruntime's CUDA provider library was never loaded"
            check.fail("cuda: sherpa-onnx reported no fall back, but onnxruntime's CUDA provider library was never "
                       "loaded in its process: no CUDA figures are reported")
        check.details[provider] = info
    if all(p in runs and runs[p].ok and not runs[p].fallback_to_cpu for p in ("cpu", "cuda")) \
            and set(options.providers) >= {"cpu", "cuda"}:
        same = sum(" ".join(runs["cpu"].transcripts[c.name]["text"].split())
                   == " ".join(runs["cuda"].transcripts[c.name]["text"].split()) for c in clips) / len(clips)
        check.details["cpu_cuda_exact_match_rate"] = round(same, 4)
        if same < options.min_provider_agreement:
            check.fail(f"CPU and CUDA transcripts are identical on only {same:.0%} of utterances "
                       f"(minimum {options.min_provider_agreement:.0%})")
    return check


def _cuda_evidence(run) -> dict[str, Any]:
    """What shows that a CUDA run really ran on the GPU (reports get published: no paths)."""
    runtime, memory = run.runtime, run.gpu_memory or {}
    return {"cuda_provider_loaded": bool(runtime.get("cuda_provider_loaded")),
            "onnxruntime_available_providers": runtime.get("onnxruntime_available_providers"),
            "nvidia_libraries_loaded": runtime.get("nvidia_libraries_loaded"),
            "gpu_memory": {k: memory.get(k) for k in ("available", "reason", "device", "peak_above_baseline_bytes",
                                                      "process_peak_bytes")} if memory else None}


def _strip_source_paths(message: str) -> str:
    """Drop directories from a log line (reports get published): '/a/b/libx.so' -> 'libx.so'."""
    import re

    return re.sub(r"(?:/[\w.+-]+)+/([\w.+-]+)", r"\1", message)


def _describe_runtime(summary: dict[str, Any]) -> str | None:
    """One line naming the onnxruntime sherpa-onnx really ran on; file names only (reports get published)."""
    if not summary or not summary.get("onnxruntime_version"):
        return None
    library = Path(str(summary.get("onnxruntime_library") or "")).name
    how = "routed through " + library if summary.get("shim") else "bundled with sherpa-onnx"
    cuda = ", CUDA provider present" if summary.get("cuda_provider_library") else ""
    return f"onnxruntime {summary['onnxruntime_version']} ({how}{cuda})"


def _environment(options) -> dict[str, Any]:
    from importlib import metadata

    versions = {"nemo2sherpa": __version__, "python": platform.python_version()}
    for dist in ("sherpa-onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "nemo_toolkit", "torch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {"platform": platform.platform(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "gpu": _gpu_info() if "cuda" in options.providers else None, "versions": versions}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_info() -> dict[str, str] | None:
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not out:
        return None
    name, driver, memory = (part.strip() for part in (out[0].split(",") + ["", ""])[:3])
    return {"name": name, "driver": driver, "memory": memory}


def _assemble(options, model: ModelDir, checks, clips, audio_source) -> dict[str, Any]:
    ordered = {name: checks[name].to_dict() for name in CHECK_ORDER if name in checks}
    passed = all(c.status in (PASSED, SKIPPED) for c in checks.values()) and checks["contract"].status == PASSED
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "model_dir": model.directory.resolve().name,
        "family": model.family.name,
        "variant": model.variant,
        "files": {**{role: path.name for role, path in model.graphs.items()},
                  "tokens": model.tokens.name},
        "passed": passed,
        "providers": list(options.providers),
        "thresholds": {"encoder_max_abs_diff": options.encoder_tolerance, "min_exact_match": options.min_exact_match,
                       "max_wer_vs_nemo_percent": options.max_wer_vs_nemo,
                       "min_provider_agreement": options.min_provider_agreement},
        "audio": {"source": audio_source, "utterances": len(clips),
                  "total_seconds": round(sum(c.seconds for c in clips), 2),
                  "with_text": sum(1 for c in clips if c.text)},
        "checks": ordered,
        "environment": _environment(options),
        "model": {"source": model.manifest.source if model.manifest else None,
                  "facts": model.manifest.model.to_dict() if model.manifest else None},
    }
