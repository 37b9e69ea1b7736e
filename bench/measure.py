"""Run one command and report its wall time and peak memory as JSON on the last line of stdout.

Two memory figures, because they answer different questions:
- peak_rss_gb: the largest single process (RUSAGE_CHILDREN's ru_maxrss; what `time -v` prints);
- peak_tree_rss_gb: the largest SUM over the command and all its descendants, sampled every 50 ms, which is what a
  machine must really hold when a tool runs work in child processes.
written_gb is what the command wrote to storage, temporary files included.
Usage: python bench/measure.py -- COMMAND [ARGS...]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path


def own_peak_rss_bytes() -> int:
    """VmHWM: the calling process's own peak since exec. getrusage's ru_maxrss would count the parent's pages that
    a child held between fork and exec: a bench that has loaded a 1 GB graph before starting its measuring children
    would see 1 GB in every one of them."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(root: int) -> int:
    tree = _children_map()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss_kib(pid)
        stack.extend(tree.get(pid, []))
    return total


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    start = time.perf_counter()
    process = subprocess.Popen(args)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_kib(process.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    returncode = process.wait()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"returncode": returncode, "wall_s": round(wall, 2),
                      "peak_rss_gb": round(usage.ru_maxrss / 1e6, 2),
                      "peak_tree_rss_gb": round(peak[0] / 1e6, 2),
                      # bytes the command caused to be written to storage (Linux counts them when pages are dirtied)
                      "written_gb": round(usage.ru_oublock * 512 / 1e9, 2)}))
    sys.exit(returncode)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
