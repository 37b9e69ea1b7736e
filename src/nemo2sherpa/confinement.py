"""Files of a model directory stay inside it: what validate reads and publish uploads is never reached through a link
or a name that leads outside.

Model directories come from other people (a downloaded export, a shared drive). A `tokens.txt` that is a symlink to
`~/.cache/huggingface/token`, or an ONNX external-data location of `/etc/shadow` or `../../secret`, would otherwise
put that file's content into a report or a published repository, or reveal whether it exists and its size.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


def outside_reason(directory: Path, name: str) -> str | None:
    """Why `name` (a file name a directory's metadata gives) would lead outside `directory`, or None when it stays
    inside: absolute names, '..' parts, and links (at any depth) whose target is elsewhere are all outside."""
    if not name or PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or "\\" in name:
        return f"{name!r} is not a plain name inside the directory"
    if any(part == ".." for part in PurePosixPath(name).parts):
        return f"{name!r} climbs out of the directory"
    root = os.path.realpath(directory)
    target = os.path.realpath(os.path.join(directory, name))
    if os.path.commonpath([root, target]) != root:
        return f"{name} is a link to a file outside the directory"
    return None


def is_plain_file_inside(directory: Path, name: str) -> bool:
    """A regular file, reached without any link, inside `directory`: what publish may upload."""
    path = Path(directory) / name
    if outside_reason(directory, name) is not None:
        return False
    current = Path(directory)
    for part in PurePosixPath(name).parts:
        current = current / part
        if current.is_symlink():
            return False
    return path.is_file()
