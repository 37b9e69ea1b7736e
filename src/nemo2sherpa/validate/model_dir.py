"""Find the files of a model directory to validate: ours (manifest names them) or anyone else's (conventional names)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nemo2sherpa.errors import UserError
from nemo2sherpa.manifest import Manifest, read_manifest

# sherpa-onnx users' conventional names per precision
CONVENTIONAL = {
    "fp32": ("encoder.onnx", "decoder.onnx", "joiner.onnx"),
    "int8": ("encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"),
    "fp16": ("encoder.fp16.onnx", "decoder.fp16.onnx", "joiner.fp16.onnx"),
}


@dataclass(frozen=True)
class ModelDir:
    directory: Path
    variant: str
    encoder: Path
    decoder: Path
    joiner: Path
    tokens: Path
    manifest: Manifest | None

    @property
    def graphs(self) -> dict[str, Path]:
        return {"encoder": self.encoder, "decoder": self.decoder, "joiner": self.joiner}


def open_model_dir(directory: Path, variant: str | None = None) -> ModelDir:
    if not directory.exists():
        raise UserError.about(directory, "no such model directory")
    if not directory.is_dir():
        raise UserError.about(directory, "is not a directory")
    manifest = read_manifest(directory)
    if variant is None:
        variant = "fp32" if (manifest is None or "fp32" in manifest.variants) else sorted(manifest.variants)[0]
        if manifest is None and not (directory / "encoder.onnx").exists() and (directory / "encoder.int8.onnx").exists():
            variant = "int8"  # a third-party int8-only download
    if manifest is not None and variant in manifest.variants:
        names = manifest.variants[variant]
        encoder, decoder, joiner = names.encoder, names.decoder, names.joiner
    elif variant in CONVENTIONAL:
        encoder, decoder, joiner = CONVENTIONAL[variant]
    else:
        raise UserError.about(directory, f"has no {variant!r} variant")
    return ModelDir(directory=directory, variant=variant, encoder=directory / encoder, decoder=directory / decoder,
                    joiner=directory / joiner, tokens=directory / "tokens.txt", manifest=manifest)
