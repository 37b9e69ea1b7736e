"""Where NeMo's side of a validation comes from: the checkpoint a directory was converted from (found, never
downloaded, and proven to be that checkpoint by its sha256), and NeMo's result for each clip, cached on disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo2sherpa.errors import UserError
from nemo2sherpa.progress import Progress
from nemo2sherpa.validate.audio import Clip
from nemo2sherpa.validate.model_dir import ModelDir


@dataclass
class NemoReferences:
    """NeMo's result per clip name; where it came from ("cache" or "nemo", None when there is none); the NeMo model
    when it was loaded (its max_symbols, its graph-side blame); why references are missing, if they are."""

    by_clip: dict[str, Any] = field(default_factory=dict)
    kind: str | None = None
    nemo: Any = None
    reason: str | None = None


def recipe_of(model: ModelDir):
    """The recipe a directory was converted from, when its manifest names one this nemo2sherpa knows."""
    from nemo2sherpa.recipes import find_recipe

    if model.manifest is None:
        return None
    name = model.manifest.source.get("recipe")
    return find_recipe(name) if name else None


def find_checkpoint(nemo: Path | None, model: ModelDir) -> tuple[Path | None, str | None, str | None]:
    """(checkpoint path or None, its sha256 or None, why there is none): --nemo when given (and it must be the one
    the manifest names), else the bundled recipe or the Hugging Face cache; never a download."""
    from nemo2sherpa.hashing import sha256_file

    source = model.manifest.source if model.manifest else {}
    expected = source.get("sha256")
    if nemo is not None:
        if not nemo.is_file():
            raise UserError.about(nemo, "no such checkpoint file")
        digest = sha256_file(nemo)
        if expected and digest != expected:
            raise UserError.about(nemo, "is not the checkpoint this directory was converted from "
                                                f"(sha256 {digest[:12]}..., the manifest says {expected[:12]}...)")
        return nemo, digest, None
    if model.manifest is None:
        return None, None, "no manifest and no --nemo: nothing to compare with"
    if model.manifest.random_weights:
        return None, None, "random weights: there is no checkpoint to compare with"
    recipe = recipe_of(model)
    if source.get("kind") == "bundled" and recipe is not None and recipe.bundled_path():
        return recipe.bundled_path(), expected, None
    if source.get("repo_id") and source.get("filename"):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source["repo_id"], source["filename"],
                                        revision=source.get("resolved_revision"))
        if isinstance(cached, str):
            return Path(cached), expected, None
        return None, expected, (f"{source['repo_id']}/{source['filename']} is not in the Hugging Face cache; "
                                "pass --nemo PATH")
    return None, expected, "the checkpoint was a local file; pass --nemo PATH"


def nemo_references(options, model: ModelDir, clips: list[Clip], progress: Progress) -> NemoReferences:
    """NeMo's result for every clip, from the cache or computed now (only NeMo's, never the export's)."""
    from nemo2sherpa.validate.long_audio import reference_key
    from nemo2sherpa.validate.references import Reference, ReferenceStore

    checkpoint, digest, reason = find_checkpoint(options.nemo, model)
    if digest is None:
        return NemoReferences({}, None, None, reason)
    store = ReferenceStore(reference_key(digest, model.manifest, model.family.name))
    references = {c.name: r for c in clips if (r := store.load(c)) is not None}
    missing = [c for c in clips if c.name not in references]
    kind = "cache" if references else None
    nemo = None
    if missing:
        if checkpoint is None or not options.use_nemo:
            return NemoReferences(references, kind, None, (reason or "NeMo disabled (--no-nemo)")
                                  + f"; {len(missing)} of {len(clips)} clips have no cached NeMo reference")
        try:
            from nemo2sherpa.validate.nemo_reference import NemoReference
        except ImportError:
            return NemoReferences(references, kind, None,
                                  "NeMo is not installed (pip install nemo2sherpa[convert])")
        with progress.stage(f"NeMo reference for {len(missing)} clip(s)"):
            nemo = NemoReference(checkpoint, threads=options.threads, manifest=model.manifest, family=model.family)
            for clip in missing:
                result = nemo.run(clip.audio)
                reference = Reference(tokens=result.tokens, text=result.text, features=result.features,
                                      encoded=result.encoded)
                store.save(clip, reference)
                references[clip.name] = reference
        kind = "nemo"
    return NemoReferences(references, kind, nemo, None)
