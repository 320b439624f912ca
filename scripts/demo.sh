#!/usr/bin/env bash
# Set up (idempotent) and run the main job: `edgeconv demo` on the bundled detector and data.
#   bash scripts/demo.sh [OUT] [more demo options, e.g. --target openvino --limit 100]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
out=${1:-demo-out}
shift || true
edgeconv demo --out "$out" "$@"
