"""Benchmark the encoder graph as sherpa-onnx runs it: the plain export against nemo2sherpa's, same weights.

In one run, for a recipe's architecture with random weights (parakeet-tdt-1.1b by default):
1. setup (not timed, reused when present): the random-weight checkpoint (.nemo), the plain export
   (bench/plain_export.py: NeMo's restore_from + each module's .export()), and nemo2sherpa's conversions with and
   without the encoder optimisation (`--no-optimize`), each timed with its peak RSS (bench/measure.py);
2. the plain encoder is given the same sherpa-onnx metadata, decoder, joiner and tokens as ours, so the three
   directories differ in the encoder graph only;
3. encoder parity: each encoder run by onnxruntime on the same random features (--seconds of audio), outputs
   compared with the unoptimised graph (max abs), plus the encoder's own time (--decodes runs after a warm-up);
4. sherpa-onnx CPU decode of --seconds of espeak-ng speech: --repeats rounds, each directory in a fresh process per
   round (load timed, one warm-up decode that also gives the transcript, then --decodes timed decodes), the order
   alternating between rounds to spread drift; transcripts must be identical token for token.

With --profile, onnxruntime's profiler then shows where each encoder's time goes (by layer part and op); with
--each-rewrite RUNS (models under 2 GB), the encoder is written with each subset of the rewrites and the variants
are timed by onnxruntime in one process, alternating.

Prints a table (median and minimum of all timed decodes, median load) and writes the results as JSON. On a shared
machine other work only ever adds time: each timed process first waits (--idle-wait, up to 120 s) for the CPUs to
be idle, the minimum is the steadier figure, and the load average is printed with it.

Heavy for the 1.1B model (three 4.3 GB exports on disk, up to ~9 GB of RAM while exporting): run it under the
shared lock, e.g.
  python bench/encoder_speed.py parakeet-tdt-1.1b --workdir work/bench-speed
Usage: python bench/encoder_speed.py [RECIPE] [--checkpoint X.nemo [--plain ITS_PLAIN_EXPORT]] [--workdir DIR]
       [--seconds 30] [--repeats 5] [--decodes 3] [--threads 2] [--idle-wait 120] [--fresh] [--profile]
       [--each-rewrite RUNS] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from convert import build_random_checkpoint, measured  # bench/convert.py

MODELS = ("plain", "ours --no-optimize", "ours")
TEXT = ("The quick brown fox jumps over the lazy dog. Speech recognition turns spoken words into text. "
        "Sherpa runs neural network models on the central processing unit, without a network connection. ")
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp")


def convert_ours(checkpoint: Path, out: Path, optimize: bool, fresh: bool) -> dict:
    if (out / "manifest.json").exists() and not fresh:
        return {"reused": True}
    nemo2sherpa = str(Path(sys.executable).with_name("nemo2sherpa"))
    command = [nemo2sherpa, "convert", str(checkpoint), "-o", str(out), "--overwrite", "-q"]
    if not optimize:
        command.append("--no-optimize")
    result = measured(command)
    if result.get("returncode"):
        raise SystemExit(f"conversion failed: {result}")
    return result


def export_plain(checkpoint: Path, out: Path, fresh: bool) -> dict:
    if (out / "encoder.onnx").exists() and not fresh:
        return {"reused": True}
    shutil.rmtree(out, ignore_errors=True)
    result = measured([sys.executable, str(HERE / "plain_export.py"), str(checkpoint), str(out)])
    if result.get("returncode"):
        raise SystemExit(f"plain export failed: {result}")
    return result


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)  # sherpa-onnx refuses external data behind a symbolic link
    except OSError:
        shutil.copy2(source, target)


def plain_for_sherpa(plain: Path, ours: Path, out: Path) -> Path:
    """The plain encoder with our metadata, next to our decoder, joiner and tokens."""
    import onnx

    out.mkdir(parents=True, exist_ok=True)
    encoder = onnx.load(str(plain / "encoder.onnx"), load_external_data=False)
    reference = onnx.load(str(ours / "encoder.onnx"), load_external_data=False)
    del encoder.metadata_props[:]
    encoder.metadata_props.extend(reference.metadata_props)
    onnx.save(encoder, str(out / "encoder.onnx"))
    for name in os.listdir(plain):
        if name not in ("encoder.onnx", "decoder.onnx", "joiner.onnx"):
            _link_or_copy(plain / name, out / name)
    for name in ("decoder.onnx", "joiner.onnx", "tokens.txt"):
        _link_or_copy(ours / name, out / name)
    return out


def speech(seconds: float, path: Path) -> np.ndarray:
    """espeak-ng speech (nemo2sherpa.validate.synth), voices and speeds varied, concatenated to `seconds`."""
    from nemo2sherpa.validate.synth import synthesize, write_wav

    if path.exists():
        import soundfile as sf

        audio, _ = sf.read(str(path), dtype="float32")
        if len(audio) == int(seconds * 16000):
            return audio
    parts, total, index = [], 0, 0
    while total < seconds * 16000:
        part = synthesize(TEXT, voice=VOICES[index % len(VOICES)], speed_wpm=150 + 10 * (index % 3))
        parts += [part, np.zeros(4000, np.float32)]
        total += len(part) + 4000
        index += 1
    audio = np.concatenate(parts)[: int(seconds * 16000)]
    write_wav(path, audio)
    return audio


def encoder_parity(directories: dict[str, Path], seconds: float, threads: int, runs: int,
                   idle_wait_s: float) -> dict[str, dict]:
    """Each encoder on the same random features, one at a time: time, and max |diff| against the unoptimised one."""
    code = r"""
import json, sys, time, numpy as np, onnxruntime as ort
path, frames, threads, out, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
options = ort.SessionOptions(); options.intra_op_num_threads = threads; options.log_severity_level = 3
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
mels = session.get_inputs()[0].shape[1]
x = np.random.default_rng(0).standard_normal((1, mels, frames)).astype(np.float32)
feed = {session.get_inputs()[0].name: x, session.get_inputs()[1].name: np.array([frames], np.int64)}
session.run(None, feed)
times = []
for _ in range(runs):
    start = time.perf_counter(); outputs = session.run(None, feed); times.append(time.perf_counter() - start)
np.save(out, outputs[0])
print(json.dumps({"encoder_s": times}))
"""
    frames = int(seconds * 100)
    results, outputs = {}, {}
    scratch = next(iter(directories.values())).parent
    for name, directory in directories.items():
        target = scratch / f"encoder-out-{name.replace(' ', '_')}.npy"
        if idle_wait_s:
            wait_for_idle(idle_wait_s)
        done = subprocess.run([sys.executable, "-c", code, str(directory / "encoder.onnx"), str(frames), str(threads),
                               str(target), str(runs)], capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        outputs[name] = np.load(target)
        target.unlink()
    reference = outputs["ours --no-optimize"]
    for name, output in outputs.items():
        results[name]["max_abs_vs_unoptimised"] = float(np.max(np.abs(output - reference)))
    return results


PROFILE_CODE = r"""
import collections, json, os, re, sys, tempfile, numpy as np, onnxruntime as ort
path, frames, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
options = ort.SessionOptions(); options.intra_op_num_threads = threads; options.log_severity_level = 3
options.enable_profiling = True; options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "profile")
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
mels = session.get_inputs()[0].shape[1]
x = np.random.default_rng(0).standard_normal((1, mels, frames)).astype(np.float32)
feed = {session.get_inputs()[0].name: x, session.get_inputs()[1].name: np.array([frames], np.int64)}
for _ in range(3):
    session.run(None, feed)
events = json.load(open(session.end_profiling()))
last = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-1]
kinds, ops = collections.Counter(), collections.Counter()
for e in events:
    if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
        continue
    if last["ts"] <= e["ts"] <= last["ts"] + last["dur"]:
        part = re.search(r"layers\.\d+/(\w+)/", e["name"])
        where = "linear_pos" if "linear_pos" in e["name"] else part.group(1) if part else \
            "layer" if "layers." in e["name"] else "front end"
        kinds[where + ":" + e["args"]["op_name"]] += e["dur"]
        ops[e["args"]["op_name"]] += e["dur"]
print(json.dumps({"run_ms": last["dur"] / 1e3, "by_op_ms": {k: v / 1e3 for k, v in ops.most_common()},
                  "by_part_ms": {k: v / 1e3 for k, v in kinds.most_common(16)}}))
"""


def profile(directories: dict[str, Path], seconds: float, threads: int) -> dict[str, dict]:
    """onnxruntime's profiler on each encoder (third run of random features): where the time goes."""
    results = {}
    for name in ("ours --no-optimize", "ours"):
        done = subprocess.run([sys.executable, "-c", PROFILE_CODE, str(directories[name] / "encoder.onnx"),
                               str(int(seconds * 100)), str(threads)], capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        total = sum(results[name]["by_op_ms"].values())
        gemm = sum(v for k, v in results[name]["by_op_ms"].items() if k in ("MatMul", "Conv", "FusedMatMul", "Gemm"))
        print(f"\nprofile of {name} (one run, {results[name]['run_ms']:.0f} ms; "
              f"MatMul+Conv {100 * gemm / total:.0f}%):")
        for part, ms in results[name]["by_part_ms"].items():
            print(f"  {part:44} {ms:8.1f} ms {100 * ms / total:5.1f}%")
    return results


def _busy_share(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over `seconds` (Linux /proc/stat); 0 where unknown."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_for_idle(limit_s: float, threshold: float = 0.15) -> float:
    """Before a timed process on a shared machine: wait (up to limit_s) until others leave the CPUs nearly idle."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s and _busy_share() > threshold:
        pass
    return time.perf_counter() - started


ALTERNATE_CODE = r"""
import json, sys, time, numpy as np, onnxruntime as ort
frames, threads, runs, paths = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def session(path):
    options = ort.SessionOptions(); options.intra_op_num_threads = threads; options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
sessions = [session(p) for p in paths]
mels = sessions[0].get_inputs()[0].shape[1]
x = np.random.default_rng(0).standard_normal((1, mels, frames)).astype(np.float32)
feeds = [{s.get_inputs()[0].name: x, s.get_inputs()[1].name: np.array([frames], np.int64)} for s in sessions]
for s, f in zip(sessions, feeds):
    s.run(None, f)
times = [[] for _ in sessions]
for r in range(runs):
    for i in (range(len(sessions)) if r % 2 == 0 else reversed(range(len(sessions)))):
        start = time.perf_counter(); sessions[i].run(None, feeds[i]); times[i].append(time.perf_counter() - start)
print(json.dumps(times))
"""
VARIANTS = {"as exported": (), "fused_attention": ("fused_attention",),
            "fused_attention + fast_rel_shift": ("fused_attention", "fast_rel_shift"),
            "halved_linear_pos alone": ("halved_linear_pos",), "all (the default)": None}


def each_rewrite(unoptimised: Path, work: Path, seconds: float, threads: int, runs: int) -> dict[str, list[float]]:
    """The encoder with each subset of the rewrites, timed by onnxruntime in one process, alternating."""
    import onnx

    from nemo2sherpa.convert.passes.optimize import REWRITES, optimize_encoder
    from nemo2sherpa.graphs.graph import OnnxGraph
    from nemo2sherpa.graphs.writing import write_graph

    source = unoptimised / "encoder.onnx"
    if (unoptimised / "encoder.weights").exists():
        raise SystemExit("--each-rewrite holds every variant in memory at once: for models under 2 GB only")
    paths = []
    for index, (name, only) in enumerate(VARIANTS.items()):
        graph = OnnxGraph(model=onnx.load(str(source), load_external_data=False), source=source, tensors={})
        graph, _ = optimize_encoder(graph, REWRITES if only is None else only)
        target = work / "rewrites" / f"variant{index}" / "encoder.onnx"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_graph(graph, target)
        paths.append(str(target))
    done = subprocess.run([sys.executable, "-c", ALTERNATE_CODE, str(int(seconds * 100)), str(threads), str(runs),
                           *paths], capture_output=True, text=True, check=True)
    times = dict(zip(VARIANTS, json.loads(done.stdout.strip().splitlines()[-1])))
    base = statistics.median(times["as exported"])
    print(f"\neach rewrite: the encoder alone, onnxruntime, {threads} threads, {runs} runs each, alternated in one "
          "process")
    for name, values in times.items():
        print(f"  {name:34} median {1e3 * statistics.median(values):8.1f} ms  min {1e3 * min(values):8.1f} ms  "
              f"{base / statistics.median(values):5.2f}x")
    return times


def decode_rounds(directories: dict[str, Path], audio: np.ndarray, repeats: int, decodes: int,
                  threads: int, idle_wait_s: float) -> dict[str, dict]:
    from nemo2sherpa.validate.audio import Clip
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_child import SherpaRequest, run_sherpa

    clip = Clip(name="speech", audio=audio, sample_rate=16000)
    runs: dict[str, dict] = {name: {"load_s": [], "decode_s": [], "tokens": None, "text": None} for name in directories}
    names = list(directories)
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            directory = directories[name]
            request = SherpaRequest.for_model(open_model_dir(directory), threads=threads, transcribe=["speech"],
                                              speed=["speech"], warmup=0, repeats=decodes)
            waited = wait_for_idle(idle_wait_s) if idle_wait_s else 0.0
            run = run_sherpa(request, {"speech": clip})
            if not run.ok:
                raise SystemExit(f"sherpa-onnx failed on {name}: {run.error}")
            entry = runs[name]
            entry["load_s"].append(run.load_seconds)
            entry["decode_s"].extend(run.timings["speech"])
            transcript = run.transcripts["speech"]
            if entry["tokens"] is None:
                entry["tokens"], entry["text"] = transcript["tokens"], transcript["text"]
            elif entry["tokens"] != transcript["tokens"]:
                entry["unstable"] = True
            entry.setdefault("load_average", []).append(round(os.getloadavg()[0], 2))
            print(f"  round {round_index + 1}/{repeats} {name:20} load {run.load_seconds:6.2f} s decode "
                  f"{' '.join(f'{t:.2f}' for t in run.timings['speech'])} s (load average "
                  f"{os.getloadavg()[0]:.1f}, waited {waited:.0f} s for idle CPUs)", file=sys.stderr, flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", default="parakeet-tdt-1.1b")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a .nemo to use instead of building one")
    parser.add_argument("--plain", type=Path, default=None, help="an existing plain export of that checkpoint")
    parser.add_argument("--workdir", type=Path, default=Path("work/bench-speed"))
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=5, help="rounds: fresh processes per directory")
    parser.add_argument("--decodes", type=int, default=3, help="timed decodes per process, after the warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="redo the exports even when the workdir has them")
    parser.add_argument("--idle-wait", type=float, default=120.0,
                        help="before each timed process, wait up to this many seconds for the CPUs to be idle (0: no)")
    parser.add_argument("--each-rewrite", type=int, default=0, metavar="RUNS",
                        help="also time the encoder with each subset of the rewrites, RUNS runs each (small models)")
    parser.add_argument("--profile", action="store_true", help="also print onnxruntime's profile of both encoders")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir / args.recipe
    work.mkdir(parents=True, exist_ok=True)

    checkpoint = args.checkpoint or work / f"{args.recipe}-random.nemo"
    if not checkpoint.exists():
        print(f"[{args.recipe}] building random-weight checkpoint (not timed) ...", file=sys.stderr, flush=True)
        build_random_checkpoint(args.recipe, checkpoint)
    setup = {}
    print(f"[{args.recipe}] exports (reused when present) ...", file=sys.stderr, flush=True)
    plain = args.plain or work / "plain"
    setup["plain"] = {"reused": True} if args.plain else export_plain(checkpoint, plain, args.fresh)
    setup["ours --no-optimize"] = convert_ours(checkpoint, work / "ours-noopt", False, args.fresh)
    setup["ours"] = convert_ours(checkpoint, work / "ours", True, args.fresh)
    directories = {"plain": plain_for_sherpa(plain, work / "ours", work / "plain-sherpa"),
                   "ours --no-optimize": work / "ours-noopt", "ours": work / "ours"}
    manifest = json.loads((work / "ours" / "manifest.json").read_text())
    optimizations = manifest["export"].get("optimizations", [])

    print(f"[{args.recipe}] encoder parity (onnxruntime, {args.seconds:.0f} s of random features) ...",
          file=sys.stderr, flush=True)
    parity = encoder_parity(directories, args.seconds, args.threads, max(3, args.decodes), args.idle_wait)
    audio = speech(args.seconds, work / f"speech-{args.seconds:.0f}s.wav")
    print(f"[{args.recipe}] sherpa-onnx decode, {args.repeats} rounds ...", file=sys.stderr, flush=True)
    runs = decode_rounds(directories, audio, args.repeats, args.decodes, args.threads, args.idle_wait)

    reference = runs["plain"]["tokens"]
    print(f"\n{args.recipe}, random weights; {args.seconds:.0f} s of espeak-ng speech; sherpa-onnx CPU, "
          f"{args.threads} threads; {args.repeats} fresh processes per graph x {args.decodes} timed decodes")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; load average during the decodes "
          f"{min(min(r['load_average']) for r in runs.values()):.1f}-"
          f"{max(max(r['load_average']) for r in runs.values()):.1f}")
    print(f"optimizations applied: {', '.join(o['name'] + ' x' + str(o['count']) for o in optimizations) or 'none'}")
    print(f"{'encoder graph':20} {'load s':>7} {'decode s':>9} {'min s':>6} {'vs plain':>13} {'encoder s':>14} "
          f"{'max|diff|':>10} {'same tokens':>12} {'convert s':>10} {'peak GB':>8}")
    print(f"{'':20} {'median':>7} {'median':>9} {'':>6} {'median / min':>13} {'median / min':>14}")
    plain_decode = statistics.median(runs["plain"]["decode_s"])
    plain_min = min(runs["plain"]["decode_s"])
    rows = {}
    for name in MODELS:
        entry = runs[name]
        decode, fastest = statistics.median(entry["decode_s"]), min(entry["decode_s"])
        encoder = parity[name]["encoder_s"]
        same = entry["tokens"] == reference and not entry.get("unstable")
        conversion = setup[name]
        rows[name] = {**entry, "decode_median_s": decode, "decode_min_s": fastest,
                      "load_median_s": statistics.median(entry["load_s"]),
                      "speedup_vs_plain_median": plain_decode / decode, "speedup_vs_plain_min": plain_min / fastest,
                      "same_tokens_as_plain": same, "encoder": parity[name], "conversion": conversion}
        print(f"{name:20} {statistics.median(entry['load_s']):7.2f} {decode:9.2f} {fastest:6.2f} "
              f"{plain_decode / decode:5.2f}x/{plain_min / fastest:5.2f}x "
              f"{statistics.median(encoder):6.2f}/{min(encoder):6.2f} s "
              f"{parity[name]['max_abs_vs_unoptimised']:10.2g} {same!s:>12} "
              f"{conversion.get('wall_s', float('nan')):10.1f} {conversion.get('peak_rss_gb', float('nan')):8.2f}")
    print(f"tokens: {len(reference)}; transcript starts {runs['plain']['text'][:60]!r}")
    profiles = profile(directories, args.seconds, args.threads) if args.profile else None
    rewrites = each_rewrite(work / "ours-noopt", work, args.seconds, args.threads, args.each_rewrite) \
        if args.each_rewrite else None
    if args.json:
        args.json.write_text(json.dumps({"recipe": args.recipe, "seconds": args.seconds, "threads": args.threads,
                                         "optimizations": optimizations, "models": rows, "profiles": profiles,
                                         "each_rewrite_s": rewrites},
                                        indent=2))
    if not all(row["same_tokens_as_plain"] for row in rows.values()):
        raise SystemExit("transcripts differ")


if __name__ == "__main__":
    main()
