"""Where a sherpa-onnx decode of a converted model spends its time, and what the installed onnxruntime charges.

For one model directory (a `nemo2sherpa convert` output), in one run:
1. sherpa-onnx CPU decode of --seconds of espeak-ng speech (a fresh process, one warm-up decode, --runs timed), the
   tokens it emits;
2. with the onnxruntime installed beside this script (its version is printed): the encoder alone on random features
   of the same length, and the greedy search that follows it (sherpa-onnx's rule: a joiner call per step, a decoder
   call per emitted token) timed over that encoder output, with the number of calls;
3. the encoder against the same graph with its LayerNormalization nodes written as primitive operators (ReduceMean,
   Sub, Mul, Sqrt, Reciprocal, Add; a temporary graph beside the model, the weights file hard-linked), both run by
   this onnxruntime, alternating: onnxruntime 1.27-1.29 (sherpa-onnx 2.0.1 bundles 1.28.2) run LayerNormalization
   about ten times slower than earlier and later releases do; the primitive form costs about the same in all.

Step 2 and 3 need only numpy, onnx and onnxruntime (plus this repository's src/ on PYTHONPATH), so they can be run
against another onnxruntime release in a separate environment, e.g. the one sherpa-onnx bundles:
  python -m venv ort128 && ort128/bin/pip install onnxruntime==1.28.0 onnx numpy
  PYTHONPATH=src ort128/bin/python bench/decode_budget.py models/tdt-1.1b --no-sherpa
Usage: python bench/decode_budget.py MODEL_DIR [--seconds 30] [--runs 3] [--threads 2] [--no-sherpa] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def sherpa_decode(directory: Path, seconds: float, runs: int, threads: int) -> dict:
    sys.path.insert(0, str(HERE))
    from encoder_speed import speech  # bench/encoder_speed.py: espeak-ng speech, cached next to the model

    from nemo2sherpa.validate.audio import Clip
    from nemo2sherpa.validate.sherpa_worker import SherpaRequest, run_sherpa

    audio = speech(seconds, directory.parent / f"speech-{int(seconds)}s.wav")
    request = SherpaRequest(encoder=str(directory / "encoder.onnx"), decoder=str(directory / "decoder.onnx"),
                            joiner=str(directory / "joiner.onnx"), tokens=str(directory / "tokens.txt"),
                            threads=threads, transcribe=["speech"], speed=["speech"], warmup=1, repeats=runs)
    run = run_sherpa(request, {"speech": Clip(name="speech", audio=audio, sample_rate=16000)})
    if not run.ok:
        raise SystemExit(f"sherpa-onnx failed: {run.error}")
    return {"decode_s": run.timings["speech"], "tokens": len(run.transcripts["speech"]["tokens"]),
            "load_s": run.load_seconds}


class CountingTransducer:
    """The project's graph-level greedy decoder, counting the joiner and decoder calls it makes."""

    def __init__(self, graphs) -> None:
        self.graphs, self.joiner_calls, self.decoder_calls = graphs, 0, 0
        step, joint = graphs.step, graphs.joint_logits

        def counted_step(*args):
            self.decoder_calls += 1
            return step(*args)

        def counted_joint(*args):
            self.joiner_calls += 1
            return joint(*args)

        graphs.step, graphs.joint_logits = counted_step, counted_joint


def encoder_and_greedy(directory: Path, seconds: float, runs: int, threads: int) -> dict:
    import onnxruntime as ort

    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.greedy import GraphTransducer
    from nemo2sherpa.validate.model_dir import open_model_dir

    model = open_model_dir(directory)
    check, spec = check_contract(model)
    if spec is None:
        raise SystemExit(f"{directory}: not a directory sherpa-onnx can load (nemo2sherpa validate says why)")
    graphs = GraphTransducer(model.encoder, model.decoder, model.joiner, vocab_size=spec.vocab_size,
                             durations=spec.durations, pred_rnn_layers=spec.pred_rnn_layers,
                             pred_hidden=spec.pred_hidden, threads=threads)
    features = np.random.default_rng(0).standard_normal((spec.feat_dim, int(seconds * 100))).astype(np.float32)
    graphs.encode(features)  # warm-up
    encoder_s, greedy_s = [], []
    counting = CountingTransducer(graphs)
    for _ in range(runs):
        start = time.perf_counter()
        encoded, length = graphs.encode(features)
        middle = time.perf_counter()
        counting.joiner_calls = counting.decoder_calls = 0
        graphs.greedy(encoded, length, max_symbols=5)
        encoder_s.append(middle - start)
        greedy_s.append(time.perf_counter() - middle)
    return {"onnxruntime": ort.__version__, "encoder_s": encoder_s, "greedy_s": greedy_s,
            "joiner_calls": counting.joiner_calls, "decoder_calls": counting.decoder_calls,
            "encoder_frames": int(length)}


def primitive_layer_norms(model) -> int:
    """Rewrite every LayerNormalization of `model` (last axis) as primitive operators; returns how many."""
    from onnx import helper, numpy_helper

    graph, nodes, count = model.graph, [], 0
    constants = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type != "LayerNormalization":
            nodes.append(node)
            continue
        x, scale, bias = node.input
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        eps, p = f"{node.name}/eps", f"{node.name}/primitive/"
        if eps not in constants:
            graph.initializer.append(numpy_helper.from_array(np.array(epsilon, np.float32), eps))
        steps = [("ReduceMean", [x], "mean", {"axes": [-1]}), ("Sub", [x, p + "mean"], "centred", {}),
                 ("Mul", [p + "centred", p + "centred"], "squared", {}),
                 ("ReduceMean", [p + "squared"], "variance", {"axes": [-1]}),
                 ("Add", [p + "variance", eps], "shifted", {}), ("Sqrt", [p + "shifted"], "deviation", {}),
                 ("Reciprocal", [p + "deviation"], "inverse", {}),
                 ("Mul", [p + "centred", p + "inverse"], "normalised", {}),
                 ("Mul", [p + "normalised", scale], "scaled", {})]
        nodes += [helper.make_node(op, inputs, [p + out], name=p + out, **attrs) for op, inputs, out, attrs in steps]
        nodes.append(helper.make_node("Add", [p + "scaled", bias], [node.output[0]], name=p + "biased"))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def layer_norm_ab(encoder: Path, seconds: float, runs: int, threads: int, work: Path) -> dict | None:
    """The encoder as converted against the same graph with primitive normalisations, timed alternately."""
    import onnx

    from nemo2sherpa.validate.greedy import make_session

    model = onnx.load(str(encoder), load_external_data=False)
    count = primitive_layer_norms(model)
    if not count:
        return None
    work.mkdir(parents=True, exist_ok=True)
    for external in {e.value for i in model.graph.initializer for e in i.external_data if e.key == "location"}:
        target = work / external
        if not target.exists():
            os.link(encoder.parent / external, target)  # same file system: no copy of the weights
    onnx.save(model, str(work / encoder.name))
    sessions = {"LayerNormalization": make_session(encoder, threads=threads),
                "primitive": make_session(work / encoder.name, threads=threads)}
    inputs = sessions["primitive"].get_inputs()
    frames = int(seconds * 100)
    features = np.random.default_rng(0).standard_normal((1, inputs[0].shape[1], frames)).astype(np.float32)
    feed = {inputs[0].name: features, inputs[1].name: np.array([frames], np.int64)}
    outputs = {kind: s.run(None, feed)[0] for kind, s in sessions.items()}
    times: dict[str, list[float]] = {kind: [] for kind in sessions}
    for round_index in range(runs):
        for kind in list(sessions) if round_index % 2 == 0 else list(sessions)[::-1]:
            start = time.perf_counter()
            sessions[kind].run(None, feed)
            times[kind].append(time.perf_counter() - start)
    return {"count": count, "encoder_s": times,
            "max_abs_diff": float(np.abs(outputs["primitive"] - outputs["LayerNormalization"]).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-sherpa", action="store_true", help="skip the sherpa-onnx decode (step 1)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    result: dict = {"directory": str(args.directory), "seconds": args.seconds, "threads": args.threads}
    if not args.no_sherpa:
        result["sherpa"] = sherpa = sherpa_decode(args.directory, args.seconds, args.runs, args.threads)
        print(f"sherpa-onnx decode of {args.seconds:g} s: median {statistics.median(sherpa['decode_s']):.3f} s "
              f"(runs {' '.join(f'{t:.3f}' for t in sherpa['decode_s'])}), {sherpa['tokens']} tokens")
    parts = result["onnxruntime"] = encoder_and_greedy(args.directory, args.seconds, args.runs, args.threads)
    print(f"onnxruntime {parts['onnxruntime']}: encoder median {statistics.median(parts['encoder_s']):.3f} s, greedy "
          f"search median {statistics.median(parts['greedy_s']):.3f} s over {parts['encoder_frames']} frames "
          f"({parts['joiner_calls']} joiner and {parts['decoder_calls']} decoder calls)")
    with tempfile.TemporaryDirectory(dir=args.directory.parent) as work:
        ab = result["layer_norm"] = layer_norm_ab(args.directory / "encoder.onnx", args.seconds, 2 * args.runs,
                                                  args.threads, Path(work))
    if ab:
        fused, primitive = (statistics.median(ab["encoder_s"][k]) for k in ("LayerNormalization", "primitive"))
        print(f"encoder with its {ab['count']} LayerNormalization nodes: median {fused:.3f} s; written as primitive "
              f"operators: {primitive:.3f} s ({fused / primitive:.2f}x, max abs diff {ab['max_abs_diff']:.1e})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
