"""Runtimes side by side, one run, same audio, same threads: sherpa-onnx over our export, onnx-asr over our export,
onnx-asr over its own layout made the plain way (NeMo's model.export(), as onnx-asr's README shows), and NeMo
PyTorch. RTFx per audio length, load time and peak RSS, each runtime in a fresh process.

  python bench/runtimes.py SOURCE [--random-weights] [--lengths 2,30,300] [--threads 2] [--repeats 1]
                           [--work DIR] [--json F]

SOURCE is a recipe (small-tdt-en, or parakeet-tdt-0.6b-v3 / parakeet-tdt-1.1b with --random-weights, whose
architecture is built with random weights into a .nemo first) or a local .nemo. The audio is the bundled
small-tdt-en held-out speech (or --audio JSONL) joined and repeated to each length. Decode times are medians over
--repeats after one warm-up decode; RTFx = audio seconds / decode seconds. Random weights time the graphs, not the text.

  python bench/runtimes.py one RUNTIME DIR_OR_NEMO --lengths ... --threads N --repeats R   (the child; prints JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import own_peak_rss_bytes  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HELDOUT = ROOT / "src" / "nemo2sherpa" / "fixtures" / "small-tdt-en" / "heldout.jsonl"
RUNTIMES = ("sherpa-onnx (our export)", "onnx-asr (our export)", "onnx-asr (plain export)", "NeMo PyTorch")


def speech(seconds: float, dataset: Path = HELDOUT) -> np.ndarray:
    """The dataset's speech joined, repeated as needed, cut to `seconds`."""
    import soundfile

    pieces, total = [], 0
    lines = [json.loads(line) for line in dataset.read_text(encoding="utf-8").splitlines() if line.strip()]
    while total < seconds * 16000:
        for entry in lines:
            audio, _ = soundfile.read(dataset.parent / entry["audio"], dtype="float32")
            pieces.append(audio)
            total += audio.size
            if total >= seconds * 16000:
                break
    return np.concatenate(pieces)[: int(seconds * 16000)]


def load(runtime: str, path: Path, threads: int):
    """A function audio -> text for the runtime, loaded."""
    if runtime.startswith("sherpa-onnx"):
        from nemo2sherpa.validate.model_dir import open_model_dir
        from nemo2sherpa.validate.sherpa_runner import make_recognizer, transcribe

        recognizer = make_recognizer(open_model_dir(path), threads=threads,
                                     feature_dim=json.loads((path / "manifest.json").read_text())["model"]
                                     ["architecture"]["mels"])
        return lambda audio: transcribe(recognizer, audio).text
    if runtime.startswith("onnx-asr"):
        import onnx_asr
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        config = json.loads((path / "config.json").read_text())
        model = onnx_asr.load_model(config["model_type"], str(path), sess_options=options,
                                    providers=["CPUExecutionProvider"])
        return lambda audio: model.recognize(audio, sample_rate=16000)
    import torch

    sys.path.insert(0, str(HERE))
    from accuracy import Nemo  # the same NeMo greedy decode the accuracy figures use

    torch.set_num_threads(threads)
    nemo = Nemo(path)
    return lambda audio: nemo.run(audio)[1]


def child(runtime: str, path: Path, lengths: list[float], threads: int, repeats: int, dataset: Path) -> dict:
    started = time.perf_counter()
    decode = load(runtime, path, threads)
    out = {"load_seconds": round(time.perf_counter() - started, 3), "decode_seconds": {}}
    for seconds in lengths:
        audio = speech(seconds, dataset)
        decode(audio)  # warm-up
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            decode(audio)
            times.append(time.perf_counter() - begin)
        out["decode_seconds"][f"{seconds:g}"] = round(statistics.median(times), 4)
    out["peak_rss_gb"] = round(own_peak_rss_bytes() / 2**30, 3)
    return out


def plain_onnx_asr_export(checkpoint: Path, directory: Path) -> None:
    """onnx-asr's README way: NeMo's own export of the model, then vocab.txt and config.json by hand."""
    from nemo.collections.asr.models import ASRModel

    from nemo2sherpa.checkpoint.loading import quiet_nemo

    directory.mkdir(parents=True, exist_ok=True)
    with quiet_nemo():
        model = ASRModel.restore_from(str(checkpoint), map_location="cpu")
        model.eval()
        model.export(str(directory / "model.onnx"))
    vocabulary = [*model.tokenizer.vocab, "<blk>"]
    (directory / "vocab.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(vocabulary)), encoding="utf-8")
    durations = list(model.cfg.get("decoding", {}).get("durations") or [])
    config = {"model_type": "nemo-conformer-tdt" if durations else "nemo-conformer-rnnt",
              "features_size": int(model.cfg.preprocessor.features),
              "subsampling_factor": int(model.cfg.encoder.subsampling_factor)}
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")


def checkpoint_for(source: str, random_weights: bool, work: Path) -> Path:
    if Path(source).is_file():
        return Path(source)
    from nemo2sherpa.recipes import get_recipe

    recipe = get_recipe(source)
    if not random_weights:
        bundled = recipe.bundled_path()
        if bundled is None:
            raise SystemExit(f"{source}: not bundled; use --random-weights or pass a .nemo")
        return bundled
    sys.path.insert(0, str(HERE))
    from convert import build_random_checkpoint

    path = work / f"{source}-random.nemo"
    build_random_checkpoint(source, path)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "one":
        parser = argparse.ArgumentParser()
        parser.add_argument("runtime")
        parser.add_argument("path", type=Path)
        parser.add_argument("--lengths", required=True)
        parser.add_argument("--threads", type=int, default=2)
        parser.add_argument("--repeats", type=int, default=1)
        parser.add_argument("--audio", type=Path, default=HELDOUT)
        args = parser.parse_args(argv[1:])
        lengths = [float(s) for s in args.lengths.split(",")]
        print(json.dumps(child(args.runtime, args.path, lengths, args.threads, args.repeats, args.audio)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--lengths", default="2,30,300")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("work/runtimes"))
    parser.add_argument("--audio", type=Path, default=HELDOUT, help="a JSONL data set whose speech is timed")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work / Path(args.source).stem
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoint_for(args.source, args.random_weights, work)
    cli = [sys.executable, "-m", "nemo2sherpa", "convert", str(checkpoint), "--overwrite", "-q"]
    directories = {RUNTIMES[0]: work / "sherpa", RUNTIMES[1]: work / "onnx-asr", RUNTIMES[2]: work / "plain",
                   RUNTIMES[3]: checkpoint}
    if not (work / "sherpa" / "manifest.json").is_file():
        subprocess.run([*cli, "-o", str(work / "sherpa")], check=True)
    if not (work / "onnx-asr" / "manifest.json").is_file():
        subprocess.run([*cli, "--layout", "onnx-asr", "-o", str(work / "onnx-asr")], check=True)
    if not (work / "plain" / "config.json").is_file():
        plain_onnx_asr_export(checkpoint, work / "plain")
    results = {}
    for runtime, path in directories.items():
        done = subprocess.run([sys.executable, __file__, "one", runtime, str(path), "--lengths", args.lengths,
                               "--threads", str(args.threads), "--repeats", str(args.repeats), "--audio",
                               str(args.audio)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            results[runtime] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
        else:
            results[runtime] = json.loads(done.stdout.strip().splitlines()[-1])
        print(runtime, results[runtime], file=sys.stderr, flush=True)
    lengths = args.lengths.split(",")
    print(f"| runtime ({args.source}, {args.threads} threads) | load s | " +
          " | ".join(f"RTFx at {n} s" for n in lengths) + " | peak RSS GB |")
    print("|---|---|" + "---|" * len(lengths) + "---|")
    for runtime, figures in results.items():
        if "error" in figures:
            print(f"| {runtime} | failed: {figures['error']} |")
            continue
        cells = [f"{float(n) / figures['decode_seconds'][f'{float(n):g}']:.1f}" for n in lengths]
        print(f"| {runtime} | {figures['load_seconds']:.2f} | " + " | ".join(cells) + f" | {figures['peak_rss_gb']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
