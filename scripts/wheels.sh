#!/usr/bin/env bash
# Build the wheels Ember needs that PyPI only has as source, into a wheelhouse that pip and uv
# then read with --find-links. Today: llama-cpp-python, whose default build compiles for the
# building CPU (-march=native) and crashes on others (AMX machines segfault), and uses OpenMP,
# whose thread pool does not survive the fork of a replica from the warm host. The portable
# build targets AVX2 (x86-64-v3) without OpenMP.
#
# On request only (`scripts/wheels.sh llama-server`, for bench/llm.py): llama.cpp's own
# `llama-server`, built from the llama.cpp sources vendored in the same llama-cpp-python sdist
# (vendor/llama.cpp), with the same portable flags, into
# $wheelhouse/llama-server-<version>/bin/llama-server: one static binary (no shared libraries
# beside it), no web UI (it would need npm or a download), no TLS, no network at build or run
# time. About 10 minutes on 2 cores; CI never asks for it.
#
# A wheel or binary is rebuilt only when missing or built with other flags (BUILD-INFO records
# the version and flags of each), so a second run takes a moment.
# Usage: scripts/wheels.sh [llama-server]
# Wheelhouse: $EMBER_WHEELHOUSE, default ~/.cache/ember/wheels.
set -euo pipefail

server=""
for what in "$@"; do
  case $what in
    llama-server) server=1 ;;
    *)
      echo "usage: scripts/wheels.sh [llama-server] (unknown: $what)" >&2
      exit 2
      ;;
  esac
done
# llama-server's flags: the wheel's, one static binary, no UI assets (LLAMA_USE_PREBUILT_UI
# would fetch them from Hugging Face, LLAMA_BUILD_UI needs npm), no OpenSSL, nothing but the
# server. No LLAMA_CURL: this llama.cpp has no curl code left (the option only warns).
SERVER_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DBUILD_SHARED_LIBS=OFF \
-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF"

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

# build_server VERSION CMAKE_ARGS: llama-server from llama-cpp-python VERSION's sdist.
build_server() {
  local version=$1 cmake_args=$2
  local dest="$wheelhouse/llama-server-$version"
  local record="llama-server==$version CMAKE_ARGS=$cmake_args"
  if [ -x "$dest/bin/llama-server" ] && grep -qxF "$record" "$info"; then
    return 0
  fi
  if ! command -v cmake >/dev/null || ! command -v c++ >/dev/null; then
    echo "building llama-server needs cmake and a C++ compiler (apt-get install cmake g++)" >&2
    return 1
  fi
  local tmp generator=()
  tmp=$(mktemp -d)
  command -v ninja >/dev/null && generator=(-G Ninja)
  echo "building llama-server (llama.cpp from the llama-cpp-python $version sdist, portable" \
    "CPU build) into $dest: about 10 minutes on 2 cores" >&2
  # shellcheck disable=SC2086  # cmake_args is a list of flags
  if ! {
    "$python" -m pip download --quiet --no-deps --no-binary :all: \
      "llama-cpp-python==$version" -d "$tmp/sdist" &&
      tar -xzf "$tmp"/sdist/llama_cpp_python-"$version".tar.gz -C "$tmp" &&
      cmake -S "$tmp/llama_cpp_python-$version/vendor/llama.cpp" -B "$tmp/build" \
        "${generator[@]}" -DCMAKE_BUILD_TYPE=Release $cmake_args &&
      cmake --build "$tmp/build" --target llama-server --parallel "$(nproc)"
  } >"$tmp/build.log" 2>&1; then
    tail -n 40 "$tmp/build.log" >&2
    echo "building llama-server $version failed (log above)" >&2
    rm -rf "$tmp"
    return 1
  fi
  rm -rf "$dest"
  mkdir -p "$dest/bin"
  mv "$tmp/build/bin/llama-server" "$dest/bin/"
  cp "$tmp/llama_cpp_python-$version/vendor/llama.cpp/LICENSE" "$dest/"
  grep -v "^llama-server==$version " "$info" >"$info.new" || true
  echo "$record" >>"$info.new"
  mv "$info.new" "$info"
  rm -rf "$tmp"
}

# One builder at a time per wheelhouse (parallel CI jobs would both spend the minutes).
exec 9>"$wheelhouse/.lock"
flock 9

build llama-cpp-python 0.3.36 "-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF"

if [ -n "$server" ]; then
  build_server 0.3.36 "$SERVER_CMAKE_ARGS"
fi
