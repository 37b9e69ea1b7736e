"""The `nemo2sherpa` command line: parses options, calls one function per command, maps errors to exit codes.

Exit codes: 0 success; 1 refused or broken input, or a failed check (one line on stderr, no traceback);
2 usage error; 3 validate found no fault but could prove nothing (no NeMo reference, random weights);
130 interrupted; 143 terminated. Any other traceback is a bug in nemo2sherpa.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

import click

from nemo2sherpa import __version__
from nemo2sherpa.errors import UserError
from nemo2sherpa.families import BOTH, DEFAULT_LAYOUT, FAMILIES, LAYOUTS, branches
from nemo2sherpa.precision.catalog import PRECISIONS, unknown_precisions


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised like KeyboardInterrupt so every cleanup (staged directories) runs before exiting."""


def _raise_terminated(signum, frame) -> None:  # pragma: no cover - signal handler
    raise Terminated()


def _human_count(value: int | None) -> str:
    if not value:
        return "?"
    if value >= 1_000_000_000:
        return f"{value / 1e9:.1f}B"
    if value >= 1_000_000:
        return f"{value / 1e6:.0f}M"
    return f"{value / 1e3:.0f}K"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="nemo2sherpa")
def cli() -> None:
    """Convert NeMo checkpoints (Parakeet TDT, RNNT, CTC and hybrids) into sherpa-onnx models, prove they transcribe
    like NeMo, and publish them."""


@cli.command(short_help="List the checkpoints nemo2sherpa knows by name.")
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def recipes(as_json: bool) -> int:
    """List the checkpoints nemo2sherpa knows by name."""
    from nemo2sherpa.recipes import load_catalog

    catalog = load_catalog()
    if as_json:
        data = {
            name: {
                "repo_id": r.repo_id, "filename": r.filename, "bundled": r.bundled, "license": r.license,
                "languages": list(r.languages), "params": r.params, "description": r.description,
                "architecture": r.architecture.to_dict(), "unverified": list(r.unverified),
            }
            for name, r in catalog.items()
        }
        click.echo(json.dumps(data, indent=2))
        return 0
    header = ("recipe", "source", "params", "languages", "mels", "vocab", "decoder", "licence")
    rows = [header]
    for name, r in catalog.items():
        a = r.architecture
        heads = [("TDT" if a.durations else "RNNT")] if a.pred_hidden is not None else []
        kind = "+".join(heads + (["CTC"] if a.has_ctc_head else [])) + (", streaming" if a.is_cache_aware else "")
        licence = r.license.split(":")[1] if r.license.startswith("other:") else r.license  # the name, not the URL
        rows.append((name, r.repo_id or "bundled with nemo2sherpa", _human_count(r.params),
                     _languages(r.languages), str(a.mels),
                     str(a.vocab_size), kind, licence))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            click.echo("  ".join("-" * width for width in widths))
    return 0


def _languages(codes: Sequence[str]) -> str:
    """A few language codes spelled out, many counted (`recipes --json` lists them all)."""
    if not codes:
        return "?"
    return ",".join(codes) if len(codes) <= 4 else f"{len(codes)} languages"


def _precision_list(value: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(p.strip().lower() for p in value.split(",") if p.strip()))
    unknown = unknown_precisions(chosen)
    if unknown or not chosen:
        raise click.BadParameter(f"unknown precision {', '.join(unknown) or '(none)'}; use {', '.join(PRECISIONS)}")
    return chosen


def _precisions(value: str) -> tuple[str, ...]:
    return ("fp32", *[p for p in _precision_list(value) if p != "fp32"])


def _context(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        left, right = (int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("two integers, left,right (e.g. 128,128)") from None
    from nemo2sherpa.convert.export.local_attention import context_problem  # no torch: the rule only

    problem = context_problem(left, right)
    if problem:
        raise click.BadParameter(problem)
    return left, right


@cli.command(short_help="Convert a recipe, Hugging Face repo or .nemo file into a model directory.")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="The model directory to create.")
@click.option("--revision", help="Hugging Face branch, tag or commit (Hugging Face sources only).")
@click.option("--random-weights", is_flag=True,
              help="Build the recipe's architecture with random weights, offline (benchmarks, tests).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (only once the new one is complete).")
@click.option("--external-data-above", "external_threshold", type=click.IntRange(min=0), default=None,
              metavar="BYTES", help="Put a graph's weights into one external .weights file when they exceed BYTES "
                                    "[default: 2000000000, under protobuf's 2 GiB limit].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-weights.")
@click.option("--precision", "precisions", default="fp32", show_default=True, metavar="LIST",
              callback=lambda c, p, v: _precisions(v),
              help="Comma-separated precisions to write: fp32 (always written, the reference), int8 (block-wise "
                   "weight-only, CPU and CUDA), int8-dynamic (sherpa-onnx's historical int8, CPU only), fp16 "
                   "(CUDA). See docs/precision.md.")
@click.option("--attention", type=click.Choice(["full", "local"]), default=None,
              help="Export with this attention instead of the checkpoint's (local: long-form audio).")
@click.option("--context", default=None, metavar="L,R", callback=lambda c, p, v: _context(v),
              help="Left,right attention context in encoder frames for --attention local (e.g. 128,128).")
@click.option("--lookahead", type=click.IntRange(min=0), default=None, metavar="FRAMES",
              help="A cache-aware streaming model's look-ahead in encoder frames (80 ms each), among those it was "
                   "trained with [default: its own default]: more look-ahead, more accuracy and latency.")
@click.option("--no-optimize", is_flag=True, help="Write the encoder graph as exported, without optimisation.")
@click.option("--decoder", type=click.Choice([*branches(), BOTH]), default=None,
              help="Which decoder to export: a hybrid TDT/RNNT-CTC model's transducer (its default), its CTC "
                   "branch, or both into one directory; a CTC model has only ctc. A cache-aware streaming model "
                   "gets streaming-transducer (its default) or streaming-ctc; transducer or ctc convert it for "
                   "offline use.")
@click.option("--layout", type=click.Choice(list(LAYOUTS)), default=DEFAULT_LAYOUT, show_default=True,
              help="Which runtime's directory to write: sherpa-onnx's (encoder.onnx, decoder.onnx, joiner.onnx or "
                   "model.onnx, tokens.txt), or onnx-asr's (encoder-model.onnx and decoder_joint-model.onnx, or "
                   "model.onnx; vocab.txt, config.json), which validate and publish do not run yet.")
@click.option("--license", "licence", metavar="ID",
              help="The checkpoint's licence, recorded for publish: a Hub licence id (cc-by-4.0, apache-2.0, ...) or "
                   "'other:NAME:URL' [default: the recipe's, none for a local file].")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def convert(source: str, output: Path, revision: str | None, random_weights: bool, overwrite: bool,
            external_threshold: int | None, seed: int, precisions: tuple[str, ...], attention: str | None,
            context: tuple[int, int] | None, lookahead: int | None, no_optimize: bool, decoder: str | None,
            layout: str, licence: str | None, quiet: bool) -> int:
    """Convert SOURCE into a sherpa-onnx model directory (or, with --layout onnx-asr, an onnx-asr one).

    SOURCE is a recipe name (see `nemo2sherpa recipes`), a Hugging Face repo id (owner/name) or a local .nemo file.
    """
    from nemo2sherpa.convert import ConvertOptions
    from nemo2sherpa.convert import convert as run_convert
    from nemo2sherpa.convert.export.encoder_prep import AttentionRequest
    from nemo2sherpa.graphs.writing import DEFAULT_EXTERNAL_THRESHOLD
    from nemo2sherpa.progress import Progress

    options = ConvertOptions(
        source=source, output=output, revision=revision, random_weights=random_weights, overwrite=overwrite,
        external_threshold=DEFAULT_EXTERNAL_THRESHOLD if external_threshold is None else external_threshold,
        seed=seed, precisions=precisions,
        attention=AttentionRequest(attention=attention, context=context, lookahead=lookahead),
        optimize=not no_optimize, decoder=decoder, license=licence, layout=layout,
    )
    result = run_convert(options, Progress(enabled=not quiet))
    click.echo(str(result.output))
    return 0


def _providers(value: str) -> tuple[str, ...]:
    providers = tuple(p.strip().lower() for p in value.split(",") if p.strip())
    unknown = [p for p in providers if p not in ("cpu", "cuda")]
    if not providers or unknown:
        raise click.BadParameter("use cpu, cuda or cpu,cuda")
    return tuple(dict.fromkeys(providers))


def _lengths(value: str) -> tuple[float, ...]:
    try:
        lengths = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("a comma-separated list of seconds, e.g. 2,5,10,30,60") from None
    if not lengths or any(v <= 0 for v in lengths):
        raise click.BadParameter("lengths must be positive seconds")
    return tuple(sorted(set(lengths)))


@cli.command(short_help="Prove a model directory transcribes like its NeMo checkpoint (CPU, CUDA).")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("more_audio", nargs=-1, type=click.Path(path_type=Path), metavar="")
@click.option("--provider", "providers", default="cpu", show_default=True, callback=lambda c, p, v: _providers(v),
              help="Where sherpa-onnx runs: cpu, cuda or cpu,cuda (CUDA is verified, never assumed).")
@click.option("--nemo", "nemo", type=click.Path(path_type=Path),
              help="The .nemo checkpoint (default: the manifest's source when it is cached or bundled).")
@click.option("--audio", "audio", type=click.Path(path_type=Path), multiple=True,
              help="Audio files to validate on (any sample rate and channel count): --audio a.wav b.flac, "
                   "--audio clips/*.wav, or --audio repeated.")
@click.option("--dataset", type=click.Path(path_type=Path),
              help="JSONL with one {\"audio\": path, \"text\": optional} per line.")
@click.option("--report-dir", type=click.Path(path_type=Path), help="Where to write the report [DIR/validation].")
@click.option("--precision", "variants", default=None, metavar="LIST",
              callback=lambda c, p, v: _variants(v),
              help="Comma-separated variants to validate, each against fp32 [fp32]; the first one's report goes to "
                   "DIR/validation/, the others' to DIR/validation-<variant>/.")
@click.option("--decoder", "family", type=click.Choice(list(FAMILIES)), default=None,
              help="Which model of the directory: a hybrid converted with --decoder both has a transducer and a ctc "
                   "model [default: its first]; the report goes to validation/ or validation-<decoder>/.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads for sherpa-onnx, onnxruntime and NeMo (the speed figures are per this count).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed decodes per length (median reported, after one warm-up).")
@click.option("--speed-lengths", default="2,5,10,30,60,120", show_default=True,
              callback=lambda c, p, v: _lengths(v), help="Audio lengths (s) for the speed check.")
@click.option("--no-speed", is_flag=True, help="Skip the speed check.")
@click.option("--no-nemo", is_flag=True, help="Never load NeMo (use cached references only).")
@click.option("--max-encoder-diff", type=float, default=1e-3, show_default=True,
              help="Graph fidelity: max abs difference of encoder outputs.")
@click.option("--min-exact-match", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="Transcripts: minimum share of utterances where sherpa-onnx equals NeMo (differences that "
                   "sherpa-onnx's front end is proven to cause are not counted; --max-front-end-cost judges them).")
@click.option("--max-wer-vs-nemo", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Transcripts: maximum WER (%) between sherpa-onnx and NeMo.")
@click.option("--max-wer-vs-truth", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Transcripts, when there is no NeMo reference: maximum WER (%) against the reference texts.")
@click.option("--max-front-end-cost", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Transcripts: maximum WER points against the reference texts that sherpa-onnx's own front end "
                   "may add to NeMo's.")
@click.option("--min-provider-agreement", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Providers: minimum share of identical CPU and CUDA transcripts.")
@click.option("--no-long-audio", is_flag=True,
              help="Skip the input beyond 400 s that is checked whenever the manifest claims to support one.")
@click.option("--compare-with", type=click.Path(path_type=Path), metavar="OTHER_DIR",
              help="Another export of the same checkpoint (e.g. full attention): report WER of this one against it.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def validate(directory: Path, more_audio: tuple[Path, ...], providers: tuple[str, ...], nemo: Path | None,
             audio: tuple[Path, ...], dataset: Path | None, report_dir: Path | None, variants: tuple[str | None, ...],
             family: str | None, threads: int,
             repeats: int,
             speed_lengths: tuple[float, ...], no_speed: bool, no_nemo: bool, max_encoder_diff: float,
             min_exact_match: float, max_wer_vs_nemo: float, max_wer_vs_truth: float, max_front_end_cost: float,
             min_provider_agreement: float, no_long_audio: bool, compare_with: Path | None, quiet: bool) -> int:
    """Prove that a sherpa-onnx model directory transcribes like its NeMo checkpoint.

    Exit 0 when it does (PASSED), 1 when a check failed (FAILED), 3 when nothing failed but nothing could be compared
    with NeMo either (UNPROVEN: no checkpoint or cached reference, or random weights).

    Checks, in order: the sherpa-onnx contract; graph fidelity against NeMo; transcripts through sherpa-onnx; the
    providers asked for; speed by audio length; an input beyond 400 s when the manifest claims one; a precision
    variant against fp32; another export (--compare-with). Works on any sherpa-onnx NeMo transducer or CTC directory,
    with or without a manifest. The longest steps are speed (--no-speed, or fewer --speed-lengths) and the long input
    (--no-long-audio).
    """
    from nemo2sherpa.progress import Progress
    from nemo2sherpa.validate.pipeline import ValidateOptions
    from nemo2sherpa.validate.pipeline import validate as run_validate

    if more_audio and not audio:
        raise click.UsageError(f"unexpected argument {more_audio[0]}: validate takes one DIRECTORY (audio files go "
                               "after --audio)")
    audio = (*audio, *more_audio)  # --audio a.wav b.flac: a shell glob expands into several words

    outcomes = []
    for index, variant in enumerate(variants):
        later = index > 0 and variant is not None
        options = ValidateOptions(
            directory=directory, nemo=nemo, audio=audio, dataset=dataset, providers=providers,
            report_dir=report_dir / variant if later and report_dir is not None else report_dir,
            report_suffix=f"-{variant}" if later else "",
            variant=variant, family=family, threads=threads, repeats=repeats, speed_lengths=speed_lengths,
            measure_speed=not no_speed,
            use_nemo=not no_nemo, encoder_tolerance=max_encoder_diff, min_exact_match=min_exact_match,
            max_wer_vs_nemo=max_wer_vs_nemo, max_wer_vs_truth=max_wer_vs_truth,
            max_front_end_cost=max_front_end_cost, min_provider_agreement=min_provider_agreement,
            long_audio=not no_long_audio, compare_with=compare_with,
        )
        outcome = run_validate(options, Progress(enabled=not quiet))
        outcomes.append(outcome)
        for name, check in outcome.checks.items():
            detail = "; ".join(check.problems) if check.problems else (check.reason or "")
            click.echo(f"{name:15} {check.status:8} {detail}".rstrip())
        for item in outcome.report.get("not_proven") or []:
            click.echo(f"not proven: {item}")
        click.echo(f"{outcome.verdict.upper()}: {outcome.report_dir / 'report.md'}")
    codes = [outcome.exit_code for outcome in outcomes]
    return 1 if 1 in codes else max(codes)  # failed before unproven (3) before passed (0)


def _variants(value: str | None) -> tuple[str | None, ...]:
    if value is None:
        return (None,)
    return _precision_list(value)


@cli.command(short_help="Transcribe audio files (or a typed sentence, spoken by espeak-ng) with a model directory.")
@click.argument("directory", type=click.Path(path_type=Path), metavar="DIR")
@click.argument("audio", nargs=-1, type=click.Path(path_type=Path), metavar="[AUDIO]...")
@click.option("--say", "say", multiple=True, metavar="TEXT",
              help="A sentence for espeak-ng to speak (en-us) and the model to transcribe; repeatable.")
@click.option("--provider", type=click.Choice(("cpu", "cuda")), default="cpu", show_default=True)
@click.option("--precision", "variant", type=click.Choice(PRECISIONS), default=None,
              help="Which of the directory's precision variants to run [default: float32].")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
def transcribe(directory: Path, audio: tuple[Path, ...], say: tuple[str, ...], provider: str,
               variant: str | None, threads: int) -> int:
    """Print sherpa-onnx's transcript of each AUDIO file and each --say sentence, decoded with the model directory
    DIR the way its users run it."""
    from nemo2sherpa.transcribe import transcribe as run_transcribe

    if not audio and not say:
        raise click.UsageError("give audio files, or a sentence with --say")
    for result in run_transcribe(directory, audio, say, provider=provider, threads=threads, variant=variant):
        click.echo(f"{result.name} ({result.seconds:.1f} s): {result.text}")
    return 0


@cli.command(short_help="Publish a validated model directory to Hugging Face, with its model card.")
@click.argument("directory", type=click.Path(path_type=Path), metavar="DIR")
@click.option("--repo-id", required=True, help="The Hugging Face model repository to publish to (owner/name); "
                                               "the card names it, so a dry run needs it too.")
@click.option("--private", is_flag=True, help="Create the repository private (an existing public one is refused).")
@click.option("--revision", default="main", show_default=True, help="Branch to commit to (created when missing).")
@click.option("--dry-run", "dry_run", type=click.Path(path_type=Path), metavar="STAGING",
              help="Write exactly what would be uploaded into STAGING (new or empty) instead; no network.")
@click.option("--force", is_flag=True,
              help="Publish without a passing validation report; the model card says so plainly.")
@click.option("--report", type=click.Path(path_type=Path), metavar="PATH",
              help="The validation report to publish [default: DIR/validation/report.json].")
@click.option("--commit-message", help="The commit's summary line [default: names the source and the verdict].")
@click.option("--license", "licence", metavar="ID",
              help="The licence for the card's metadata: a Hub licence id or 'other:NAME:URL' [default: what convert "
                   "recorded, else the recipe's]; required when neither knows one.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines or upload progress bars.")
def publish(directory: Path, repo_id: str, private: bool, revision: str, dry_run: Path | None, force: bool,
            report: Path | None, commit_message: str | None, licence: str | None, quiet: bool) -> int:
    """Publish the validated model directory DIR to Hugging Face, with a model card that carries its validation.

    The token comes from HF_TOKEN or `hf auth login`. Refused: directories without manifest.json, with random
    weights, whose files no longer match their manifest, or without a passing validation report (unless --force).
    """
    from nemo2sherpa.progress import Progress
    from nemo2sherpa.publish import PublishOptions
    from nemo2sherpa.publish import publish as run_publish

    options = PublishOptions(directory=directory, repo_id=repo_id, private=private, revision=revision,
                             dry_run=dry_run, force=force, report=report, commit_message=commit_message,
                             license=licence, quiet=quiet)
    result = run_publish(options, Progress(enabled=not quiet))
    click.echo(result.location)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line and exit with its code (what tests call)."""
    sys.exit(_run(argv))


def _run(argv: Sequence[str] | None) -> int:
    """Run the command line; returns the exit code, with every user error, interruption and usage error said in
    one line."""
    # Before torch loads OpenMP: spinning worker threads made small matrix products 10x slower on shared 2-core VMs
    # (measured: 16 ms vs 1.4 ms for 64x512x2048); passive waiting costs nothing measurable on dedicated cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # NeMo's telemetry library warns twice whenever NeMo is imported ("OneLogger: ...", "No exporters were
    # provided ..."), about telemetry nemo2sherpa never enables: not a line a user can act on
    logging.getLogger("nv_one_logger").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _raise_terminated)
    if hasattr(signal, "SIGHUP"):  # a closed terminal or ssh session: clean up like SIGTERM
        signal.signal(signal.SIGHUP, _raise_terminated)
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="nemo2sherpa",
                        standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C inside a command into Abort; the staged output was cleaned up all the same
        interrupted = isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt)
        click.echo("nemo2sherpa: interrupted; nothing was left half-written" if interrupted else "nemo2sherpa: aborted",
                   err=True)
        code = 130
    except UserError as exc:
        click.echo(f"nemo2sherpa: error: {exc}", err=True)
        code = 1
    except KeyboardInterrupt:
        click.echo("nemo2sherpa: interrupted; nothing was left half-written", err=True)
        code = 130
    except Terminated:
        click.echo("nemo2sherpa: terminated; nothing was left half-written", err=True)
        code = 143
    return code if isinstance(code, int) else 0


def console_main() -> None:
    """The `nemo2sherpa` program (console script and `python -m`): main(), then out without the interpreter's
    teardown. With NeMo and torch imported, that teardown takes 1.7 s (measured) and releases nothing a finished
    process needs released; everything the command wrote is closed or renamed into place before the command
    returns, and the standard streams are flushed here. Tests call main() itself."""
    try:
        code = _run(None)
    except SystemExit as exc:  # a sys.exit() inside a command, outside click's handling
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (`| head`) or a closed stream
            pass
    os._exit(code)
