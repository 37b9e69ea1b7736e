#!/usr/bin/env bash
# Print the pip arguments that install the right PyTorch build for this machine (used by setup.sh; prints, so that
# the choice can be shown and tested without installing anything).
#
#   NEMO2SHERPA_TORCH=cpu|cuda|keep   force a choice (keep: install no torch; whatever is there stays)
#   TORCH_CPU_INDEX=URL               another index of CPU wheels (a mirror)
#
# Without a choice: an importable torch is kept; Linux without an NVIDIA GPU gets the CPU-only build from PyTorch's
# CPU wheel index (about 200 MB, instead of several GB of CUDA libraries it could not use); everything else gets the
# default build (with an NVIDIA GPU: CUDA; on macOS and Windows the default is what fits).
set -euo pipefail
python=${1:-.venv/bin/python}
choice=${NEMO2SHERPA_TORCH:-}
if [ -z "$choice" ]; then
  if "$python" -c "import torch" >/dev/null 2>&1; then
    choice=keep
  elif [ "$(uname -s)" = Linux ] && ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
    choice=cpu
  else
    choice=cuda
  fi
fi
case "$choice" in
  keep) echo "keep" ;;
  cpu) echo "torch --index-url ${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}" ;;
  cuda) echo "torch" ;;
  *) echo "torch_choice: NEMO2SHERPA_TORCH must be cpu, cuda or keep, not '$choice'" >&2; exit 2 ;;
esac
