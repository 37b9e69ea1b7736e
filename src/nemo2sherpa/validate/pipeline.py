"""validate(): the contract check, then each check in CHECKS over one shared context, then the report.

A check is a function from the context to a CheckResult. What several checks need (the clips, NeMo's references,
sherpa-onnx's runs on each provider) is computed by the context the first time a check asks for it, once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from nemo2sherpa import __version__
from nemo2sherpa.errors import UserError
from nemo2sherpa.families.base import GraphDecoder
from nemo2sherpa.progress import Progress
from nemo2sherpa.validate import fidelity, front_end_replay, speed, transcripts
from nemo2sherpa.validate.audio import Clip, clips_from_files, read_dataset
from nemo2sherpa.validate.checkpoint_lookup import NemoReferences, nemo_references, recipe_of
from nemo2sherpa.validate.contract_check import ModelSpec, check_contract
from nemo2sherpa.validate.environment import environment
from nemo2sherpa.validate.estimate import MACHINE_SHARE, Estimate, describe, estimate, physical_memory_bytes
from nemo2sherpa.validate.long_audio import cuda_limit_seconds, long_input_clip
from nemo2sherpa.validate.model_dir import ModelDir, open_model_dir
from nemo2sherpa.validate.providers_check import check_providers
from nemo2sherpa.validate.report import write_report
from nemo2sherpa.validate.results import CheckResult
from nemo2sherpa.validate.sherpa_child import SherpaRun, run_on_providers
from nemo2sherpa.validate.verdict import EXIT_CODES, judge
from nemo2sherpa.validation_report import CheckRecord, ValidationReport

PROVIDERS = ("cpu", "cuda")


@dataclass(frozen=True)
class ValidateOptions:
    directory: Path
    nemo: Path | None = None
    audio: tuple[Path, ...] = ()
    dataset: Path | None = None
    providers: tuple[str, ...] = ("cpu",)
    report_dir: Path | None = None
    report_suffix: str = ""  # appended to the default report folder's name (validation-int8/ beside validation/)
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
    max_wer_vs_truth: float = transcripts.DEFAULT_MAX_WER_VS_TRUTH
    max_front_end_cost: float = transcripts.DEFAULT_MAX_FRONT_END_COST
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

    @property
    def verdict(self) -> str:
        return str(self.report["verdict"])

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


class Context:
    """One validation: the options, the directory, what the contract check learned, and what the checks share."""

    def __init__(self, options: ValidateOptions, model: ModelDir, spec: ModelSpec, progress: Progress,
                 clips: list[Clip], audio_source: str) -> None:
        self.options, self.model, self.spec, self.progress = options, model, spec, progress
        self.clips, self.audio_source = clips, audio_source
        self.sample_rate = model.manifest.model.sample_rate if model.manifest else 16000
        self.long_clip = long_input_clip(model.manifest, clips, self.sample_rate) if options.long_audio else None

    @cached_property
    def references(self) -> NemoReferences:
        """NeMo's result for every clip and the long input, cached on disk or computed now."""
        return nemo_references(self.options, self.model, self.clips + ([self.long_clip] if self.long_clip else []),
                               self.progress)

    @cached_property
    def buckets(self) -> dict[str, Clip]:
        """The audio of each speed length (speed.bucket_name -> clip), made once for every runtime timed on it."""
        options = self.options
        return speed.make_bucket_clips(self.clips, options.speed_lengths, self.sample_rate) \
            if options.measure_speed else {}

    @cached_property
    def runs(self) -> dict[str, SherpaRun]:
        """sherpa-onnx on each provider: every clip transcribed, every speed length timed (on CUDA only those a
        full-attention encoder can run there)."""
        options = self.options
        return run_on_providers(self.model, self.clips, self.buckets, options.providers, threads=options.threads,
                                repeats=options.repeats, sample_rate=self.sample_rate, feature_dim=self.spec.feat_dim,
                                cuda_limit_seconds=cuda_limit_seconds(self.model.manifest), progress=self.progress)

    @cached_property
    def estimate(self) -> Estimate:
        """What this run will cost, said before it starts."""
        options = self.options
        speed_seconds = sum(options.speed_lengths) if options.measure_speed else 0.0
        return estimate(self.model, sum(c.seconds for c in self.clips), speed_seconds, options.repeats,
                        len(options.providers), options.threads, self.long_clip.seconds if self.long_clip else None)

    @cached_property
    def graphs(self) -> GraphDecoder:
        """The directory's graphs run with onnxruntime, as the fidelity checks decode them."""
        return self.model.family.graph_decoder(self.model.graphs, self.spec, threads=self.options.threads)

    @property
    def max_symbols(self) -> int:
        """NeMo's greedy limit of tokens per frame (the checkpoint's own, else the directory's, else NeMo's
        default)."""
        nemo = self.references.nemo
        return nemo.max_symbols if nemo is not None and nemo.max_symbols else \
            (self.spec.max_symbols or fidelity.DEFAULT_MAX_SYMBOLS)

    @cached_property
    def front_end_texts(self) -> dict[str, str]:
        """The graphs' text on sherpa-onnx's own features, for each clip where some provider's sherpa-onnx text
        differs from NeMo's: what tells a front-end difference from a graph difference."""
        refs = self.references
        differing = [c for c in self.clips if c.name in refs.by_clip and any(
            not transcripts.same_text(refs.by_clip[c.name].text, self.runs[p].transcripts[c.name]["text"])
            for p in self.usable)]
        if not differing or not front_end_replay.applies(self.model.family) or front_end_replay.available():
            return {}
        family = self.model.family
        with self.progress.stage(f"replay sherpa-onnx's front end on {len(differing)} differing clip(s)"):
            limit = family.runtime_max_symbols(self.spec) or self.max_symbols
            return {c.name: front_end_replay.replay(self.graphs, self.spec, c, limit, family.runtime_front_end,
                                                    family.online) for c in differing}

    def option_run(self) -> SherpaRun:
        """sherpa-onnx on every clip with the family's front-end option set, on CPU (or the first provider it ran
        on): what a user who sets the option gets."""
        usable = self.usable
        provider = "cpu" if "cpu" in usable else usable[0]
        return run_on_providers(self.model, self.clips, {}, (provider,), threads=self.options.threads, repeats=0,
                                sample_rate=self.sample_rate, feature_dim=self.spec.feat_dim,
                                progress=self.progress, with_front_end_option=True)[provider]

    @property
    def usable(self) -> list[str]:
        """The providers sherpa-onnx really ran on."""
        return [p for p in self.options.providers if self.runs[p].ok and not self.runs[p].fallback_to_cpu]


def check_graph_fidelity(context: Context) -> CheckResult:
    options, model, refs = context.options, context.model, context.references
    if not refs.by_clip:
        return CheckResult.skipped("graph_fidelity", refs.reason or "no NeMo reference")
    tolerance = options.encoder_tolerance
    if model.variant != "fp32":
        from nemo2sherpa.precision.catalog import CATALOG

        # a quantized encoder differs from NeMo by design; its token ids are what must still agree
        tolerance = max(tolerance, CATALOG[model.variant].encoder_tolerance)
    with context.progress.stage("compare graphs with NeMo"):
        results = [fidelity.compare_clip(c, refs.by_clip[c.name], context.graphs, model.family, context.max_symbols,
                                         tolerance, refs.nemo)
                   for c in context.clips if c.name in refs.by_clip]
    check = fidelity.summarize(results, tolerance, refs.kind or "nemo", first=model.family.encoder_role.name)
    if refs.reason:
        check.details["note"] = refs.reason
    return check


def check_providers_asked(context: Context) -> CheckResult:
    return check_providers(context.options.providers, context.options.min_provider_agreement, context.clips,
                           context.runs)


def check_transcripts(context: Context) -> CheckResult:
    usable, runs, refs = context.usable, context.runs, context.references
    if not usable:
        return CheckResult.skipped("transcripts", f"{context.model.family.runtime} did not run on any provider")
    rows = [transcripts.TranscriptRow(
        name=c.name, seconds=c.seconds, truth=c.text,
        nemo=refs.by_clip[c.name].text if c.name in refs.by_clip else None,
        sherpa={p: runs[p].transcripts[c.name]["text"] for p in usable},
        front_end=context.front_end_texts.get(c.name)) for c in context.clips]
    options = context.options
    random_weights = bool(context.model.manifest and context.model.manifest.random_weights)
    check = transcripts.evaluate(rows, usable, options.min_exact_match, options.max_wer_vs_nemo, refs.kind,
                                 explain=context.model.family.explain_transcript_difference,
                                 max_wer_vs_truth=None if random_weights else options.max_wer_vs_truth,
                                 max_front_end_cost=options.max_front_end_cost)
    check.details["runtime"] = context.model.family.runtime
    option = context.model.family.front_end_option
    if option is not None and any(f.get("front_end_caused") for f in check.details["providers"].values()):
        # its own front end is proven to change some transcript: measure what the option gives
        run = context.option_run()
        check.details["front_end_option"] = {
            "python": option.python, "flag": option.flag, "does": option.does, "provider": run.provider,
            **(transcripts.option_figures(rows, {n: e["text"] for n, e in run.transcripts.items()}) if run.ok
               else {"error": run.error})}
    unavailable = front_end_replay.available() if front_end_replay.applies(context.model.family) else None
    if unavailable and any(u.get("nemo") is not None for u in check.details.get("utterances", [])):
        check.details["front_end_note"] = unavailable
    return check


def check_speed(context: Context) -> CheckResult:
    options = context.options
    if not options.measure_speed:
        return CheckResult.skipped("speed", "not requested (--no-speed)")
    if not context.usable:
        return CheckResult.skipped("speed", f"{context.model.family.runtime} did not run")
    runs = context.runs
    check = speed.summarize(
        [speed.ProviderTimes(p, runs[p].load_seconds,
                             {length: runs[p].median(speed.bucket_name(length)) for length in options.speed_lengths
                              if runs[p].median(speed.bucket_name(length)) is not None},
                             peak_rss_bytes=runs[p].peak_rss_bytes,
                             gpu_peak_bytes=(runs[p].gpu_memory or {}).get("peak_above_baseline_bytes"))
         for p in context.usable], options.threads, options.repeats)
    nemo = context.references.nemo
    if nemo is not None and "cpu" in context.usable:
        check.details["nemo_decode_seconds"] = _nemo_times(nemo, context, check.details["buckets"])
    if context.model.manifest is not None and context.model.manifest.random_weights:
        check.details["note"] = ("random weights: such a model emits a token on almost every frame, so its greedy "
                                 "search costs more than a trained model's; the encoder's share of these times holds, "
                                 "the end-to-end figures overstate a real model's")
    limit = cuda_limit_seconds(context.model.manifest)
    skipped = [length for length in options.speed_lengths if length > limit] if "cuda" in options.providers else []
    if skipped:
        check.details["cuda_length_limit_seconds"] = round(limit, 1)
        check.details["cuda_skipped_lengths"] = skipped
    return check


def _nemo_times(nemo, context: Context, buckets: list[dict[str, Any]]) -> dict[str, float]:
    """NeMo (PyTorch, CPU, the same threads) on each speed length once, after a warm-up: the baseline the export's
    speed-up is against. Only when NeMo was loaded anyway (references computed in this run): never a reason to load
    it."""
    import time

    lengths = [b["seconds"] for b in buckets]
    times: dict[str, float] = {}
    with context.progress.stage(f"NeMo on the {len(lengths)} speed lengths, once each"):
        nemo.run(context.buckets[speed.bucket_name(lengths[0])].audio)  # warm-up
        for length in lengths:
            start = time.perf_counter()
            nemo.run(context.buckets[speed.bucket_name(length)].audio)
            times[f"{length:g}"] = round(time.perf_counter() - start, 4)
    return times


def check_streaming(context: Context) -> CheckResult | None:
    """A streaming directory's latency through sherpa-onnx's online recognizer fed live (per provider), and its
    end-of-utterance tokens; None for an offline one."""
    if not context.model.family.online:
        return None
    from nemo2sherpa.validate.streaming import summarize_streaming

    if not context.usable:
        return CheckResult.skipped("streaming", f"{context.model.family.runtime} did not run on any provider")
    return summarize_streaming({p: context.runs[p].transcripts for p in context.usable}, context.spec,
                               context.model.manifest)


def check_precision(context: Context) -> CheckResult | None:
    """A variant (int8, fp16) against the float32 graphs of the same directory; None for the float32 graphs."""
    model, options = context.model, context.options
    if model.variant == "fp32":
        return None
    from nemo2sherpa.validate.precision_check import compare_with_fp32

    fp32_model = open_model_dir(options.directory, "fp32", model.family.name)
    return compare_with_fp32(
        model, fp32_model, context.clips, context.references.by_clip, context.spec, providers=options.providers,
        threads=options.threads, repeats=options.repeats, speed_lengths=options.speed_lengths,
        variant_runs={p: context.runs[p] for p in context.usable}, measure_speed=options.measure_speed,
        sample_rate=context.sample_rate, progress=context.progress)


def check_long_audio(context: Context) -> CheckResult:
    from nemo2sherpa.validate.long_audio import check_long_input

    options, clip = context.options, context.long_clip
    if not options.long_audio:
        return CheckResult.skipped("long_audio", "not requested (--no-long-audio)")
    if clip is None:
        return check_long_input(None, context.model, context.spec)
    memory = physical_memory_bytes()
    needed = context.estimate.long_input_gb
    if memory and needed and needed * 1e9 > MACHINE_SHARE * memory:
        return CheckResult.skipped("long_audio", f"the {clip.seconds:.0f} s input would need about {needed:.0f} GB "
                                                 f"(estimated) and this machine has {memory / 1e9:.0f} GB; run it on a "
                                                 "larger machine, or convert with --attention local")
    refs = context.references
    with context.progress.stage(f"long input: {clip.seconds:.0f} s through the graphs and "
                                f"{context.model.family.runtime}"):
        return check_long_input(clip, context.model, context.spec, refs.by_clip.get(clip.name),
                                max_symbols=refs.nemo.max_symbols if refs.nemo is not None else None,
                                tolerance=options.encoder_tolerance, threads=options.threads,
                                memory_limit_bytes=memory)


def check_attention(context: Context) -> CheckResult | None:
    """This export against another of the same checkpoint (--compare-with); None when none was given."""
    options = context.options
    if options.compare_with is None:
        return None
    from nemo2sherpa.validate.long_audio import compare_exports

    cpu = context.runs["cpu"] if "cpu" in context.usable else None
    with context.progress.stage(f"compare with {options.compare_with.name}"):
        return compare_exports(context.model, options.compare_with, context.clips, threads=options.threads,
                               feature_dim=context.spec.feat_dim,
                               this_texts={n: e["text"] for n, e in cpu.transcripts.items()} if cpu else None)


Check = Callable[[Context], "CheckResult | None"]

# After the contract, in this order; a check that returns None does not apply to this directory.
CHECKS: tuple[tuple[str, Check], ...] = (
    ("graph_fidelity", check_graph_fidelity),
    ("providers", check_providers_asked),
    ("transcripts", check_transcripts),
    ("speed", check_speed),
    ("streaming", check_streaming),
    ("precision", check_precision),
    ("long_audio", check_long_audio),
    ("attention", check_attention),
)


def validate(options: ValidateOptions, progress: Progress | None = None) -> ValidationOutcome:
    progress = progress or Progress()
    for provider in options.providers:
        if provider not in PROVIDERS:
            raise UserError(f"unknown provider {provider!r}; use cpu, cuda or both (cpu,cuda)")
    if options.compare_with is not None and not options.compare_with.is_dir():
        raise UserError.about(options.compare_with, "--compare-with needs a model directory")
    model = open_model_dir(options.directory, options.variant, options.family)
    report_dir = options.report_dir or model.directory / (report_dir_name(model) + options.report_suffix)
    checks: dict[str, CheckResult] = {}

    with progress.stage(f"check the {model.family.runtime} contract"):
        checks["contract"], spec = check_contract(model)
    sample_rate = model.manifest.model.sample_rate if model.manifest else 16000
    with progress.stage("load audio"):
        clips, audio_source = _clips(options, model, sample_rate)
    if spec is None:
        for name in ("graph_fidelity", "transcripts", "providers", "speed", "long_audio"):
            checks[name] = CheckResult.skipped(name, "the contract check failed")
        if model.variant != "fp32":
            checks["precision"] = CheckResult.skipped("precision", "the contract check failed")
        if options.compare_with is not None:
            checks["attention"] = CheckResult.skipped("attention", "the contract check failed")
    else:
        context = Context(options, model, spec, progress, clips, audio_source)
        progress.note(describe(context.estimate))
        for name, check in CHECKS:
            result = check(context)
            if result is not None:
                checks[name] = result

    record = _assemble(options, model, checks, clips, audio_source)
    report = record.to_dict()
    with progress.stage("write report"):
        write_report(report, report_dir)
    return ValidationOutcome(report=report, report_dir=report_dir, checks=checks)


def report_dir_name(model: ModelDir) -> str:
    """validation/ for the directory's default family; validation-<family>/ for another one (a hybrid converted with
    --decoder both has two models, each validated on its own)."""
    default = model.manifest.default_family if model.manifest is not None else model.family.name
    return "validation" if model.family.name == default else f"validation-{model.family.name}"


def _clips(options: ValidateOptions, model: ModelDir, sample_rate: int) -> tuple[list[Clip], str]:
    if options.audio and options.dataset:
        raise UserError("give --audio or --dataset, not both")
    if options.audio:
        return clips_from_files(options.audio, sample_rate), "files"
    if options.dataset:
        return read_dataset(options.dataset, sample_rate), "dataset"
    recipe = recipe_of(model)
    if recipe is not None and recipe.dataset_path() is not None:
        return read_dataset(recipe.dataset_path(), sample_rate), f"the {recipe.name} test set"
    from nemo2sherpa.validate.testset import synthesized_clips

    return synthesized_clips(sample_rate), "synthesized (espeak-ng)"


def _assemble(options, model: ModelDir, checks: dict[str, CheckResult], clips, audio_source) -> ValidationReport:
    random_weights = bool(model.manifest and model.manifest.random_weights)
    verdict = judge(checks, random_weights=random_weights)
    return ValidationReport(
        tool_version=__version__,
        created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        model_dir=model.directory.resolve().name,
        family=model.family.name,
        variant=model.variant,
        files={**{role: path.name for role, path in model.graphs.items()}, "tokens": model.tokens.name},
        verdict=verdict.verdict, proven=verdict.proven, not_proven=verdict.not_proven,
        providers=list(options.providers),
        thresholds={"encoder_max_abs_diff": options.encoder_tolerance, "min_exact_match": options.min_exact_match,
                    "max_wer_vs_nemo_percent": options.max_wer_vs_nemo,
                    "max_wer_vs_truth_percent": options.max_wer_vs_truth,
                    "min_provider_agreement": options.min_provider_agreement},
        audio={"source": audio_source, "utterances": len(clips),
               "total_seconds": round(sum(c.seconds for c in clips), 2), "with_text": sum(1 for c in clips if c.text)},
        checks={name: CheckRecord.from_dict(check.to_dict(), name) for name, check in checks.items()},
        environment=environment(options.providers),
        model={"source": model.manifest.source if model.manifest else None,
               "facts": model.manifest.model.to_dict() if model.manifest else None},
    )
