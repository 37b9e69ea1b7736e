"""publish(): check the directory, render the card, then either stage the tree (--dry-run) or upload it.

Both ends consume the same file list, so a dry run shows byte for byte what an upload would send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nemo2sherpa.errors import UserError
from nemo2sherpa.progress import Progress
from nemo2sherpa.publish.card import render_card
from nemo2sherpa.publish.plan import PublishPlan, RepoFile, plan_publish, write_tree

# The Hub's rule for repository names, as far as a typo is concerned: owner/name, no '--' or '..', at most 96.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


@dataclass(frozen=True)
class PublishOptions:
    directory: Path
    repo_id: str  # always required: the card names the repository it lives in
    private: bool = False
    revision: str = "main"
    dry_run: Path | None = None  # a staging directory: write the tree there, touch no network
    force: bool = False  # publish without a passing validation report (the card says so)
    report: Path | None = None  # default: DIR/validation/report.json
    commit_message: str | None = None
    license: str | None = None  # a Hub licence id or other:NAME:URL; default: the manifest's, else the recipe's
    quiet: bool = False  # no huggingface_hub progress bars either
    endpoint: str | None = None  # the Hub's address; None: huggingface_hub's (HF_ENDPOINT, else huggingface.co)


@dataclass(frozen=True)
class PublishResult:
    location: str  # what the CLI prints: the repository URL, or the staging directory of a dry run
    files: tuple[str, ...]  # repository paths, in upload order
    forced: bool
    dry_run: bool
    commit_url: str | None = None


def publish(options: PublishOptions, progress: Progress | None = None) -> PublishResult:
    progress = progress or Progress(enabled=not options.quiet)
    _check_options(options)
    with progress.stage(f"check {options.directory}"):
        plan = plan_publish(Path(options.directory), options.report, options.force, options.license)
    if plan.forced:
        progress.note(f"WARNING: publishing without a passing validation ({plan.forced_because}); the card says so")
    card = render_card(plan, options.repo_id, options.revision)
    files = plan.repo_files(card)
    names = tuple(f.path_in_repo for f in files)
    if options.dry_run is not None:
        with progress.stage(f"write {len(files)} files into {options.dry_run}"):
            staged = write_tree(files, Path(options.dry_run))
        return PublishResult(location=str(staged), files=names, forced=plan.forced, dry_run=True)

    from nemo2sherpa.publish.upload import UploadTarget, upload

    target = UploadTarget(repo_id=options.repo_id, revision=options.revision, private=options.private,
                          endpoint=options.endpoint)
    done = upload(files, target, options.commit_message or default_commit_message(plan),
                  commit_description=_commit_description(plan, files), progress=progress,
                  progress_bars=not options.quiet)
    progress.note(f"published {len(files)} files: {done.commit_url}")
    return PublishResult(location=done.url, files=names, forced=plan.forced, dry_run=False,
                         commit_url=done.commit_url)


def _check_options(options: PublishOptions) -> None:
    repo_id = options.repo_id or ""
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or len(repo_id) > 96:
        raise UserError(f"{repo_id!r}: --repo-id must be a Hugging Face repository id, owner/name")
    if not options.revision or options.revision != options.revision.strip() or " " in options.revision:
        raise UserError(f"{options.revision!r}: --revision must be a branch name")


def default_commit_message(plan: PublishPlan) -> str:
    source = plan.manifest.source
    origin = source.get("repo_id") or Path(str(source.get("filename") or "checkpoint")).name
    verdict = "UNVALIDATED (--force)" if plan.forced else "validated"
    return f"Upload {origin} for sherpa-onnx ({verdict}, nemo2sherpa {plan.manifest.tool_version})"


def _commit_description(plan: PublishPlan, files: list[RepoFile]) -> str:
    lines = [f"Converted by nemo2sherpa {plan.manifest.tool_version} on {plan.manifest.created}."]
    if plan.validation.report is not None:
        lines.append(f"Validation: {'passed' if plan.validation.passed else 'FAILED'} "
                     f"({plan.validation.report.created}).")
    if plan.forced:
        lines.append(f"Published with --force: {plan.forced_because}.")
    lines.append(f"{len(files)} files.")
    return "\n".join(lines)
