"""The C library's functions that only some systems have (glibc's malloc_trim, Linux's sync_file_range)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


@functools.cache
def libc_function(name: str, argtypes: tuple[Any, ...] | None = None) -> Any | None:
    """The named function of this process's C library, or None where there is none (other systems, musl, ...):
    callers treat it as an optimisation they can go without."""
    library = ctypes.util.find_library("c")
    if not library:
        return None
    try:
        function = getattr(ctypes.CDLL(library, use_errno=True), name, None)
    except OSError:
        return None
    if function is not None and argtypes is not None:
        function.argtypes = list(argtypes)
    return function
