"""Long audio on CPU: time and peak memory by input length, local against full attention.

For each model: convert it (a recipe with --random-weights, a bundled fixture, or a .nemo; once, cached in the
workdir) as a local-attention export (--attention local --context L,R, or as trained) and as the full-attention
export, then decode each length in a fresh child process (timed; peak RSS: the child's VmHWM; an address-space
limit so a runaway allocation cannot take the machine down):

- local attention: every length in --minutes (default 1, 5, 10, 20, 30, 60);
- full attention: --full-seconds lengths in order until one fails or exceeds --memory-limit-gb; a quadratic
  a + b*T + c*T^2 fitted to the measured peaks then gives the longest input per RAM budget (EXTRAPOLATED, labelled).

Trained models (the fixtures) are decoded by sherpa-onnx itself on the fixture's utterances, concatenated.
Random-weight models emit arbitrary tokens, whose greedy search says nothing about a real model: for them only the
encoder graph runs (onnxruntime, sherpa-onnx's features replaced by random ones of the same size). The encoder is
what grows with the length; a trained model's greedy search adds about one joiner call per frame.

Heavy: run it under the shared lock, e.g.
  python bench/long_audio.py tiny-tdt-local-en parakeet-tdt_ctc-110m
Usage: python bench/long_audio.py MODEL [MODEL ...] [--context 128,128] [--minutes 1,5,10,20,30,60]
       [--full-seconds 60,120,240,450,900] [--memory-limit-gb 20] [--threads 2] [--workdir work/bench-long]
       [--json out.json]
MODEL: a recipe name (random weights unless it is a bundled fixture) or a path to a .nemo.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nemo2sherpa.validate.environment import cpu_name

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
RAM_BUDGETS_GB = (8, 16, 24, 32, 64, 128)


def _convert(source: str, output: Path, attention: str | None, context: str | None, random_weights: bool,
             memory_limit_gb: float) -> Path:
    if (output / "manifest.json").exists():
        return output
    command = [sys.executable, "-m", "nemo2sherpa", "convert", source, "-o", str(output), "-q"]
    if random_weights:
        command.append("--random-weights")
    if attention:
        command += ["--attention", attention]
    if context:
        command += ["--context", context]
    limit = int(memory_limit_gb * 2**30)
    started = time.perf_counter()
    subprocess.run(["prlimit", f"--as={limit}", "--", *command], check=True)
    print(f"  converted {source} -> {output.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return output


def _model_source(name: str) -> tuple[str, bool, Path | None]:
    """(convert source, random weights?, fixture directory with dataset.jsonl or None)."""
    from nemo2sherpa.recipes import find_recipe

    path = Path(name)
    if path.suffix == ".nemo" and path.exists():
        fixture = path.parent if (path.parent / "dataset.jsonl").exists() else None
        return str(path), False, fixture
    fixtures = Path(__import__("nemo2sherpa").__file__).parent / "fixtures"
    if (fixtures / name / "model.nemo").exists():
        return str(fixtures / name / "model.nemo"), False, fixtures / name
    recipe = find_recipe(name)
    if recipe is None:
        raise SystemExit(f"{name}: not a recipe, a bundled fixture or a .nemo file")
    bundled = recipe.bundled_path() if hasattr(recipe, "bundled_path") else None
    if bundled:
        return str(bundled), False, Path(bundled).parent
    return name, True, None


def _audio(fixture: Path | None, seconds: float, sample_rate: int = 16000) -> np.ndarray:
    if fixture is None:  # encoder-only runs make their own features; this only sets the length
        return np.zeros(int(seconds * sample_rate), dtype=np.float32)
    from nemo2sherpa.validate.audio import read_dataset

    clips = read_dataset(fixture / "dataset.jsonl", sample_rate)
    pause = np.zeros(int(0.3 * sample_rate), dtype=np.float32)
    one = np.concatenate([x for c in clips for x in (c.audio, pause)])
    needed = int(seconds * sample_rate)
    return np.tile(one, needed // one.size + 1)[:needed]


def _run(directory: Path, audio: np.ndarray, encoder_only: bool, threads: int, limit_gb: float) -> dict:
    from nemo2sherpa.manifest import read_manifest
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_child import decode_in_child

    mels = read_manifest(directory).model.architecture.mels or 80
    result = decode_in_child(open_model_dir(directory), audio, 16000, threads=threads, feature_dim=int(mels),
                             memory_limit_bytes=int(limit_gb * 2**30), encoder_only=encoder_only)
    seconds = len(audio) / 16000
    row = {"seconds": round(seconds, 1), "ok": result.ok, "decode_seconds": result.decode_seconds,
           "load_seconds": result.load_seconds,
           "peak_rss_gb": None if result.peak_rss_bytes is None else round(result.peak_rss_bytes / 1e9, 3)}
    if result.ok and result.decode_seconds:
        row["decode_seconds_per_minute"] = round(result.decode_seconds / (seconds / 60), 3)
        row["rtfx"] = round(seconds / result.decode_seconds, 1)
    if not result.ok:
        row["error"] = (result.error or "")[:300]
    if result.text:
        row["words"] = len(result.text.split())
    return row


def fit_quadratic(rows: list[dict]) -> dict | None:
    """peak RSS (GB) = a + b*s + c*s^2 over the measured lengths s (seconds); the longest s per RAM budget."""
    points = [(r["seconds"], r["peak_rss_gb"]) for r in rows if r["ok"] and r["peak_rss_gb"]]
    if len(points) < 3:
        return None
    s = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    c, b, a = np.polyfit(s, y, 2)
    longest = {}
    for budget in RAM_BUDGETS_GB:
        roots = np.roots([c, b, a - budget])
        real = [float(r.real) for r in roots if abs(r.imag) < 1e-9 and r.real > 0]
        longest[f"{budget}"] = round(min(real), 0) if real else None
    return {"a_gb": round(float(a), 4), "b_gb_per_s": float(b), "c_gb_per_s2": float(c),
            "longest_seconds_by_ram_gb": longest, "fitted_on_seconds": [p[0] for p in points]}


def bench_model(name: str, args) -> dict:
    source, random_weights, fixture = _model_source(name)
    slug = Path(name).stem if name.endswith(".nemo") else name
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    encoder_only = random_weights
    print(f"{name}: {'random weights, encoder graph only' if encoder_only else 'sherpa-onnx decode'}", flush=True)
    out: dict = {"model": name, "random_weights": random_weights, "measured": "encoder graph (onnxruntime)"
                 if encoder_only else "sherpa-onnx decode (features, encoder, greedy search)"}

    local = _convert(source, workdir / f"{slug}-local", "local" if args.context or random_weights else None,
                     args.context if args.context else ("128,128" if random_weights else None), random_weights,
                     args.memory_limit_gb)
    from nemo2sherpa.manifest import read_manifest

    attention = read_manifest(local).export.get("attention", {})
    if attention.get("kind") != "local":  # a full-attention checkpoint without --context: use NeMo's suggestion
        local = _convert(source, workdir / f"{slug}-local-128", "local", "128,128", random_weights,
                         args.memory_limit_gb)
        attention = read_manifest(local).export["attention"]
    out["local"] = {"context": attention.get("context"), "rows": []}
    for minutes in args.minutes:
        row = _run(local, _audio(fixture, minutes * 60), encoder_only, args.threads, args.memory_limit_gb)
        out["local"]["rows"].append(row)
        print(f"  local {attention.get('context')} {minutes:g} min: {row}", flush=True)

    if args.no_full:
        return out
    full_source_attention = "full"
    full = _convert(source, workdir / f"{slug}-full", full_source_attention, None, random_weights,
                    args.memory_limit_gb)
    out["full"] = {"rows": []}
    for seconds in args.full_seconds:
        row = _run(full, _audio(fixture, seconds), encoder_only, args.threads, args.memory_limit_gb)
        out["full"]["rows"].append(row)
        print(f"  full {seconds:g} s: {row}", flush=True)
        if not row["ok"] or (row["peak_rss_gb"] or 0) > 0.8 * args.memory_limit_gb:
            break
    out["full"]["fit"] = fit_quadratic(out["full"]["rows"])
    print(f"  full attention memory fit (extrapolated): {out['full']['fit']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--context", default=None, help="L,R for the local-attention export (default: as trained "
                                                        "for local checkpoints, 128,128 otherwise)")
    parser.add_argument("--minutes", default="1,5,10,20,30,60")
    parser.add_argument("--full-seconds", default="60,120,240,450,900")
    parser.add_argument("--no-full", action="store_true")
    parser.add_argument("--memory-limit-gb", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default="work/bench-long")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    args.minutes = [float(m) for m in args.minutes.split(",") if m]
    args.full_seconds = [float(s) for s in args.full_seconds.split(",") if s]
    results = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
               "memory_limit_gb": args.memory_limit_gb, "platform": platform.platform(),
               "models": [bench_model(m, args) for m in args.models]}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
