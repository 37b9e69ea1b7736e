"""The plain method, as the field does it today (sherpa-onnx's own export scripts): NeMo's restore_from, each
module's .export(), then the encoder re-saved with all its tensors in one external-data file. The baseline that
bench/convert.py measures nemo2sherpa against. Usage: python bench/plain_export.py MODEL.nemo OUTDIR
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main(checkpoint: str, out: str) -> None:
    import onnx
    import torch
    from nemo.collections.asr.models import ASRModel

    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    marks = {}
    start = time.perf_counter()
    model = ASRModel.restore_from(checkpoint, map_location="cpu")
    model.eval()
    marks["restore_from"] = time.perf_counter() - start
    if getattr(model.encoder, "att_context_style", "regular") == "chunked_limited":
        model.set_export_config({"cache_support": "True"})  # a streaming model: the scripts export its caches
    with torch.no_grad():
        for name, module in (("encoder", model.encoder), ("decoder", model.decoder), ("joiner", model.joint)):
            begin = time.perf_counter()
            module.export(str(directory / f"{name}.onnx"))
            marks[f"export {name}"] = time.perf_counter() - begin
    begin = time.perf_counter()
    encoder = onnx.load(str(directory / "encoder.onnx"))
    for leftover in directory.iterdir():
        if leftover.name not in ("encoder.onnx", "decoder.onnx", "joiner.onnx"):
            leftover.unlink()
    onnx.save(encoder, str(directory / "encoder.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="encoder.weights")
    marks["re-save encoder"] = time.perf_counter() - begin
    print(" ".join(f"{k}={v:.1f}s" for k, v in marks.items()), file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(sys.argv[1], sys.argv[2])
