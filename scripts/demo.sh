#!/usr/bin/env bash
# Set up (idempotent) and run the main job: `edgeconv demo` on the bundled detector and data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
edgeconv demo --out "${1:-demo-out}"
