#!/usr/bin/env bash
# One-time set-up on a fresh machine: a venv with CPU torch (pinned by constraints.txt) and every backend.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# constraints.txt pins the CPU torch wheel; an unpinned torch would pull a multi-GB CUDA build.
python -m pip install -q -c constraints.txt -e '.[all,test]'
