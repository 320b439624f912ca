#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. pytest's exit 5 (no tests collected) counts as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export EDGECONV_CACHE="${EDGECONV_CACHE:-$PWD/.edgeconv-cache}"
ruff check edgeconv tests benchmarks
lint-imports  # the layer contracts in .importlinter
python -m pytest -q -m "not slow" "$@"
