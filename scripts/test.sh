#!/usr/bin/env bash
# Set up Ember and run its checks: ruff, then the whole test suite with real replicas.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
.venv/bin/python -m pytest "$@"
