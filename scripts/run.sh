#!/usr/bin/env bash
# Set up Ember and start the platform on http://127.0.0.1:8000 (its dashboard at that address)
# with examples/hello (a streamed greeting) and examples/describe (a file input) deployed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ember serve --deploy examples/hello --deploy examples/describe "$@"
