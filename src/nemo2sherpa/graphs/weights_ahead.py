"""Write a large graph's weights file while the graph is still being exported.

Writing the 1.1B encoder's 4.3 GB is bound by the disk (8-10 s on an ordinary one) and the TorchScript export of
the same encoder by one CPU core (8 s); one after the other they were two thirds of a conversion. Most of the bytes
are known before the export starts: the pre-transposed linear weights (lean.py) and the pointwise convolutions
are exactly the arrays the exporter later hands over as initializers, same memory, no copy. So they are queued
here as each is ready, and a background thread writes them into '<graph>.weights' during the export. write_graph
then points each initializer that is one of these arrays (same address, shape and dtype) at its place in the file
and appends the rest.

What is queued must end up in the graph: a weight that a graph rewrite replaces (optimize.REPLACED_WEIGHTS) is not
queued, and if the exporter still dropped one (folded, or merged with an identical twin), write_graph throws the
file away and writes it anew rather than keep dead bytes: slower, never wrong.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from nemo2sherpa.graphs.weights_file import WeightsFile

ArrayIdentity = tuple[int, tuple[int, ...], str]
_END = None


def array_identity(array: np.ndarray) -> ArrayIdentity | None:
    """Where an array's bytes live, with its shape and dtype: equal for two numpy views of one torch tensor."""
    if not array.flags.c_contiguous:
        return None
    return (int(array.__array_interface__["data"][0]), tuple(array.shape), array.dtype.str)


class WeightsAhead:
    """A weights file written by a background thread from arrays queued with add(); finish() hands it over."""

    def __init__(self, path: Path) -> None:
        self._file = WeightsFile(path)
        self._queue: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        self._placed: dict[ArrayIdentity, tuple[int, int]] = {}
        self._kept: list[np.ndarray] = []  # an array's address is its identity: none may be freed and reused
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, name="nemo2sherpa-weights-ahead", daemon=True)
        self._thread.start()

    def add(self, array: np.ndarray) -> None:
        """Queue one array for writing (ignored unless contiguous)."""
        if array_identity(array) is None:
            return
        self._kept.append(array)
        self._queue.put(array)

    def add_tensor(self, tensor: Any) -> None:
        """Queue a CPU torch tensor's memory as it is (the exporter's initializer will be a view of it)."""
        self.add(tensor.detach().numpy())

    def finish(self) -> tuple[WeightsFile, dict[ArrayIdentity, tuple[int, int]]]:
        """Wait for every queued array to be written; the open file and where each array went ((offset, length)).
        The arrays stay referenced until release(): an address freed and reused before the graph's tensors are
        matched to it could otherwise be mistaken for a written one."""
        self._queue.put(_END)
        self._thread.join()
        if self._error is not None:
            self._kept.clear()
            self._file.discard()
            raise self._error
        return self._file, self._placed

    def release(self) -> None:
        """Drop the references to the written arrays (after write_graph matched the graph's tensors to them)."""
        self._kept.clear()

    def cancel(self) -> None:
        """Stop after the array being written and delete the file (the conversion failed or was interrupted)."""
        self._stop.set()
        self._queue.put(_END)
        self._thread.join()
        self._kept.clear()
        self._file.discard()

    def _write(self) -> None:
        try:
            while not self._stop.is_set():
                array = self._queue.get()
                if array is _END:
                    return
                offset = self._file.append(memoryview(array).cast("B"))
                identity = array_identity(array)
                assert identity is not None
                self._placed[identity] = (offset, array.nbytes)
        except BaseException as exc:  # raised again by finish(), in the thread that waits for the file
            self._error = exc
