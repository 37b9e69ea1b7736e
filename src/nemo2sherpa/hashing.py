"""Streaming SHA-256, so multi-gigabyte weight files are hashed without being read into memory."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

_CHUNK = 8 * 1024 * 1024


def sha256_stream(stream: BinaryIO, length: int | None = None) -> str:
    """Hash `length` bytes (or everything) from the stream's current position."""
    digest = hashlib.sha256()
    remaining = length
    while remaining is None or remaining > 0:
        chunk = stream.read(_CHUNK if remaining is None else min(_CHUNK, remaining))
        if not chunk:
            break
        digest.update(chunk)
        if remaining is not None:
            remaining -= len(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as stream:
        return sha256_stream(stream)
