#!/usr/bin/env bash
# Set up Ember and run the example model in a real replica, streaming its output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ember run examples/hello -i name="${1:-world}" -i style=pirate -i repeat=2
