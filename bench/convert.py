"""Benchmark conversion against the plain method, side by side in one run.

For each recipe: build its architecture with random weights and save it as a .nemo (setup, not timed), then time
and measure peak RSS of (1) the plain method (bench/plain_export.py) and (2) `nemo2sherpa convert` on that same file,
each in a fresh process. Prints a table and writes results JSON.

Usage: python bench/convert.py parakeet-tdt-1.1b [parakeet-tdt-0.6b-v3 ...] [--workdir work/bench] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build_random_checkpoint(recipe_name: str, path: Path) -> None:
    if path.exists():
        return
    code = (
        "import sys, tempfile; from pathlib import Path;"
        "from nemo2sherpa.recipes import get_recipe; from nemo2sherpa.convert.loading import random_model;"
        "r = get_recipe(sys.argv[1]);"
        "d = tempfile.mkdtemp();"
        "m = random_model(r.architecture, Path(d), seed=0); m.save_to(sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", code, recipe_name, str(path)], check=True)


def measured(command: list[str], memory_limit_gb: float | None = None) -> dict:
    wrapped = [sys.executable, str(HERE / "measure.py"), "--", *command]
    if memory_limit_gb is None:
        return _run_measured(wrapped)
    from cgroup import memory_cgroup

    with memory_cgroup(int(memory_limit_gb * 2**30)) as group:
        script = group["enter"] + " && exec " + " ".join(shlex.quote(part) for part in wrapped)
        result = _run_measured(["sh", "-c", script])
        result.update(group["stats"]())
    return result


def _run_measured(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"returncode": done.returncode}
    result["stderr_tail"] = done.stderr.strip().splitlines()[-3:]
    return result


def disk_usage(directory: Path) -> tuple[int, int]:
    files = [p for p in directory.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--workdir", type=Path, default=Path("work/bench"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--memory-limit-gb", type=float, default=None,
                        help="Run nemo2sherpa inside a memory cgroup of this size (Linux, root), as proof it fits.")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    nemo2sherpa = str(Path(sys.executable).with_name("nemo2sherpa"))
    results = []
    for recipe in args.recipes:
        checkpoint = args.workdir / f"{recipe}-random.nemo"
        print(f"[{recipe}] building random-weight checkpoint (not timed) ...", file=sys.stderr, flush=True)
        build_random_checkpoint(recipe, checkpoint)
        row = {"recipe": recipe, "checkpoint_bytes": checkpoint.stat().st_size}
        for method, command in (
            ("plain", [sys.executable, str(HERE / "plain_export.py"), str(checkpoint), str(args.workdir / "plain")]),
            ("nemo2sherpa", [nemo2sherpa, "convert", str(checkpoint), "-o", str(args.workdir / "ours"),
                             "--overwrite", "-q"]),
        ):
            out = args.workdir / ("plain" if method == "plain" else "ours")
            shutil.rmtree(out, ignore_errors=True)
            print(f"[{recipe}] {method} ...", file=sys.stderr, flush=True)
            row[method] = measured(command, args.memory_limit_gb if method == "nemo2sherpa" else None)
            row[method]["files"], row[method]["bytes"] = disk_usage(out)
        results.append(row)

    print(f"\nmachine: {platform.machine()}, {platform.processor() or '?'}; python {platform.python_version()}")
    print(f"{'recipe':24} {'method':12} {'wall s':>8} {'peak RSS GB':>12} {'tree GB':>8} {'written GB':>11} "
          f"{'files':>6} {'output GB':>10}")
    for row in results:
        for method in ("plain", "nemo2sherpa"):
            r = row[method]
            print(f"{row['recipe']:24} {method:12} {r.get('wall_s', float('nan')):8.1f} "
                  f"{r.get('peak_rss_gb', float('nan')):12.2f} {r.get('peak_tree_rss_gb', float('nan')):8.2f} "
                  f"{r.get('written_gb', float('nan')):11.2f} {r['files']:6d} {r['bytes'] / 1e9:10.2f}")
        ratio = row["nemo2sherpa"]["wall_s"] / row["plain"]["wall_s"]
        print(f"{'':24} {'ratio':12} {ratio:8.2f}")
        if "limit_gb" in row["nemo2sherpa"]:
            r = row["nemo2sherpa"]
            print(f"{'':24} nemo2sherpa ran inside a {r['limit_gb']} GiB memory cgroup: exit {r['returncode']}, "
                  f"cgroup peak {r.get('cgroup_peak_gb')} GiB (page cache included), limit hits {r.get('cgroup_limit_hits')}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
