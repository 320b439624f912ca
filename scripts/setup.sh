#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): a venv with CPU torch (pinned by constraints.txt) and every
# backend. Says what it installs and how big it is, and lets pip show its progress, so a long install is never silent.
#   EXTRAS=openvino,test bash scripts/setup.sh   # a subset (default: all,test)
#   QUIET=1 bash scripts/setup.sh                # pip's summary lines only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${EXTRAS:-all,test}
pip_flags=(--progress-bar on)
[ "${QUIET:-0}" = 1 ] && pip_flags=(-q)

step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $("$PY" --version 2>&1) (edgeconv needs Python >= 3.11)"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required" >&2; exit 2; }
  "$PY" -m venv .venv
else
  step "reusing .venv ($(.venv/bin/python --version 2>&1))"
fi
. .venv/bin/activate

step "upgrading pip"
python -m pip install "${pip_flags[@]}" --upgrade pip

cat <<EOF

==> [$(date +%H:%M:%S)] installing edgeconv -e '.[${EXTRAS}]' with constraints.txt
    What a full install ('all,test') brings, measured in this project's venv (on disk, installed):
      torch 2.13.0 CPU build (pinned: an unpinned torch pulls a multi-GB CUDA build)  ~750 MB
      openvino + nncf                                                                 ~190 MB
      ncnn + pnnx                                                                     ~110 MB
      litert-torch + ai-edge-litert (+ jax, pulled by litert-torch)                  ~ 70 MB + jax
      onnx, onnxruntime, onnxsim/onnxslim, polygraphy, pycocotools, numpy            ~170 MB
      the whole venv                                                                  ~3.4 GB
    About 5 minutes on a 2-core machine with a warm pip cache; downloads are shown below as they happen.

EOF
python -m pip install "${pip_flags[@]}" -c constraints.txt -e ".[${EXTRAS}]"

step "installed: $(python -c 'import edgeconv; print("edgeconv", edgeconv.__version__)')"
edgeconv targets
step "done: . .venv/bin/activate, then edgeconv --help"
