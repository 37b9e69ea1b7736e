"""Run a command inside a memory-limited cgroup (Linux, root): proof that a conversion fits a machine of that size.

cgroup v1 (memory controller) or v2 (memory.max) are both handled. Page cache counts against the limit and is
reclaimed under pressure, as on a real machine of that size; an allocation the limit cannot satisfy ends the run
with the OOM killer, which the caller sees as a non-zero return code.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


@contextlib.contextmanager
def memory_cgroup(limit_bytes: int) -> Iterator[dict]:
    """Yield {'enter': shell snippet that moves the current shell into the cgroup, 'stats': callable}."""
    name = f"nemo2sherpa-bench-{uuid.uuid4().hex[:8]}"
    if (V1 / "memory.limit_in_bytes").exists():
        group = V1 / name
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
        peak_file, fail_file = "memory.max_usage_in_bytes", "memory.failcnt"
    elif (V2 / "cgroup.controllers").exists() and "memory" in (V2 / "cgroup.controllers").read_text():
        group = V2 / name
        group.mkdir()
        (group / "memory.max").write_text(str(limit_bytes))
        peak_file, fail_file = "memory.peak", "memory.events"
    else:
        raise RuntimeError("no writable memory cgroup here (needs Linux and root)")

    def stats() -> dict:
        out = {"limit_gb": round(limit_bytes / 2**30, 2)}
        with contextlib.suppress(OSError, ValueError):
            out["cgroup_peak_gb"] = round(int((group / peak_file).read_text().split()[0]) / 2**30, 2)
        with contextlib.suppress(OSError):
            out["cgroup_limit_hits"] = (group / fail_file).read_text().strip().replace("\n", ", ")
        return out

    try:
        yield {"enter": f"echo $$ > {group / 'cgroup.procs'}", "stats": stats}
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(group)
