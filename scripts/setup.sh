#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install Ember into it; reused when already there.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
# bubblewrap, which sandboxes every replica (Debian's package; `ember serve --no-sandbox` runs
# without it). Installed once, as root or with sudo.
if ! command -v bwrap >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -q bubblewrap >/dev/null \
        || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q bubblewrap >/dev/null; } \
        || echo "could not install bubblewrap: install it, or run ember serve --no-sandbox" >&2
fi
