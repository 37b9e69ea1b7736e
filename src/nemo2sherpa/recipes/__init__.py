"""The recipe catalog: named checkpoints, where they live, and the architecture a download must match.

The facts are data in catalog.toml; this module only reads and queries them.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import Architecture

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

_CATALOG = "catalog.toml"


@dataclass(frozen=True)
class Recipe:
    name: str
    license: str
    description: str
    architecture: Architecture
    repo_id: str | None = None
    filename: str | None = None
    bundled: str | None = None  # a checkpoint shipped inside the package, relative to the package root
    dataset: str | None = None  # its test set (JSONL), relative to the package root: validate's default audio
    languages: tuple[str, ...] = ()
    params: int | None = None
    unverified: tuple[str, ...] = field(default_factory=tuple)

    @property
    def hf_url(self) -> str | None:
        return f"https://huggingface.co/{self.repo_id}" if self.repo_id else None

    def bundled_path(self) -> Path | None:
        return _package_path(self.bundled)

    def dataset_path(self) -> Path | None:
        return _package_path(self.dataset)

    def checked_architecture(self) -> Architecture:
        """The part of the architecture a real checkpoint is held to (unverified fields blanked)."""
        values = self.architecture.to_dict()
        for name in self.unverified:
            values[name] = None
        return Architecture.from_dict(values)


def _package_path(relative: str | None) -> Path | None:
    return Path(str(resources.files("nemo2sherpa").joinpath(relative))) if relative else None


def _parse(name: str, table: dict) -> Recipe:
    table = dict(table)
    try:
        architecture = Architecture.from_dict(table.pop("architecture"))
        return Recipe(
            name=name,
            architecture=architecture,
            languages=tuple(table.pop("languages", ())),
            unverified=tuple(table.pop("unverified", ())),
            **table,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"recipe catalog entry {name!r} is malformed: {exc}") from exc


@lru_cache(maxsize=1)
def load_catalog() -> dict[str, Recipe]:
    text = resources.files(__name__).joinpath(_CATALOG).read_text(encoding="utf-8")
    return {name: _parse(name, table) for name, table in tomllib.loads(text).items()}


def find_recipe(name: str) -> Recipe | None:
    return load_catalog().get(name)


def suggestion(name: str) -> str:
    """'did you mean X?' for a mistyped recipe name, else where to find the names."""
    close = difflib.get_close_matches(name, list(load_catalog()), n=3)
    return f"did you mean {', '.join(close)}?" if close else "`nemo2sherpa recipes` lists the recipes"


def get_recipe(name: str) -> Recipe:
    recipe = find_recipe(name)
    if recipe is None:
        raise UserError(f"{name}: not a known recipe; {suggestion(name)}")
    return recipe


def recipe_for_repo(repo_id: str) -> Recipe | None:
    """The recipe whose Hugging Face repository this is, so downloads by repo id are checked too."""
    for recipe in load_catalog().values():
        if recipe.repo_id and recipe.repo_id.lower() == repo_id.lower():
            return recipe
    return None


def recipe_of_source(source: Mapping[str, Any]) -> Recipe | None:
    """The catalog entry behind a manifest's source: by recipe name first, then by repository."""
    recipe = find_recipe(str(source["recipe"])) if source.get("recipe") else None
    if recipe is None and source.get("repo_id"):
        recipe = recipe_for_repo(str(source["repo_id"]))
    return recipe
