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
# torch is not pinned: an already installed build (CPU or CUDA) that satisfies the requirement is kept.
.venv/bin/python -m pip install --quiet -e ".[all,test]"

# espeak-ng synthesizes validate's default test audio; install it when we can, explain when we cannot.
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null) || echo "setup: could not install espeak-ng"
  else
    echo "setup: espeak-ng is not installed; validate then needs --audio or --dataset (sudo apt-get install espeak-ng)"
  fi
fi
