#!/usr/bin/env bash
# Set up a virtual environment in .venv with nemo2sherpa and everything it uses (convert, validate, publish, tests).
# Idempotent: a second run only checks what is there. Honours $PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, the build that fits this machine (scripts/torch_choice.sh); nemo2sherpa pins no torch, so the one
# installed here is kept by the install below.
torch_args=$(bash scripts/torch_choice.sh .venv/bin/python)
case "$torch_args" in
  keep) ;;
  torch) echo "setup: installing PyTorch, default build (NVIDIA GPU found, or not Linux)"
         .venv/bin/python -m pip install --quiet torch ;;
  *) echo "setup: no NVIDIA GPU: installing PyTorch's CPU-only build (NEMO2SHERPA_TORCH=cuda chooses the CUDA one)"
     # shellcheck disable=SC2086
     if ! .venv/bin/python -m pip install --quiet $torch_args; then
       echo "setup: PyTorch's CPU wheel index could not be reached; installing the default build instead (it carries" \
            "CUDA libraries, several GB; set TORCH_CPU_INDEX to a mirror of the CPU wheels to avoid them)"
       .venv/bin/python -m pip install --quiet torch
     fi ;;
esac
.venv/bin/python -m pip install --quiet -e ".[all,test]"

# espeak-ng synthesizes validate's default test audio; install it when we can, explain when we cannot.
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null) || echo "setup: could not install espeak-ng"
  else
    echo "setup: espeak-ng is not installed; validate then needs --audio or --dataset (sudo apt-get install espeak-ng)"
  fi
fi
