"""Turn what the user typed (recipe name, Hugging Face repo id, local path) into a local .nemo file and its provenance.

Downloads go through huggingface_hub, so its cache, resumable downloads, HF_TOKEN, HF_HUB_OFFLINE and progress bars
all behave as users of the Hub expect.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo2sherpa.errors import UserError
from nemo2sherpa.recipes import Recipe, find_recipe, recipe_for_repo, suggestion

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedSource:
    path: Path
    provenance: dict[str, Any] = field(default_factory=dict)
    recipe: Recipe | None = None

    @property
    def url(self) -> str:
        """The public home of the checkpoint, or a stand-in naming the file (never a local path)."""
        if self.provenance.get("repo_id"):
            return f"https://huggingface.co/{self.provenance['repo_id']}"
        return f"nemo2sherpa://local/{self.path.name}"


def resolve_source(spec: str, revision: str | None = None) -> ResolvedSource:
    """Local file first (a path wins over a same-named recipe), then recipe, then repo id."""
    candidate = Path(spec).expanduser()
    looks_like_path = spec.endswith(".nemo") or (os.sep in spec and not _REPO_ID.match(spec))
    if candidate.exists() or looks_like_path:
        return _local(candidate, revision)
    recipe = find_recipe(spec)
    if recipe is not None:
        return _from_recipe(recipe, revision)
    if _REPO_ID.match(spec):
        return _from_repo(spec, revision, recipe_for_repo(spec), filename=None)
    raise UserError(f"{spec}: not a local file, a known recipe or a Hugging Face repo id (owner/name); "
                    f"{suggestion(spec)}")


def _local(path: Path, revision: str | None) -> ResolvedSource:
    if revision:
        raise UserError(f"{path}: --revision applies to Hugging Face sources, not to a local file")
    if not path.exists():
        raise UserError.about(path, "no such file")
    if path.is_dir():
        raise UserError.about(path, "is a directory; give the .nemo checkpoint file")
    return ResolvedSource(path=path.resolve(), provenance={"kind": "local", "filename": path.name})


def _from_recipe(recipe: Recipe, revision: str | None) -> ResolvedSource:
    bundled = recipe.bundled_path()
    if bundled is not None:
        if revision:
            raise UserError(f"{recipe.name}: --revision does not apply to a checkpoint shipped with nemo2sherpa")
        if not bundled.is_file():
            raise UserError(f"{recipe.name}: the bundled checkpoint {recipe.bundled} is missing from this install")
        return ResolvedSource(
            path=bundled, provenance={"kind": "bundled", "recipe": recipe.name, "filename": bundled.name},
            recipe=recipe,
        )
    assert recipe.repo_id, f"recipe {recipe.name} has neither repo_id nor bundled"
    return _from_repo(recipe.repo_id, revision, recipe, filename=recipe.filename)


def _from_repo(repo_id: str, revision: str | None, recipe: Recipe | None, filename: str | None) -> ResolvedSource:
    path = _download(repo_id, revision, filename)
    provenance = {
        "kind": "recipe" if recipe else "huggingface",
        "recipe": recipe.name if recipe else None,
        "repo_id": repo_id,
        "revision": revision or "main",
        "resolved_revision": _commit_of(path),
        "filename": path.name,
    }
    return ResolvedSource(path=path, provenance=provenance, recipe=recipe)


def _download(repo_id: str, revision: str | None, filename: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        # allow_patterns keeps the download to the checkpoint; offline, the cached snapshot is used as is.
        snapshot = Path(snapshot_download(repo_id, revision=revision, allow_patterns=["*.nemo"]))
    except GatedRepoError:
        raise UserError(f"{repo_id}: the repository is gated; accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise UserError(f"{repo_id}: no such Hugging Face repository (or it is private; set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise UserError(f"{repo_id}: revision {revision!r} does not exist") from None
    except LocalEntryNotFoundError:
        raise UserError(
            f"{repo_id}: not in the local Hugging Face cache and the Hub cannot be reached "
            "(offline mode or no network)"
        ) from None
    except OSError as exc:
        raise UserError(f"{repo_id}: download failed ({exc})") from None
    found = sorted(p for p in snapshot.rglob("*.nemo") if p.is_file())
    if filename:
        wanted = [p for p in found if p.name == filename]
        if wanted:
            return wanted[0]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"{repo_id}: the repository holds no .nemo checkpoint")
    names = ", ".join(p.relative_to(snapshot).as_posix() for p in found)
    raise UserError(f"{repo_id}: the repository holds several .nemo files ({names}); download one and pass its path")


def _commit_of(path: Path) -> str | None:
    """huggingface_hub stores files under .../snapshots/<commit>/...: the resolved revision is that folder name."""
    parts = path.parts
    if "snapshots" in parts:
        index = len(parts) - 1 - parts[::-1].index("snapshots")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None
