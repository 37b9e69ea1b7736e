"""manifest.json: where a model directory came from and what it must contain, byte for byte.

Written last by convert, read by validate (hash check, model facts) and publish (model card, refusals). Pure Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.hashing import sha256_file

MANIFEST_NAME = "manifest.json"
FORMAT = "nemo2sherpa-manifest"
FORMAT_VERSION = 1
GRAPHS = ("encoder", "decoder", "joiner")


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Variant:
    """One precision of the three graphs, e.g. fp32 -> encoder.onnx, decoder.onnx, joiner.onnx."""

    encoder: str
    decoder: str
    joiner: str

    def graph_files(self) -> dict[str, str]:
        return {"encoder": self.encoder, "decoder": self.decoder, "joiner": self.joiner}


@dataclass
class Manifest:
    tool_version: str
    created: str
    source: dict[str, Any]
    model: ModelFacts
    sherpa_metadata: dict[str, str]
    versions: dict[str, str]
    export: dict[str, Any]
    variants: dict[str, Variant]
    files: dict[str, FileRecord] = field(default_factory=dict)
    random_weights: bool = False
    conversion_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool": {"name": "nemo2sherpa", "version": self.tool_version},
            "created": self.created,
            "conversion_seconds": self.conversion_seconds,
            "random_weights": self.random_weights,
            "source": self.source,
            "model": self.model.to_dict(),
            "export": self.export,
            "variants": {name: v.graph_files() for name, v in self.variants.items()},
            "sherpa_onnx": {"model_type": "nemo_transducer", "metadata": self.sherpa_metadata},
            "versions": self.versions,
            "files": {name: record.to_dict() for name, record in sorted(self.files.items())},
        }

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path = MANIFEST_NAME) -> "Manifest":
        if not isinstance(data, Mapping):
            raise UserError.about(source, "is not a JSON object")
        if data.get("format") != FORMAT:
            raise UserError.about(source, f"is not a nemo2sherpa manifest (format {data.get('format')!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise UserError.about(source, f"has format_version {data.get('format_version')!r}; "
                                          f"this nemo2sherpa reads {FORMAT_VERSION}")
        try:
            files = {
                str(name): FileRecord(sha256=str(rec["sha256"]), size=int(rec["size"]))
                for name, rec in dict(data["files"]).items()
            }
            variants = {
                str(name): Variant(**{g: str(paths[g]) for g in GRAPHS})
                for name, paths in dict(data["variants"]).items()
            }
            return cls(
                tool_version=str(data["tool"]["version"]),
                created=str(data["created"]),
                source=dict(data["source"]),
                model=ModelFacts.from_dict(data["model"]),
                sherpa_metadata={str(k): str(v) for k, v in dict(data["sherpa_onnx"]["metadata"]).items()},
                versions={str(k): str(v) for k, v in dict(data["versions"]).items()},
                export=dict(data["export"]),
                variants=variants,
                files=files,
                random_weights=bool(data.get("random_weights", False)),
                conversion_seconds=data.get("conversion_seconds"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError.about(source, f"is malformed ({type(exc).__name__}: {exc})") from None


def read_manifest(directory: Path) -> Manifest | None:
    """The directory's manifest, None when it has none (a third-party directory), UserError when it is broken."""
    path = directory / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError.about(path, f"is not valid JSON ({exc})") from None
    return Manifest.from_dict(data, path)


def record_files(directory: Path, names: Iterable[str], known: Mapping[str, str] | None = None
                 ) -> dict[str, FileRecord]:
    """Size and sha256 of each file; `known` hashes (computed while the file was written) are not recomputed."""
    known = known or {}
    return {
        name: FileRecord(sha256=known.get(name) or sha256_file(directory / name),
                         size=(directory / name).stat().st_size)
        for name in names
    }


def file_problems(directory: Path, files: Mapping[str, FileRecord]) -> list[str]:
    """Every listed file that is missing, resized or changed; cheap size checks first, hashes only when sizes match."""
    problems = []
    for name, record in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        size = path.stat().st_size
        if size != record.size:
            problems.append(f"{name} has {size} bytes, the manifest says {record.size}")
        elif sha256_file(path) != record.sha256:
            problems.append(f"{name} does not match its sha256 in the manifest")
    return problems
