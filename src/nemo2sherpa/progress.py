"""Stage-by-stage progress on stderr, so a long conversion or validation never looks hung.

stdout stays free for results; every stage reports its wall time, which doubles as a cheap profile.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator, TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self.timings: dict[str, float] = {}

    def note(self, message: str) -> None:
        if self._enabled:
            print(message, file=self._stream, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.note(f"-> {name}")
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.timings[name] = round(elapsed, 3)
        self.note(f"   {name}: {elapsed:.1f} s")


SILENT = Progress(enabled=False)
