#!/usr/bin/env bash
# The GPU machine's side of a run, over the payload parts of bench/gpu/payload.py (docs/cuda.md).
#
#   bash bench/gpu/device.sh stash .gpu-payload/part1           # every part but the last, one call each, back to back
#   bash bench/gpu/device.sh run .gpu-payload/part2 [OPTIONS]   # the last part: install, then bench/gpu/run_all.py
#   bash bench/gpu/device.sh dry-run .gpu-payload/partN [...]   # here: same unpacking and steps, this Python, CPU only
#
# Parts are stashed outside the repository copy ($NEMO2SHERPA_GPU_STASH, default ~/nemo2sherpa-gpu), where they
# survive between calls while the machine stays up. The CUDA provider library starts decompressing in the background
# as soon as its part arrives. Results go to $OUT (results.json, reports.tar, run.log).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:?stash, run or dry-run}
part=${2:?payload part directory}
shift 2
stash=${NEMO2SHERPA_GPU_STASH:-$HOME/nemo2sherpa-gpu}
out=${OUT:-$PWD/gpu-results}
mkdir -p "$stash" "$out"
cp -r "$part"/. "$stash"/
provider_library=$stash/libonnxruntime_providers_cuda.so
if [ -f "$stash/onnxruntime-cuda-provider.so.xz" ] && [ ! -e "$stash/.provider-started" ]; then
  touch "$stash/.provider-started"
  setsid python3 -c '
import lzma, os, shutil, sys
source, target = sys.argv[1], sys.argv[2]
with lzma.open(source) as packed, open(target + ".tmp", "wb") as plain:
    shutil.copyfileobj(packed, plain, 1 << 24)
os.replace(target + ".tmp", target)' "$stash/onnxruntime-cuda-provider.so.xz" "$provider_library" \
    >"$stash/.provider.log" 2>&1 </dev/null &
fi
echo "stashed in $stash: $(cd "$stash" && ls | tr '\n' ' ')"
if [ "$mode" = stash ]; then
  nvidia-smi -L || true
  exit 0
fi

work=$stash/work
rm -rf "$work"
mkdir -p "$work"
untar() { "${PYTHON:-python3}" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' "$@"; }
untar "$stash/work.tar.xz" "$work"
hashes=()
[ -f "$stash/expected-hashes.json" ] && hashes=(--expected-hashes "$stash/expected-hashes.json")

if [ "$mode" = dry-run ]; then
  "${PYTHON:-python3}" bench/gpu/run_all.py --work "$work" --out "$out" --providers cpu "${hashes[@]}" "$@" \
    2>&1 | tee "$out/run.log"
  exit "${PIPESTATUS[0]}"
fi

for _ in $(seq 1 240); do
  [ -f "$provider_library" ] && break
  sleep 0.5
done
[ -f "$provider_library" ] || { echo "the CUDA provider library was not unpacked: $(cat "$stash/.provider.log")"; exit 1; }
site=/tmp/nemo2sherpa-site
rm -rf "$site"
mkdir -p "$site"
untar "$stash/onnxruntime-gpu.tar.xz" "$site"
cp "$provider_library" "$site/onnxruntime/capi/"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$stash"/*.whl
# NVIDIA's CUDA and cuDNN libraries where `pip install onnxruntime-gpu[cuda,cudnn]` puts them: beside onnxruntime.
nvidia=$(python3 -c '
import importlib.util, pathlib
spec = importlib.util.find_spec("nvidia")
paths = [pathlib.Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
print(next((str(p) for p in paths if (p / "cudnn").is_dir()), ""))' 2>/dev/null || true)
[ -n "$nvidia" ] && ln -sfn "$nvidia" "$site/nvidia"
export PYTHONPATH=$site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
set -o pipefail
python3 bench/gpu/run_all.py --work "$work" --out "$out" "${hashes[@]}" "$@" 2>&1 | tee "$out/run.log"
