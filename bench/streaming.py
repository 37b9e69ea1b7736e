"""Streaming latency per look-ahead: a cache-aware recipe converted once per look-ahead, then sherpa-onnx's online
recognizer fed speech-like audio in 100 ms pieces, as a microphone delivers it.

    python bench/streaming.py nemotron-speech-streaming-en-0.6b --lookaheads 13,1 --seconds 20 --threads 2
    python bench/streaming.py tiny-streaming-en --lookaheads 3,1 --trained

Per look-ahead: conversion wall time and peak RSS (bench/measure.py around `nemo2sherpa convert`), the chunk, the
compute per chunk (mean and max), RTFx, and, for a trained model (--trained: the recipe's own checkpoint instead of
random weights), how long after its audio each token was shown. Random weights emit arbitrary tokens, so their
token delays say nothing and are left out; their compute per chunk and RTFx are what the architecture costs.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from convert import measured  # noqa: E402


def test_audio(recipe, seconds: float, trained: bool):
    """The recipe's own clips joined with 0.3 s pauses for a trained model (its token delays mean something), a
    speech-like signal for random weights."""
    import numpy as np

    if trained and recipe.dataset_path() is not None:
        from nemo2sherpa.validate.audio import read_dataset

        pieces, total = [], 0
        for clip in read_dataset(recipe.dataset_path(), 16000):
            pieces += [clip.audio, np.zeros(4800, dtype=np.float32)]
            total += clip.audio.size + 4800
            if total >= seconds * 16000:
                break
        return np.concatenate(pieces)
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import speechlike_signal

    return speechlike_signal(seconds)


def stream_figures(directory: Path, audio, threads: int) -> dict:
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_runner import make_recognizer

    recognizer = make_recognizer(open_model_dir(directory), threads=threads)
    recognizer.transcribe(audio[:16000], 16000)  # warm-up
    result = recognizer.transcribe(audio, 16000)
    return {**recognizer.latency, "tokens": len(result.tokens)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--lookaheads", default=None, help="comma-separated look-aheads [default: the recipe's]")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trained", action="store_true", help="the recipe's own checkpoint (a bundled one)")
    parser.add_argument("--workdir", type=Path, default=Path("work/bench-streaming"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from nemo2sherpa.recipes import get_recipe

    recipe = get_recipe(args.recipe)
    lookaheads = [int(v) for v in args.lookaheads.split(",")] if args.lookaheads else \
        list(recipe.architecture.lookaheads or ())
    nemo2sherpa = str(Path(sys.executable).with_name("nemo2sherpa"))
    audio = test_audio(recipe, args.seconds, args.trained)
    rows = []
    for lookahead in lookaheads:
        out = args.workdir / f"{args.recipe}-la{lookahead}"
        shutil.rmtree(out, ignore_errors=True)
        command = [nemo2sherpa, "convert", args.recipe, "-o", str(out), "--lookahead", str(lookahead), "-q"]
        if not args.trained:
            command.append("--random-weights")
        print(f"[{args.recipe}] look-ahead {lookahead}: convert ...", file=sys.stderr, flush=True)
        conversion = measured(command)
        manifest = json.loads((out / "manifest.json").read_text())
        figures = stream_figures(out, audio, args.threads)
        if not args.trained:
            for key in ("first_token_latency_s", "final_token_latency_s", "mean_token_latency_s"):
                figures.pop(key, None)
        rows.append({"lookahead": lookahead, **manifest["export"]["streaming"],
                     "convert_wall_s": conversion.get("wall_s"), "convert_peak_rss_gb": conversion.get("peak_rss_gb"),
                     **figures})
        shutil.rmtree(out, ignore_errors=True)
    print(f"\nmachine: {platform.machine()}, {platform.processor() or '?'}; {args.threads} threads; "
          f"{audio.size / 16000:.1f} s of audio fed in 100 ms pieces")
    print(f"{'look-ahead':>10} {'chunk ms':>9} {'convert s':>10} {'peak GB':>8} {'compute/chunk ms':>17} "
          f"{'max ms':>8} {'RTFx':>7} {'mean token delay s':>19}")
    for r in rows:
        print(f"{r['lookahead']:>10} {r['chunk_ms']:>9g} {r['convert_wall_s']:>10.1f} {r['convert_peak_rss_gb']:>8.2f} "
              f"{r['chunk_compute_ms_mean']:>17.1f} {r['chunk_compute_ms_max']:>8.1f} {r['rtfx']:>7.1f} "
              f"{r.get('mean_token_latency_s', '-')!s:>19}")
    if args.json:
        args.json.write_text(json.dumps({"recipe": args.recipe, "threads": args.threads, "seconds": args.seconds,
                                         "trained": args.trained, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
