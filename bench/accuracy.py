"""Accuracy of an export on speech the model never heard: NeMo, the exported graphs and sherpa-onnx, per precision,
on short and long audio; and which difference of sherpa-onnx's front end costs what.

  python bench/accuracy.py DIR [--nemo MODEL.nemo] [--heldout JSONL] [--precision fp32,fp16,int8]
                           [--long 60,600] [--threads 2] [--json F]

DIR is a conversion of small-tdt-en (`nemo2sherpa convert small-tdt-en -o DIR --precision fp32,fp16,int8`); the
checkpoint and the held-out set default to the bundled ones. The long inputs are the held-out utterances joined in
order, with 0.3 s of silence between them, into files of each --long length (as many as the held-out set fills).

For every input set and precision it prints the WER against the reference texts of:
  - NeMo (greedy, its own preprocessor);
  - the exported graphs fed NeMo's features (onnxruntime, greedy as NeMo decodes): the export alone;
  - sherpa-onnx end to end (its own front end and decoder): what a user gets;
  - the same with the family's front-end option (high_freq=0: mel filters up to Nyquist, as NeMo's).
For float32 it adds the front-end sweep: the graphs fed sherpa-onnx's features as nemo2sherpa.sherpa_front_end
reproduces them, then with each of their differences from NeMo's switched to NeMo's value alone, then with all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "src" / "nemo2sherpa" / "fixtures" / "small-tdt-en"
GAP_SECONDS = 0.3


def read_heldout(path: Path) -> list[tuple[str, np.ndarray, str]]:
    import soundfile

    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        samples, _ = soundfile.read(path.parent / entry["audio"], dtype="int16")  # WAV (corpus) or FLAC (bundle)
        out.append((Path(entry["audio"]).stem, samples.astype(np.float32) / 32768.0, entry["text"]))
    return out


def joined(clips: list[tuple[str, np.ndarray, str]], seconds: float) -> list[tuple[str, np.ndarray, str]]:
    """The clips concatenated in order into inputs of about `seconds` each (the last partial one dropped)."""
    gap = np.zeros(int(GAP_SECONDS * 16000), dtype=np.float32)
    out, audio, texts = [], [], []
    for _, samples, text in clips:
        audio += [samples, gap]
        texts.append(text)
        if sum(a.size for a in audio) >= seconds * 16000:
            out.append((f"joined-{seconds:.0f}s-{len(out) + 1}", np.concatenate(audio), " ".join(texts)))
            audio, texts = [], []
    return out


class Nemo:
    """The checkpoint in NeMo: its features (kept for the graphs) and its greedy text."""

    def __init__(self, path: Path) -> None:
        from nemo.collections.asr.models import ASRModel

        from nemo2sherpa.checkpoint.loading import quiet_nemo

        with quiet_nemo():
            self.model = ASRModel.restore_from(str(path), map_location="cpu")
        self.model.eval()

    def run(self, audio: np.ndarray) -> tuple[np.ndarray, str]:
        import torch

        from nemo2sherpa.testing.train_fixture import flatten_transcripts

        with torch.inference_mode():
            signal = torch.from_numpy(audio)[None]
            features, length = self.model.preprocessor(input_signal=signal, length=torch.tensor([audio.size]))
            encoded, encoded_length = self.model.encoder(audio_signal=features, length=length)
            hypotheses = self.model.decoding.rnnt_decoder_predictions_tensor(encoder_output=encoded,
                                                                             encoded_lengths=encoded_length)
        return features[0, :, : int(length[0])].numpy(), flatten_transcripts(hypotheses)[0]


def wer(references: list[str], hypotheses: list[str]) -> float:
    from nemo2sherpa.validate.transcripts import corpus_wer

    return corpus_wer(references, hypotheses, normalize=True) or 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--nemo", type=Path, default=BUNDLED / "model.nemo")
    parser.add_argument("--heldout", type=Path, default=BUNDLED / "heldout.jsonl")
    parser.add_argument("--precision", default="fp32,fp16,int8")
    parser.add_argument("--long", default="60,600", help="lengths in seconds of the joined inputs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from nemo2sherpa import sherpa_front_end as fe
    from nemo2sherpa.validate import sherpa_runner
    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.front_end_replay import text_of
    from nemo2sherpa.validate.model_dir import open_model_dir

    clips = read_heldout(args.heldout)
    sets = {"short": clips}
    for seconds in (float(s) for s in args.long.split(",") if s):
        sets[f"{seconds:.0f} s"] = joined(clips, seconds)
    nemo = Nemo(args.nemo)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    started = time.monotonic()
    nemo_out = {name: [nemo.run(audio) for _, audio, _ in inputs] for name, inputs in sets.items()}
    log(f"NeMo: {time.monotonic() - started:.0f} s")
    truth = {name: [text for _, _, text in inputs] for name, inputs in sets.items()}
    results: dict = {"sets": {name: {"inputs": len(inputs), "seconds": round(sum(a.size for _, a, _ in inputs) / 16000)}
                              for name, inputs in sets.items()},
                     "nemo": {name: wer(truth[name], [t for _, t in nemo_out[name]]) for name in sets},
                     "precisions": {}, "front_end": {}}
    for precision in args.precision.split(","):
        model = open_model_dir(args.directory, variant=None if precision == "fp32" else precision)
        _, spec = check_contract(model)
        assert spec is not None, f"{args.directory} ({precision}) fails the contract"
        graphs = model.family.graph_decoder(model.graphs, spec, threads=args.threads)
        recognizer = sherpa_runner.make_recognizer(model, threads=args.threads, feature_dim=spec.feat_dim)
        with_option = sherpa_runner.make_recognizer(model, threads=args.threads, feature_dim=spec.feat_dim,
                                                    with_front_end_option=True)
        row = {}
        for name, inputs in sets.items():
            started = time.monotonic()
            graph_texts = []
            for features, _ in nemo_out[name]:
                encoded, length = graphs.encode(features)
                graph_texts.append(text_of(graphs.greedy(encoded, length, 10).tokens, spec.pieces))
            sherpa_texts = [sherpa_runner.transcribe(recognizer, audio).text for _, audio, _ in inputs]
            option_texts = [sherpa_runner.transcribe(with_option, audio).text for _, audio, _ in inputs]
            row[name] = {"graphs_on_nemo_features": wer(truth[name], graph_texts),
                         "sherpa_onnx": wer(truth[name], sherpa_texts),
                         "sherpa_onnx_high_freq_0": wer(truth[name], option_texts)}
            log(f"{precision} {name}: {row[name]} ({time.monotonic() - started:.0f} s)")
        results["precisions"][precision] = row
        if precision != "fp32":
            continue
        variants = {"sherpa-onnx's (reproduced)": fe.SHERPA_ONNX,
                    **{f"... with NeMo's {factor}": fe.SHERPA_ONNX.with_nemo(factor) for factor in fe.FACTORS},
                    "... with all four of NeMo's": fe.NEMO_VALUES}
        for label, front_end in variants.items():
            entry = {}
            for name, inputs in sets.items():
                texts = []
                for _, audio, _ in inputs:
                    encoded, length = graphs.encode(fe.features(audio, spec.feat_dim, front_end))
                    texts.append(text_of(graphs.greedy(encoded, length, 10).tokens, spec.pieces))
                entry[name] = wer(truth[name], texts)
            results["front_end"][label] = entry
            log(f"front end {label}: {entry}")
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def print_tables(results: dict) -> None:
    """One table per precision (NeMo's row repeated in each, for reading it alone), then the front-end sweep."""
    names = list(results["sets"])
    header = "| | " + " | ".join(f"{n} ({results['sets'][n]['inputs']} inputs, {results['sets'][n]['seconds']} s)"
                                   for n in names) + " |"
    rule = "|---|" + "---|" * len(names)
    labels = {"graphs_on_nemo_features": "the exported graphs fed NeMo's features",
              "sherpa_onnx": "sherpa-onnx end to end",
              "sherpa_onnx_high_freq_0": "sherpa-onnx end to end, `high_freq=0`"}
    for precision, row in results["precisions"].items():
        print(f"\n{precision}:\n", header, rule, "| NeMo (PyTorch, float32) | " +
              " | ".join(f"{results['nemo'][n]:.2f}%" for n in names) + " |", sep="\n")
        for key, label in labels.items():
            print(f"| {label} | " + " | ".join(f"{row[n][key]:.2f}%" for n in names) + " |")
    if results["front_end"]:
        print("\nfloat32 graphs fed each front end:\n")
        print(header, rule, sep="\n")
        for label, entry in results["front_end"].items():
            print(f"| {label} | " + " | ".join(f"{entry[n]:.2f}%" for n in names) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
