"""The one exception type for mistakes a user can make or fix.

Anything raised as :class:`UserError` is a refusal, not a bug: the CLI prints its message on one line and exits 1,
without a traceback. Every other exception is a bug in nemo2sherpa and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A refused or broken input, explained in one line that names the file and the problem."""

    def __init__(self, message: str) -> None:
        # Multi-line messages break the "one line per error" promise; fold them here once for every caller.
        super().__init__(" ".join(message.split()))

    @classmethod
    def about(cls, path: str | Path, problem: str) -> "UserError":
        """Build the usual shape of message: '<file>: <problem>'."""
        return cls(f"{path}: {problem}")


def read_text(path: Path) -> str:
    """A small UTF-8 file a user or a model directory supplies (tokens.txt, manifest.json): its text, or UserError
    naming the file and why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError.about(path, "is not UTF-8 text") from None
    except OSError as exc:
        raise UserError.about(path, f"cannot be read ({exc.strerror})") from None
