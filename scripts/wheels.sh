#!/usr/bin/env bash
# Build the wheels Ember needs that PyPI only has as source, into a wheelhouse that pip and uv
# then read with --find-links. Today: llama-cpp-python, whose default build compiles for the
# building CPU (-march=native) and crashes on others (AMX machines segfault), and uses OpenMP,
# whose thread pool does not survive the fork of a replica from the warm host. The portable
# build targets AVX2 (x86-64-v3) without OpenMP.
#
# A wheel is rebuilt only when missing or built with other flags (BUILD-INFO records the
# version and flags of each), so a second run takes a moment. Usage: scripts/wheels.sh
# Wheelhouse: $EMBER_WHEELHOUSE, default ~/.cache/ember/wheels.
set -euo pipefail

wheelhouse=${EMBER_WHEELHOUSE:-$HOME/.cache/ember/wheels}
python=${PYTHON:-python3}
mkdir -p "$wheelhouse"
info="$wheelhouse/BUILD-INFO"
touch "$info"

# build DIST VERSION CMAKE_ARGS: one source-only distribution as a wheel.
build() {
  local dist=$1 version=$2 cmake_args=$3
  local stem=${dist//-/_}-$version
  local record="$dist==$version CMAKE_ARGS=$cmake_args"
  if compgen -G "$wheelhouse/$stem-*.whl" >/dev/null && grep -qxF "$record" "$info"; then
    return 0
  fi
  local tmp
  tmp=$(mktemp -d)
  echo "building $dist $version (portable CPU build) into $wheelhouse:" \
    "5 to 10 minutes on 2 cores" >&2
  if ! CMAKE_ARGS="$cmake_args" "$python" -m pip wheel --quiet --no-cache-dir --no-deps \
    "$dist==$version" -w "$tmp" >"$tmp/build.log" 2>&1; then
    tail -n 40 "$tmp/build.log" >&2
    echo "building $dist $version failed (log above)" >&2
    rm -rf "$tmp"
    return 1
  fi
  rm -f "$wheelhouse/$stem"-*.whl
  mv "$tmp/$stem"-*.whl "$wheelhouse/"
  grep -v "^$dist==$version " "$info" >"$info.new" || true
  echo "$record" >>"$info.new"
  mv "$info.new" "$info"
  rm -rf "$tmp"
}

# One builder at a time per wheelhouse (parallel CI jobs would both spend the minutes).
exec 9>"$wheelhouse/.lock"
flock 9

build llama-cpp-python 0.3.36 "-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF"
