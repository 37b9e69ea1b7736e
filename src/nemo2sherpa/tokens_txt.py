"""tokens.txt, the vocabulary file sherpa-onnx reads: one '<piece> <id>' per line, ids 0..V, blank last.

onnx-asr's vocab.txt is the same text under another name (it splits each line on one space and finds the blank by
its name, <blk>): which name a directory gets is its family's decision (Family.companion_files)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nemo2sherpa.errors import UserError, read_text

BLANK = "<blk>"


def render_tokens(pieces: Sequence[str]) -> str:
    """The file's text for a vocabulary WITHOUT blank; the blank is appended with the last id."""
    for index, piece in enumerate(pieces):
        if not isinstance(piece, str) or not piece or any(ch.isspace() for ch in piece):
            # sherpa-onnx splits each line on whitespace: such a piece would shift every later id.
            raise UserError(f"token {index} ({piece!r}) is empty or contains whitespace; tokens.txt cannot hold it")
        if "\x00" in piece or not _encodable(piece):
            raise UserError(f"token {index} ({piece!r}) is not valid text; tokens.txt cannot hold it")
    lines = [f"{piece} {index}" for index, piece in enumerate(pieces)]
    lines.append(f"{BLANK} {len(pieces)}")
    return "\n".join(lines) + "\n"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def write_tokens(path: Path, pieces: Sequence[str]) -> None:
    path.write_text(render_tokens(pieces), encoding="utf-8")


def parse_tokens(text: str, source: str | Path = "tokens.txt") -> list[str]:
    """Pieces indexed by id, blank included, or a UserError that names the line at fault.

    Read as sherpa-onnx reads it: ids are plain ASCII decimal numbers (Python's int() would also take '1_0', '+3'
    and other scripts' digits, which sherpa-onnx reads differently or not at all)."""
    if not isinstance(text, str):
        raise UserError.about(source, "is not text")
    by_id: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise UserError.about(source, f"line {number} is not '<piece> <id>': {_show(line)}")
        piece, raw_id = parts
        negative = raw_id.startswith("-") and _decimal(raw_id[1:])
        if negative:
            raise UserError.about(source, f"line {number} has a negative id {_show(raw_id)}")
        if not _decimal(raw_id):
            raise UserError.about(source, f"line {number} has a non-integer id: {_show(line)}")
        if len(raw_id.lstrip("0")) > 9:
            raise UserError.about(source, f"line {number} has an id too large for a vocabulary: {_show(raw_id)}")
        token_id = int(raw_id)
        if token_id in by_id:
            raise UserError.about(source, f"line {number} repeats id {token_id}")
        by_id[token_id] = piece
    if not by_id:
        raise UserError.about(source, "holds no tokens")
    expected = set(range(len(by_id)))
    if set(by_id) != expected:
        gaps = sorted(expected - set(by_id))[:5]
        raise UserError.about(source, f"ids are not contiguous from 0 (missing {gaps})")
    return [by_id[i] for i in range(len(by_id))]


def _decimal(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()


def _show(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def read_tokens(path: Path) -> list[str]:
    text = read_text(path)
    return parse_tokens(text, path)
