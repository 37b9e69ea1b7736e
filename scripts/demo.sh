#!/usr/bin/env bash
# Set up, then run the main job on the bundled model (no network): convert small-tdt-en (a small English model
# trained on synthetic speech), validate the export against NeMo on its held-out sentences, and transcribe a
# sentence of yours, spoken by espeak-ng, through the exported directory.
#   bash scripts/demo.sh [OUTPUT_DIR] ["a sentence to transcribe"]
# Without a sentence it asks for one on a terminal, and uses an example otherwise. The model knows the 1,951 most
# frequent alphabetic English words (wordfreq's top 2,000): sentences made of common words work best.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-models/small-tdt-en}
sentence=${2:-}
if [ -z "$sentence" ] && [ -t 0 ]; then
  read -r -p "Type a sentence of common English words (Enter for an example): " sentence || true
fi
sentence=${sentence:-"please call me when you get home tonight"}
.venv/bin/nemo2sherpa convert small-tdt-en -o "$out" --overwrite
.venv/bin/nemo2sherpa validate "$out"
.venv/bin/nemo2sherpa transcribe "$out" --say "$sentence"
