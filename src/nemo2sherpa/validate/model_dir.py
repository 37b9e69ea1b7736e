"""Find the files of a model directory to validate: ours (the manifest names them, per model family) or anyone
else's (a family's conventional names: encoder.onnx/decoder.onnx/joiner.onnx, model.onnx, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nemo2sherpa.confinement import outside_reason
from nemo2sherpa.errors import UserError
from nemo2sherpa.families import FAMILIES, LAYOUTS, Family, family_named, family_of_files
from nemo2sherpa.manifest import Manifest, read_manifest
from nemo2sherpa.precision.catalog import PRECISIONS


@dataclass(frozen=True)
class ModelDir:
    directory: Path
    family: Family
    variant: str
    graphs: dict[str, Path]  # role -> file, in the family's role order
    tokens: Path
    manifest: Manifest | None

    @property
    def encoder(self) -> Path:
        """The graph that holds the encoder (encoder.onnx, or a CTC model's model.onnx)."""
        return self.graphs[self.family.encoder_role.name]


def open_model_dir(directory: Path, variant: str | None = None, family: str | None = None) -> ModelDir:
    """`family`: which of the directory's model families (default: the manifest's first, or the one whose files a
    directory without manifest has); `variant`: which precision (default fp32, else the only one there)."""
    if not directory.exists():
        raise UserError.about(directory, "no such model directory")
    if not directory.is_dir():
        raise UserError.about(directory, "is not a directory")
    manifest = read_manifest(directory)
    if manifest is None and not _looks_like_a_model(directory):
        raise UserError.about(directory, "is not a model directory: no manifest.json, no tokens.txt or vocab.txt "
                                         "and no .onnx file (nothing is written into it)")
    chosen = _family(directory, manifest, family, variant)
    if manifest is not None:
        record = manifest.family(chosen.name)
        if variant is None:
            variant = "fp32" if "fp32" in record.variants else sorted(record.variants)[0]
        if variant in record.variants:
            names = record.variants[variant].files
        elif variant in PRECISIONS:
            names = chosen.files(variant)
        else:
            raise UserError.about(directory, f"has no {variant!r} variant")
    else:
        if variant is None:
            variant = next((p for p in ("fp32", "int8") if family_of_files(directory, p) is chosen), "fp32")
        if variant not in PRECISIONS:
            raise UserError.about(directory, f"has no {variant!r} variant")
        names = chosen.files(variant)
    for name in [*(names[role.name] for role in chosen.roles), chosen.tokens_file]:
        reason = outside_reason(directory, name)
        if reason:
            raise UserError.about(directory, f"{reason}; validate reads only files inside the model directory")
    graphs = {role.name: directory / names[role.name] for role in chosen.roles}
    return ModelDir(directory=directory, family=chosen, variant=variant, graphs=graphs,
                    tokens=directory / chosen.tokens_file, manifest=manifest)


def _looks_like_a_model(directory: Path) -> bool:
    """Someone else's export is recognised by its vocabulary or any ONNX graph; an empty or unrelated directory is
    not, so that validate never writes a report into it."""
    vocabularies = {family.tokens_file for layout in LAYOUTS.values() for family in layout.values()}
    return any((directory / name).exists() for name in vocabularies) or \
        any(path.suffix == ".onnx" for path in directory.iterdir())


def _family(directory: Path, manifest: Manifest | None, name: str | None, variant: str | None) -> Family:
    if manifest is not None:
        if name is None:
            return family_named(manifest.default_family)
        if name not in manifest.families:
            raise UserError.about(directory, f"has no {family_named(name).title} model; it has "
                                             f"{', '.join(family_named(n).title for n in manifest.families)}")
        return family_named(name)
    if name is not None:
        return family_named(name)
    for precision in ((variant,) if variant else ("fp32", "int8")):
        found = family_of_files(directory, precision)
        if found is not None:
            return found
    return next(iter(FAMILIES.values()))  # the contract check then names the missing files
