#!/usr/bin/env bash
# Set up, then run the main job on the bundled model (no network): convert it and validate the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-models/tiny-tdt-en}
.venv/bin/nemo2sherpa convert tiny-tdt-en -o "$out" --overwrite
if .venv/bin/nemo2sherpa validate --help >/dev/null 2>&1; then
  .venv/bin/nemo2sherpa validate "$out"
fi
