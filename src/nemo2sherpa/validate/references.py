"""NeMo's view of each clip (features, encoder output, token ids, text), computed once and cached on disk.

Keyed by the checkpoint's sha256 and the clip's samples, so a re-run validates graphs and transcripts without NeMo,
and a different checkpoint or a changed clip can never hit a stale entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nemo2sherpa.validate.audio import Clip


@dataclass(frozen=True)
class Reference:
    tokens: list[int]
    text: str
    features: np.ndarray  # [mels, T]
    encoded: np.ndarray  # [D, T'] (valid frames only)


def cache_root() -> Path:
    explicit = os.environ.get("NEMO2SHERPA_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nemo2sherpa"


class ReferenceStore:
    def __init__(self, checkpoint_sha256: str, root: Path | None = None) -> None:
        self.directory = (root or cache_root()) / "references" / checkpoint_sha256[:32]

    def _path(self, clip: Clip) -> Path:
        return self.directory / f"{clip.digest[:32]}.npz"

    def load(self, clip: Clip) -> Reference | None:
        path = self._path(clip)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return Reference(tokens=[int(t) for t in data["tokens"]], text=str(data["text"]),
                                 features=data["features"], encoded=data["encoded"])
        except (OSError, KeyError, ValueError):
            return None  # a damaged cache entry is recomputed, never trusted

    def save(self, clip: Clip, reference: Reference) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(clip)
        temporary = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(temporary, tokens=np.asarray(reference.tokens, dtype=np.int64),
                            text=np.asarray(reference.text), features=reference.features, encoded=reference.encoded)
        os.replace(temporary, path)
