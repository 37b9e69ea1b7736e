"""What publishing a model directory uploads, and every reason to refuse it.

A published repository is only as trustworthy as the directory behind it, so the checks run before any card is
written or any byte leaves the machine: the directory must trace to a source (manifest.json), hold real weights,
still match the hashes its manifest recorded, and carry a passing validation report written for this very
directory (or the user says --force, and the card says so). The same file list feeds the dry run and the upload,
so what --dry-run shows is exactly what would be uploaded.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from nemo2sherpa.confinement import is_plain_file_inside
from nemo2sherpa.errors import UserError
from nemo2sherpa.families import family_named
from nemo2sherpa.licence import HOW, Licence, resolve_licence
from nemo2sherpa.manifest import MANIFEST_NAME, Manifest, file_problems, read_manifest
from nemo2sherpa.validation_report import (
    PLOT,
    REPORT_JSON,
    REPORT_MD,
    SEAL,
    ValidationReport,
    read_report,
    seal_problems,
)

VALIDATION_DIR = "validation"
VALIDATION_FILES = (REPORT_JSON, REPORT_MD, PLOT, SEAL)  # what validate writes; nothing else there is published
CARD_NAME = "README.md"


@dataclass(frozen=True)
class RepoFile:
    """One file of the repository: read from `local`, or `content` generated here (the card)."""

    path_in_repo: str
    local: Path | None = None
    content: bytes | None = None
    sha256: str | None = None  # when known (from the verified manifest), so the upload need not hash it again

    @property
    def size(self) -> int:
        return len(self.content) if self.content is not None else self.local.stat().st_size  # type: ignore[union-attr]


@dataclass(frozen=True)
class Validation:
    """The validation evidence found for the directory."""

    report_path: Path
    report: ValidationReport | None  # None: there is no report
    files: dict[str, Path] = field(default_factory=dict)  # name under validation/ -> local file

    @property
    def passed(self) -> bool:
        return self.report is not None and self.report.passed and not self.report.failed_checks()


@dataclass(frozen=True)
class PublishPlan:
    directory: Path
    manifest: Manifest
    validation: Validation
    forced_because: str | None  # why the directory goes out without a passing report (--force), else None
    licence: Licence | None = None  # None only with --force: the card then says it was not recorded

    @property
    def forced(self) -> bool:
        return self.forced_because is not None

    def model_files(self) -> list[RepoFile]:
        """manifest.json and every file it records, hashes known."""
        files = [RepoFile(MANIFEST_NAME, local=self.directory / MANIFEST_NAME)]
        files += [RepoFile(name, local=self.directory / name, sha256=record.sha256)
                  for name, record in sorted(self.manifest.files.items())]
        return files

    def validation_files(self) -> list[RepoFile]:
        return [RepoFile(f"{VALIDATION_DIR}/{name}", local=path) for name, path in self.validation.files.items()]

    def repo_files(self, card: str) -> list[RepoFile]:
        """Everything the repository receives: the card, the model files, the validation files."""
        return [RepoFile(CARD_NAME, content=card.encode("utf-8")), *self.model_files(), *self.validation_files()]


def plan_publish(directory: Path, report_path: Path | None = None, force: bool = False,
                 licence_option: str | None = None) -> PublishPlan:
    """Check the directory (cheap refusals first, hashes last) and find its validation evidence."""
    directory = Path(directory).expanduser()
    if not directory.exists():
        raise UserError.about(directory, "no such model directory")
    if not directory.is_dir():
        raise UserError.about(directory, "is not a directory")
    if not (directory / MANIFEST_NAME).is_file():
        raise UserError.about(directory, f"has no {MANIFEST_NAME}, so it cannot be traced to a source; publish "
                                         "directories written by `nemo2sherpa convert`")
    manifest = read_manifest(directory)
    assert manifest is not None
    if manifest.random_weights:
        raise UserError.about(directory / MANIFEST_NAME, "records random weights (--random-weights): an architecture "
                                                         "stand-in that transcribes nothing is never published")
    _check_names(directory, manifest)
    linked = [name for name in [MANIFEST_NAME, *manifest.files] if not is_plain_file_inside(directory, name)]
    if linked:
        raise UserError.about(directory, f"{', '.join(linked)}: a link or not a regular file; publish uploads only "
                                         "regular files inside the model directory")
    problems = file_problems(directory, manifest.files)
    if problems:
        raise UserError.about(directory, f"no longer matches its {MANIFEST_NAME}: {'; '.join(problems)}")
    validation = find_validation(directory, manifest, report_path)
    forced_because = _unvalidated_because(validation)
    if forced_because is not None and not force:
        raise UserError.about(validation.report_path,
                              f"{forced_because}; run `nemo2sherpa validate {directory}` (or pass --force to publish "
                              "it unvalidated, which the card states)")
    licence = _licence(directory, manifest, licence_option, force)
    return PublishPlan(directory=directory, manifest=manifest, validation=validation, forced_because=forced_because,
                       licence=licence)


def _licence(directory: Path, manifest: Manifest, option: str | None, force: bool) -> Licence | None:
    from nemo2sherpa.recipes import recipe_of_source

    recipe = recipe_of_source(manifest.source)
    licence = resolve_licence(option, manifest.source, recipe.license if recipe is not None else None)
    if licence is None and not force:
        raise UserError.about(directory / MANIFEST_NAME, f"records no licence for its source (a local checkpoint): "
                                                         f"give {HOW}")
    return licence


def _check_names(directory: Path, manifest: Manifest) -> None:
    """Manifest file names become repository paths: plain names inside the directory only."""
    reserved = {CARD_NAME.lower(), MANIFEST_NAME}
    for name in manifest.files:
        pure = PurePosixPath(name)
        if (not name or pure.is_absolute() or "\\" in name or any(part in ("", ".", "..") for part in pure.parts)
                or name.lower() in reserved or pure.parts[0] == VALIDATION_DIR):
            raise UserError.about(directory / MANIFEST_NAME, f"lists a file publish cannot upload as is: {name!r}")


def _unvalidated_because(validation: Validation) -> str | None:
    report = validation.report
    if report is None:
        return "there is no validation report"
    if validation.passed:
        return None
    if report.verdict == "unproven":
        return "the validation proved nothing about fidelity to the checkpoint (verdict unproven)"
    return f"the validation failed ({', '.join(report.failed_checks()) or 'passed is not true'})"


def find_validation(directory: Path, manifest: Manifest, report_path: Path | None) -> Validation:
    path = Path(report_path).expanduser() if report_path else directory / VALIDATION_DIR / REPORT_JSON
    report = read_report(path)
    if report is None:
        if report_path is not None:
            raise UserError.about(path, "no such validation report")
        return Validation(report_path=path, report=None)
    _check_correspondence(path, report, directory, manifest)
    changed = seal_problems(path, report)
    if changed:
        raise UserError.about(path.parent, f"{'; '.join(changed)}; run `nemo2sherpa validate {directory}` again")
    files = {name: path.parent / name for name in VALIDATION_FILES if (path.parent / name).is_file()}
    files[REPORT_JSON] = path  # --report may name it differently
    return Validation(report_path=path, report=report, files=dict(sorted(files.items())))


def _check_correspondence(path: Path, report: ValidationReport, directory: Path, manifest: Manifest) -> None:
    """A report is evidence only for the directory it was written for: same name, variant, files and source."""
    name = directory.resolve().name
    if report.model_dir != name:
        raise UserError.about(path, f"was written for model directory {report.model_dir!r}, not {name!r}; "
                                    "validate this directory")
    family = report.family or manifest.default_family  # reports before families were transducers
    if family not in manifest.families:
        raise UserError.about(path, f"validated a {family} model, which {MANIFEST_NAME} does not have "
                                    f"(it has {', '.join(manifest.families)})")
    variants = manifest.family(family).variants
    variant = variants.get(report.variant)
    if variant is None:
        raise UserError.about(path, f"validated variant {report.variant!r}, which {MANIFEST_NAME} does not have "
                                    f"(it has {', '.join(sorted(variants))})")
    expected = {**variant.graph_files(), "tokens": family_named(family).tokens_file}
    if report.files != expected:
        raise UserError.about(path, f"validated files {_show(report.files)}, but variant {report.variant} of "
                                    f"this directory is {_show(expected)}")
    source = report.model.get("source")
    if source != manifest.source:
        ours, theirs = manifest.source.get("sha256"), (source or {}).get("sha256")
        detail = f"checkpoint sha256 {theirs}, this directory's is {ours}" if theirs and ours and theirs != ours \
            else "its model.source differs from this directory's manifest"
        raise UserError.about(path, f"was written for another conversion ({detail}); validate this directory")


def _show(files: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(files.items()))


def write_tree(files: list[RepoFile], staging: Path) -> Path:
    """Write the repository tree into `staging` (new or empty), atomically; large files hard-linked when possible."""
    from nemo2sherpa.staging import staged_directory

    staging = Path(staging).expanduser()
    if staging.exists() or staging.is_symlink():
        if not staging.is_dir() or staging.is_symlink():
            raise UserError.about(staging, "exists and is not a directory")
        if any(staging.iterdir()):
            raise UserError.about(staging, "exists and is not empty; give a new or empty directory for --dry-run")
        staging.rmdir()  # staged_directory builds it beside and renames it into place
    with staged_directory(staging) as partial:
        for item in files:
            target = partial / item.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            if item.content is not None:
                target.write_bytes(item.content)
                os.chmod(target, 0o644)
            else:
                _link_or_copy(item.local, target)  # type: ignore[arg-type]
        for folder in [p for p in partial.rglob("*") if p.is_dir()]:
            os.chmod(folder, 0o755)
    return staging


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link costs no space for multi-GB weights; other filesystems or permissions get a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)
