"""onnx-asr's own NeMo front end against NeMo's: what the features of the same audio differ by, measured.

onnx-asr never runs a model's preprocessor: it computes log-mel features itself (onnx_asr/preprocessors, numpy on
CPU, a bundled ONNX graph elsewhere) with NeMo's default settings hard-coded. This feeds the same 16 kHz clips to
NeMo's AudioToMelSpectrogramPreprocessor (eval mode: no dither) of a checkpoint and to onnx-asr's numpy
preprocessor, and reports the frame counts and the largest and mean absolute difference over the frames both have.

Usage: python bench/onnx_asr_features.py [--checkpoint PATH.nemo] [--dataset JSONL]
       (default: the bundled tiny-tdt-en and its 20 utterances; needs the convert extra and onnx-asr)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--dataset", type=Path)
    args = parser.parse_args()

    import soundfile as sf
    import torch
    from nemo.collections.asr.models import ASRModel
    from onnx_asr.preprocessors.numpy_preprocessor import NemoPreprocessorNumpy

    from nemo2sherpa.checkpoint.loading import quiet_nemo
    from nemo2sherpa.recipes import get_recipe

    recipe = get_recipe("tiny-tdt-en")
    checkpoint = args.checkpoint or recipe.bundled_path()
    dataset = args.dataset or recipe.dataset_path()
    with quiet_nemo():
        model = ASRModel.restore_from(str(checkpoint), map_location="cpu").eval()
    mels = int(model.cfg.preprocessor.features)
    theirs = NemoPreprocessorNumpy(f"nemo{mels}")
    rows = []
    for line in dataset.read_text().splitlines():
        entry = json.loads(line)
        audio, rate = sf.read(str(dataset.parent / entry["audio"]), dtype="float32")
        assert rate == 16000, "the comparison is at 16 kHz, what both front ends take"
        with torch.inference_mode():
            ours, length = model.preprocessor(input_signal=torch.from_numpy(audio)[None],
                                              length=torch.tensor([audio.size]))
        nemo = ours[0, :, : int(length[0])].numpy()
        other, other_length = theirs(audio[None].copy(), np.array([audio.size], dtype=np.int64))
        onnx_asr = other[0, :, : int(other_length[0])]
        common = min(nemo.shape[1], onnx_asr.shape[1])
        diff = np.abs(nemo[:, :common] - onnx_asr[:, :common])
        rows.append((nemo.shape[1], onnx_asr.shape[1], float(diff.max()), float(diff.mean())))
    frames = {(a, b) for a, b, _, _ in rows}
    shorter = sum(1 for a, b, _, _ in rows if b < a)
    print(f"{len(rows)} clips, {mels} mels: onnx-asr has fewer frames than NeMo on {shorter} "
          f"(e.g. {sorted(frames)[:3]})")
    print(f"max |diff| over common frames: {max(r[2] for r in rows):.3g}; mean |diff|: "
          f"{np.mean([r[3] for r in rows]):.3g}")


if __name__ == "__main__":
    main()
