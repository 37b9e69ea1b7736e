"""Run one command and report its wall time and peak RSS as JSON on the last line of stdout.

Each measurement is its own process, so RUSAGE_CHILDREN covers exactly the measured command (and its children).
Usage: python bench/measure.py -- COMMAND [ARGS...]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    start = time.perf_counter()
    done = subprocess.run(args)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"returncode": done.returncode, "wall_s": round(wall, 2), "peak_rss_gb": round(peak_kib / 1e6, 2)}))
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
