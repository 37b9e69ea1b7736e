"""Benchmark conversion against the plain method, side by side in one run.

For each recipe: build its architecture with random weights and save it as a .nemo (setup, not timed), then time
and measure peak RSS of (1) the plain method (bench/plain_export.py) and (2) `nemo2sherpa convert` on that same file,
each in a fresh process. Prints a table and writes results JSON.

Usage: python bench/convert.py parakeet-tdt-1.1b [parakeet-tdt-0.6b-v3 ...] [--workdir work/bench] [--repeats 3]
       [--memory-limit-gb 6] [--json out.json]

The plain method's time depends heavily on the disk (restore_from unpacks the whole checkpoint, the exporter writes
hundreds of files and the re-save writes them again): --repeats rotates the methods and reports the median.
With --memory-limit-gb, nemo2sherpa also runs inside a memory cgroup of that size (a third method), as proof that it
fits a machine that small; the plain method and the first nemo2sherpa run under the same, unconstrained conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIMITED = "nemo2sherpa-in-cgroup"  # the same conversion inside the --memory-limit-gb cgroup


def build_random_checkpoint(recipe_name: str, path: Path) -> None:
    if path.exists():
        return
    code = (
        "import sys, tempfile; from pathlib import Path;"
        "from nemo2sherpa.recipes import get_recipe; from nemo2sherpa.checkpoint.loading import random_model;"
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


def _median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (the lower middle one for an even count), with every run's wall time."""
    ordered = sorted(runs, key=lambda r: r.get("wall_s", float("inf")))
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["all_wall_s"] = [r.get("wall_s") for r in runs]
    chosen["max_peak_rss_gb"] = max(r.get("peak_rss_gb", 0.0) for r in runs)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--workdir", type=Path, default=Path("work/bench"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=1,
                        help="Runs of each method, alternating; the table shows the run with the median wall time.")
    parser.add_argument("--memory-limit-gb", type=float, default=None,
                        help="Also run nemo2sherpa inside a memory cgroup of this size (Linux, root), as proof it "
                             "fits.")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    nemo2sherpa = str(Path(sys.executable).with_name("nemo2sherpa"))
    results = []
    for recipe in args.recipes:
        checkpoint = args.workdir / f"{recipe}-random.nemo"
        print(f"[{recipe}] building random-weight checkpoint (not timed) ...", file=sys.stderr, flush=True)
        build_random_checkpoint(recipe, checkpoint)
        ours = [nemo2sherpa, "convert", str(checkpoint), "-o", str(args.workdir / "ours"), "--overwrite", "-q"]
        commands = {
            "plain": [sys.executable, str(HERE / "plain_export.py"), str(checkpoint), str(args.workdir / "plain")],
            "nemo2sherpa": ours,
        }
        if args.memory_limit_gb is not None:
            commands[LIMITED] = ours
        row = {"recipe": recipe, "checkpoint_bytes": checkpoint.stat().st_size, "runs": {m: [] for m in commands}}
        methods = list(commands)
        for repeat in range(args.repeats):
            # rotate the order so that no method always runs with another's pages in the cache
            order = methods[repeat % len(methods):] + methods[:repeat % len(methods)]
            for method in order:
                out = args.workdir / ("plain" if method == "plain" else "ours")
                shutil.rmtree(out, ignore_errors=True)
                os.sync()  # untimed: no run starts while the previous one's gigabytes are still being written back
                print(f"[{recipe}] {method} (run {repeat + 1} of {args.repeats}) ...", file=sys.stderr, flush=True)
                run = measured(commands[method], args.memory_limit_gb if method == LIMITED else None)
                run["files"], run["bytes"] = disk_usage(out)
                row["runs"][method].append(run)
        for method, runs in row["runs"].items():
            row[method] = _median_run(runs)
        results.append(row)

    print(f"\nmachine: {platform.machine()}, {platform.processor() or '?'}; python {platform.python_version()}")
    print(f"{'recipe':24} {'method':12} {'wall s':>8} {'peak RSS GB':>12} {'tree GB':>8} {'written GB':>11} "
          f"{'files':>6} {'output GB':>10}")
    for row in results:
        for method in row["runs"]:
            r = row[method]
            print(f"{row['recipe']:24} {method:12} {r.get('wall_s', float('nan')):8.1f} "
                  f"{r.get('peak_rss_gb', float('nan')):12.2f} {r.get('peak_tree_rss_gb', float('nan')):8.2f} "
                  f"{r.get('written_gb', float('nan')):11.2f} {r['files']:6d} {r['bytes'] / 1e9:10.2f}")
        for method in row["runs"]:
            if method == "plain":
                continue
            ratio = row[method]["wall_s"] / row["plain"]["wall_s"]
            print(f"{'':24} {'ratio':12} {ratio:8.2f}   ({method} / plain; median runs; all wall s: plain "
                  f"{row['plain']['all_wall_s']}, {method} {row[method]['all_wall_s']}; highest peak RSS GB: "
                  f"plain {row['plain']['max_peak_rss_gb']}, {method} {row[method]['max_peak_rss_gb']})")
        if LIMITED in row:
            r = row[LIMITED]
            print(f"{'':24} {LIMITED}: exit {r['returncode']}, cgroup peak {r.get('cgroup_peak_gb')} GiB (page "
                  f"cache included), limit hits {r.get('cgroup_limit_hits')}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
