"""manifest.json: where a model directory came from and what it must contain, byte for byte.

Written last by convert, read by validate (hash check, model facts) and publish (model card, refusals). Pure Python.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

from nemo2sherpa.errors import UserError, read_text
from nemo2sherpa.facts import DECODER_KINDS, Architecture, ModelFacts
from nemo2sherpa.families.base import DEFAULT_LAYOUT  # a manifest that names no layout is sherpa-onnx's
from nemo2sherpa.hashing import sha256_file

MANIFEST_NAME = "manifest.json"
FORMAT = "nemo2sherpa-manifest"
FORMAT_VERSION = 2  # 2: files per model family; 1 (still read): one transducer, "variants" and "sherpa_onnx"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SOURCE_TEXT = ("kind", "recipe", "repo_id", "revision", "resolved_revision", "filename", "sha256")
_V1_GRAPHS = ("encoder", "decoder", "joiner")


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Variant:
    """One precision of a family's graphs: role -> file name, e.g. fp32 -> {encoder: encoder.onnx, ...}."""

    files: dict[str, str]

    def graph_files(self) -> dict[str, str]:
        return dict(self.files)


@dataclass(frozen=True)
class FamilyRecord:
    """What one model family wrote into the directory: its variants, and the sherpa-onnx metadata of its
    encoder-holding graph. A hybrid converted with --decoder both has two."""

    variants: dict[str, Variant]
    metadata: dict[str, str]
    model_type: str  # what sherpa-onnx calls this family (nemo_transducer, nemo_ctc)

    def to_dict(self) -> dict[str, Any]:
        return {"sherpa_onnx_model_type": self.model_type, "metadata": dict(self.metadata),
                "variants": {name: v.graph_files() for name, v in self.variants.items()}}


@dataclass
class Manifest:
    tool_version: str
    created: str
    source: dict[str, Any]
    model: ModelFacts
    versions: dict[str, str]
    export: dict[str, Any]
    families: dict[str, FamilyRecord]  # family name -> record; the first is the directory's default
    files: dict[str, FileRecord] = field(default_factory=dict)
    random_weights: bool = False
    conversion_seconds: float | None = None
    layout: str = DEFAULT_LAYOUT  # the runtime the directory is written for (convert --layout)

    @property
    def default_family(self) -> str:
        return next(iter(self.families))

    def family(self, name: str | None = None) -> FamilyRecord:
        return self.families[name or self.default_family]

    @property
    def variants(self) -> dict[str, Variant]:
        """The default family's variants."""
        return self.family().variants

    @property
    def sherpa_metadata(self) -> dict[str, str]:
        """The default family's sherpa-onnx metadata."""
        return self.family().metadata

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool": {"name": "nemo2sherpa", "version": self.tool_version},
            "created": self.created,
            "conversion_seconds": self.conversion_seconds,
            "random_weights": self.random_weights,
            "layout": self.layout,
            "source": self.source,
            "model": self.model.to_dict(),
            "export": self.export,
            "families": {name: record.to_dict() for name, record in self.families.items()},
            "versions": self.versions,
            "files": {name: record.to_dict() for name, record in sorted(self.files.items())},
        }

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path = MANIFEST_NAME) -> "Manifest":
        """The manifest, or a UserError naming what is wrong: a manifest may have been edited by anyone. Variant file
        names must be plain names in the directory; the names under 'files' are checked where they are used
        (file_problems, publish)."""
        if not isinstance(data, Mapping):
            raise UserError.about(source, "is not a JSON object")
        if data.get("format") != FORMAT:
            raise UserError.about(source, f"is not a nemo2sherpa manifest (format {_short(data.get('format'))})")
        version = data.get("format_version")
        if version not in (1, FORMAT_VERSION) or isinstance(version, bool):
            raise UserError.about(source, f"has format_version {_short(version)}; "
                                          f"this nemo2sherpa reads 1 to {FORMAT_VERSION}")
        try:
            files = {}
            for name, rec in _mapping(data["files"], "files").items():
                # names are checked where they are used: file_problems() here, publish's own stricter rules there
                rec = _mapping(rec, f"files.{name}")
                sha256, size = rec["sha256"], rec["size"]
                if not isinstance(sha256, str) or not _SHA256.match(sha256):
                    raise ValueError(f"files.{name}.sha256 is not a sha256 hex digest")
                if not _is_int(size) or size < 0:
                    raise ValueError(f"files.{name}.size is not a byte count")
                files[name] = FileRecord(sha256=sha256, size=size)
            layout = data.get("layout", DEFAULT_LAYOUT)
            if not isinstance(layout, str):
                raise ValueError("layout is not text")
            families = _families(data, layout) if version == FORMAT_VERSION else _families_v1(data)
            source_info = dict(_mapping(data["source"], "source"))
            for key in _SOURCE_TEXT:
                if source_info.get(key) is not None and not isinstance(source_info[key], str):
                    raise ValueError(f"source.{key} is not text")
            if source_info.get("size") is not None and not _is_int(source_info["size"]):
                raise ValueError("source.size is not a byte count")
            seconds = data.get("conversion_seconds")
            if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                        or not math.isfinite(seconds)):
                raise ValueError("conversion_seconds is not a number")
            return cls(
                tool_version=str(_mapping(data["tool"], "tool")["version"]),
                created=str(data["created"]),
                source=source_info,
                model=_model_facts(_mapping(data["model"], "model")),
                versions={str(k): str(v) for k, v in _mapping(data["versions"], "versions").items()},
                export=dict(_mapping(data["export"], "export")),
                families=families,
                files=files,
                random_weights=_flag(data.get("random_weights", False), "random_weights"),
                conversion_seconds=seconds,
                layout=layout,
            )
        except KeyError as exc:
            missing = _short(exc.args[0] if exc.args else "?")
            raise UserError.about(source, f"is malformed (missing {missing})") from None
        except (TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
            raise UserError.about(source, f"is malformed ({_short(str(exc), 200, quote=False)})") from None


def _families(data: Mapping[str, Any], layout: str) -> dict[str, FamilyRecord]:
    from nemo2sherpa.families import registered_family

    families = {}
    for name, entry in _mapping(data["families"], "families").items():
        family = registered_family(name)
        if family is None:
            raise ValueError(f"families.{_short(name)} is not a model family this nemo2sherpa knows")
        if family.layout != layout:
            raise ValueError(f"families.{_short(name)} belongs to the {family.layout} layout, the manifest says "
                             f"{_short(layout)}")
        entry = _mapping(entry, f"families.{name}")
        roles = [role.name for role in family.roles]
        families[name] = FamilyRecord(
            variants=_variants(entry["variants"], f"families.{name}.variants", roles),
            metadata=_text_map(entry["metadata"], f"families.{name}.metadata"),
            model_type=str(entry.get("sherpa_onnx_model_type") or family.sherpa_model_type))
    if not families:
        raise ValueError("families is empty")
    return families


def _families_v1(data: Mapping[str, Any]) -> dict[str, FamilyRecord]:
    """Format 1 manifests describe one offline transducer."""
    sherpa = _mapping(data["sherpa_onnx"], "sherpa_onnx")
    return {"transducer": FamilyRecord(variants=_variants(data["variants"], "variants", list(_V1_GRAPHS)),
                                       metadata=_text_map(sherpa["metadata"], "sherpa_onnx.metadata"),
                                       model_type=str(sherpa.get("model_type", "nemo_transducer")))}


def _variants(value: Any, where: str, roles: list[str]) -> dict[str, Variant]:
    variants = {}
    for name, paths in _mapping(value, where).items():
        paths = _mapping(paths, f"{where}.{name}")
        for role in roles:
            _check_file_name(paths[role], f"{where}.{name}.{role}")
        variants[str(name)] = Variant({role: paths[role] for role in roles})
    return variants


def _text_map(value: Any, where: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in _mapping(value, where).items()}


def _short(value: Any, limit: int = 60, quote: bool = True) -> str:
    text = repr(value) if quote else str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ValueError(f"{where} is not a JSON object")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} is not true or false")
    return value


def _check_file_name(name: Any, where: str) -> None:
    """A plain file name inside the model directory: not absolute, no '..', no sub-directories, no backslashes."""
    if not isinstance(name, str):
        raise ValueError(f"{where} names a file with {_short(name)}, which is not text")
    pure = PurePosixPath(name)
    if (not name or name in (".", "..") or "/" in name or "\\" in name or pure.is_absolute()
            or any(ord(ch) < 32 for ch in name)):
        raise ValueError(f"{where} names {_short(name)}, which is not a plain file name inside the directory")


def _model_facts(data: Mapping[str, Any]) -> ModelFacts:
    """ModelFacts with every field of the type the rest of nemo2sherpa relies on."""
    architecture = _mapping(data["architecture"], "model.architecture")
    for f in fields(Architecture):
        value = architecture.get(f.name)
        if value is None:
            continue
        kind = str(f.type)
        if kind.startswith("tuple"):
            ok = isinstance(value, list) and all(_is_int(v) for v in value)
        elif kind.startswith("bool"):
            ok = isinstance(value, bool)
        elif kind.startswith("str"):
            ok = isinstance(value, str)
        elif kind.startswith("float"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = _is_int(value) and value >= -1
        if not ok:
            raise ValueError(f"model.architecture.{f.name} is {_short(value)}, not a {kind.split(' ')[0]}")
    if architecture.get("att_context_size") is not None and len(architecture["att_context_size"]) != 2:
        raise ValueError("model.architecture.att_context_size is not two numbers")
    if data.get("decoder_kind") not in DECODER_KINDS:
        raise ValueError(f"model.decoder_kind is {_short(data.get('decoder_kind'))}, not one of "
                         f"{', '.join(DECODER_KINDS)}")
    for key, positive in (("sample_rate", True), ("max_symbols_per_frame", False), ("parameters", False)):
        value = data.get(key)
        if value is not None and (not _is_int(value) or (positive and value <= 0)):
            raise ValueError(f"model.{key} is {_short(value)}, not a whole number")
    if data.get("normalize") is not None and not isinstance(data.get("normalize"), str):
        raise ValueError("model.normalize is not text")
    if data.get("frontend") is not None:
        _mapping(data["frontend"], "model.frontend")
    return ModelFacts.from_dict(data)


def read_manifest(directory: Path) -> Manifest | None:
    """The directory's manifest, None when it has none (a third-party directory), UserError when it is broken."""
    path = directory / MANIFEST_NAME
    if not path.exists():
        return None
    text = read_text(path)
    return Manifest.from_dict(parse_json(text, path), path)


def parse_json(text: str, source: str | Path) -> Any:
    """json.loads, with every way it fails on hostile text (deep nesting, 5000-digit numbers, NaN) as a UserError."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise UserError.about(source, f"is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:
        raise UserError.about(source, f"is not valid JSON ({_short(str(exc) or type(exc).__name__, 120, False)})"
                              ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


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
        try:
            _check_file_name(name, "the manifest")
        except ValueError as exc:
            problems.append(f"{exc}; not read")
            continue
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
