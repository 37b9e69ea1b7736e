"""The external-data file of one graph, written front to back."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from nemo2sherpa.libc import libc_function

ALIGNMENT = 4096  # page-aligned tensors can be memory-mapped by onnxruntime
WRITEBACK_CHUNK = 64 * 2**20
_SYNC_FILE_RANGE_WRITE = 2


class WeightsFile:
    """One external-data file written front to back: each tensor page-aligned, the file's sha256 computed on a second
    thread while the disk is busy (both release the GIL on large buffers; measured on the 1.1B encoder: 2 s of
    hashing hidden). Not thread-safe: one writer at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._writeback_from = 0
        self._out = open(path, "wb")
        self._digest = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(max_workers=1)
        self._hashed: Future | None = None

    def append(self, data: bytes | memoryview) -> int:
        """Write `data` at the next aligned offset; returns that offset."""
        padding = -self._out.tell() % ALIGNMENT
        if padding:
            self._out.write(b"\0" * padding)
        offset = self._out.tell()
        if self._hashed is not None:
            self._hashed.result()  # in file order: the previous tensor is hashed before this one's padding
        if padding:
            self._digest.update(b"\0" * padding)
        self._hashed = self._hasher.submit(self._digest.update, data)
        self._out.write(data)
        self.size = offset + len(data)
        self._start_writeback()
        return offset

    def _start_writeback(self) -> None:
        """Ask the kernel to start writing what is buffered, without waiting for it.

        Left alone, Linux lets gigabytes of dirty pages pile up and then throttles whoever writes or allocates next
        (here the exporter, on the other thread); in a memory-limited container the dirty pages also stand in the
        way of reclaim. Started early, the disk works from the first tensor on and the written pages stay clean,
        cheap to drop, still cached for the self-check."""
        start = self._writeback_from
        if self.size - start < WRITEBACK_CHUNK:
            return
        function = libc_function("sync_file_range", (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint))
        if function is not None:
            self._out.flush()
            function(self._out.fileno(), start, self.size - start, _SYNC_FILE_RANGE_WRITE)
        self._writeback_from = self.size

    def close(self) -> str:
        """Flush, close and return the sha256 of everything written."""
        try:
            if self._hashed is not None:
                self._hashed.result()
        finally:
            self._hashed = None
            self._out.close()
            self._hasher.shutdown()
        return self._digest.hexdigest()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
