"""report.json as a typed record: what validate writes and publish reads, checked once on the way in.

Like manifest.json, the report is evidence that travels (published beside the model), so it is read as data that may
have been edited: every field publish relies on is type-checked here, and a malformed report is refused with one line
naming the file. The figures inside each check (tables of timings, rates) stay a free-form mapping: they are shown,
never trusted for a decision; the decisions (verdict, statuses, which files were validated) are typed.

Pure Python: publish reads reports without NeMo, torch or onnxruntime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nemo2sherpa.errors import UserError

FORMAT = "nemo2sherpa-validation"
FORMAT_VERSION = 1
CHECK_ORDER = ("contract", "graph_fidelity", "transcripts", "providers", "speed", "streaming", "precision",
               "long_audio", "attention")
REPORT_JSON, REPORT_MD, PLOT = "report.json", "report.md", "decode_time.png"
# report.json's own sha256, written beside it at validation time: publish uploads the report only as validate wrote it
SEAL = "report.json.sha256"
STATUSES = ("passed", "failed", "skipped")
# passed: fidelity to NeMo was proven and nothing failed; failed: something failed; unproven: nothing failed, but no
# check could compare the export with its checkpoint (no NeMo, no cached reference, random weights)
VERDICTS = ("passed", "failed", "unproven")


@dataclass
class CheckRecord:
    """One check as the report stores it: its status, why it was skipped, its problems, and its figures."""

    status: str
    reason: str | None = None
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        """A figure by name (or status/reason/problems), as the tables that show them look them up."""
        if key in ("status", "reason", "problems"):
            return getattr(self, key)
        return self.figures.get(key, default)

    @property
    def ran(self) -> bool:
        return self.status in ("passed", "failed")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.reason:
            out["reason"] = self.reason
        out["problems"] = list(self.problems)
        out.update(self.figures)
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "CheckRecord":
        if not isinstance(data, dict) or data.get("status") not in STATUSES:
            raise ValueError(f"check {where!r} has no status among {', '.join(STATUSES)}")
        problems = data.get("problems") or []
        if not isinstance(problems, list):
            raise ValueError(f"check {where!r} has problems that are not a list")
        reason = data.get("reason")
        figures = {k: v for k, v in data.items() if k not in ("status", "reason", "problems")}
        return cls(status=data["status"], reason=None if reason is None else str(reason),
                   problems=[str(p) for p in problems], figures=figures)


@dataclass
class ValidationReport:
    tool_version: str
    created: str
    model_dir: str  # the directory's name (never its path: reports get published)
    family: str
    variant: str
    files: dict[str, str]  # role -> file name, and "tokens"
    verdict: str
    providers: list[str] = field(default_factory=list)
    thresholds: dict[str, Any] = field(default_factory=dict)
    audio: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, CheckRecord] = field(default_factory=dict)
    proven: list[str] = field(default_factory=list)  # what the checks established, in words
    not_proven: list[str] = field(default_factory=list)  # what they could not, and why
    environment: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)  # the manifest's source and facts, when there was one
    artifacts: dict[str, str] = field(default_factory=dict)  # report.md, decode_time.png -> sha256 when written

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def check(self, name: str) -> CheckRecord | None:
        return self.checks.get(name)

    def failed_checks(self) -> list[str]:
        return [name for name, check in self.checks.items() if check.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(self.checks, key=lambda n: CHECK_ORDER.index(n) if n in CHECK_ORDER else len(CHECK_ORDER))
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool_version": self.tool_version,
            "created": self.created,
            "model_dir": self.model_dir,
            "family": self.family,
            "variant": self.variant,
            "files": dict(self.files),
            "verdict": self.verdict,
            "passed": self.passed,
            "proven": list(self.proven),
            "not_proven": list(self.not_proven),
            "providers": list(self.providers),
            "thresholds": dict(self.thresholds),
            "audio": dict(self.audio),
            "checks": {name: self.checks[name].to_dict() for name in ordered},
            "environment": dict(self.environment),
            "model": dict(self.model),
            "artifacts": dict(self.artifacts),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path) -> "ValidationReport":
        """The report in `data`, or UserError naming `path` and the first thing wrong with it."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError.about(path, "is not a nemo2sherpa validation report")
        if data.get("format_version") != FORMAT_VERSION:
            raise UserError.about(path, f"has format_version {data.get('format_version')!r}; this nemo2sherpa reads "
                                        f"{FORMAT_VERSION}")
        for key, kind in (("passed", bool), ("checks", dict), ("files", dict), ("model_dir", str), ("variant", str)):
            if not isinstance(data.get(key), kind):
                raise UserError.about(path, f"is malformed ({key!r} missing or not a {kind.__name__})")
        verdict = data.get("verdict", "passed" if data["passed"] else "failed")  # reports before verdicts
        if verdict not in VERDICTS or (verdict == "passed") != data["passed"]:
            raise UserError.about(path, f"is malformed (verdict {verdict!r} with passed {data['passed']!r})")
        try:
            checks = {str(name): CheckRecord.from_dict(check, str(name)) for name, check in data["checks"].items()}
        except ValueError as exc:
            raise UserError.about(path, f"is malformed ({exc})") from None
        if not all(isinstance(v, str) for v in data["files"].values()):
            raise UserError.about(path, "is malformed ('files' holds something other than file names)")

        def mapping(key: str) -> dict[str, Any]:
            value = data.get(key)
            return value if isinstance(value, dict) else {}

        def strings(key: str) -> list[str]:
            value = data.get(key)
            return [str(v) for v in value] if isinstance(value, list) else []

        return cls(tool_version=str(data.get("tool_version", "?")), created=str(data.get("created", "?")),
                   model_dir=data["model_dir"], family=str(data.get("family") or ""), variant=data["variant"],
                   files=dict(data["files"]), verdict=verdict, providers=strings("providers"),
                   thresholds=mapping("thresholds"), audio=mapping("audio"), checks=checks,
                   proven=strings("proven"), not_proven=strings("not_proven"), environment=mapping("environment"),
                   model=mapping("model"), artifacts={str(k): str(v) for k, v in mapping("artifacts").items()})


def read_report(path: Path) -> ValidationReport | None:
    """The report at `path`, None when there is none, UserError when it is not a readable nemo2sherpa report."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file():
        raise UserError.about(path, "is not a regular file (a link or something else): reports are read only as "
                                    "plain files inside the model directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError.about(path, f"is not valid JSON ({exc})") from None
    return ValidationReport.from_dict(data, path)


def seal_problems(path: Path, report: ValidationReport) -> list[str]:
    """What changed in a validation folder since validate wrote it: report.json against its seal, report.md and the
    plot against the hashes the report records; links and non-regular files are problems too."""
    from nemo2sherpa.hashing import sha256_file

    folder = path.parent
    problems = []
    seal = folder / SEAL
    if seal.is_symlink() or not seal.is_file():
        problems.append(f"{SEAL} is missing (validate writes it beside report.json)")
    elif seal.read_text(encoding="utf-8").split()[:1] != [sha256_file(path)]:
        problems.append(f"{path.name} changed after validation (its sha256 is not the one in {SEAL})")
    for name in (REPORT_MD, PLOT):
        file = folder / name
        if not file.exists() and not file.is_symlink():
            continue
        if file.is_symlink() or not file.is_file():
            problems.append(f"{name} is a link or not a regular file")
        elif report.artifacts.get(name) != sha256_file(file):
            problems.append(f"{name} is not the file validate wrote (sha256 differs from the report's)")
    return problems
