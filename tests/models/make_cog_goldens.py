"""Regenerate the golden OpenAPI schemas of the test Cog models with the real Cog 0.16.12.

For every folder ``tests/models/cog/<name>/`` (one Cog model: cog.yaml + predict.py) this
writes ``tests/models/cog/<name>/schema.cog-0.16.12.json``: the complete OpenAPI document
that Cog 0.16.12 itself produces for that model, pretty-printed with sorted keys.

How Cog 0.16.12 produces the schema (no Docker needed)
------------------------------------------------------
``cog build`` runs ``python -m cog.command.openapi_schema`` inside the built image, in the
directory holding cog.yaml, and stores the printed JSON as the image's
``run.cog.openapi_schema`` label. That module reads ./cog.yaml (``predict:`` key), loads the
predictor (first with its "fast loader", which strips method bodies, then by importing the
whole file), builds the FastAPI app with ``cog.server.http.create_app(..., is_build=True)``,
and prints ``app.openapi()`` after Cog's own post-processing (pydantic-2 nullable fixes,
``title`` removed next to ``$ref``). This script runs exactly that module with the real
``cog`` package, in a subprocess per model, with the model folder as working directory.

Rerun
-----
Use a scratch virtualenv OUTSIDE the repository, never the project's environment::

    python3.11 -m venv /tmp/cog016venv
    /tmp/cog016venv/bin/pip install cog==0.16.12 pillow==13.0.0 \
        pydantic==2.14.3 fastapi==0.118.3
    /tmp/cog016venv/bin/python tests/models/make_cog_goldens.py           # all models
    /tmp/cog016venv/bin/python tests/models/make_cog_goldens.py canary    # some models
    /tmp/cog016venv/bin/python tests/models/make_cog_goldens.py --check   # compare only

pillow is needed because Cog imports the whole predict.py when its fast loader fails (blur
imports PIL at module level). The committed goldens were made with Python 3.11,
cog 0.16.12, pydantic 2.14.3 (pydantic-core 2.50.4) and fastapi 0.118.3; a different
pydantic/fastapi can change details of the document, so the script warns when they differ
(pydantic 2.11.10 with the same fastapi was checked to give identical documents).
``--check`` writes nothing and exits 1 if any golden is missing or different.

Models without a plain Cog 0.16.12 golden
-----------------------------------------
* ``hello-runner`` has NO golden: it uses the Cog 0.17+ names (``from cog import BaseRunner``,
  ``run(self, ...)`` and the ``run:`` key in cog.yaml). Cog 0.16.12 knows none of them: with
  no ``predict:`` key it fails with "Can't run predictions: 'predict' option not found in
  cog.yaml", and ``cog`` has no ``BaseRunner`` to import.
* ``hello-concurrency`` imports ``emit_metric`` from ``cog`` (as the upstream cog-examples
  model does), but Cog 0.16.12 does not export ``emit_metric``, so unmodified Cog 0.16.12
  cannot load the model at all (ImportError). Its golden is produced by the same Cog 0.16.12
  code with one shim applied first: ``cog.emit_metric`` is defined as a function forwarding
  to ``current_scope().record_metric``. The schema machinery is untouched and never calls
  it, so the document is what Cog 0.16.12 emits for that predictor's signature.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

COG_VERSION = "0.16.12"
GOLDEN_NAME = f"schema.cog-{COG_VERSION}.json"
MODELS_DIR = Path(__file__).resolve().parent / "cog"

# Versions of the schema-relevant libraries the committed goldens were made with.
REFERENCE_VERSIONS = {"cog": COG_VERSION, "pydantic": "2.14.3", "fastapi": "0.118.3"}

# Models Cog 0.16.12 cannot describe at all: no golden is written (a stale one is removed).
NO_GOLDEN = {
    "hello-runner": "uses Cog 0.17+ names (BaseRunner, run(), `run:` in cog.yaml)",
}

# Python run before cog.command.openapi_schema, to define names Cog 0.16.12 lacks.
EMIT_METRIC_SHIM = (
    "import cog\n"
    "from cog.server.scope import current_scope as _cs\n"
    "def emit_metric(name, value):\n"
    "    _cs().record_metric(name, value)\n"
    "cog.emit_metric = emit_metric\n"
)
SHIMS = {
    "hello-concurrency": EMIT_METRIC_SHIM,
}

RUN_SCHEMA = "import runpy\nrunpy.run_module('cog.command.openapi_schema', run_name='__main__')\n"


def installed_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in REFERENCE_VERSIONS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def model_env() -> dict[str, str]:
    """The caller's environment without anything that would steer Cog's loader."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COG_")}
    env.pop("PYTHONPATH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def generate(model_dir: Path) -> dict:
    code = SHIMS.get(model_dir.name, "") + RUN_SCHEMA
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=model_dir,
        env=model_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"cog {COG_VERSION} failed for {model_dir.name} (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise RuntimeError(
            f"cog printed no JSON for {model_dir.name}:\n{proc.stdout[-2000:]}"
        ) from e


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="model folder names (default: all)")
    parser.add_argument("--check", action="store_true", help="compare only, write nothing")
    args = parser.parse_args()

    versions = installed_versions()
    if versions["cog"] != COG_VERSION:
        print(f"error: need cog=={COG_VERSION}, found {versions['cog']} ({sys.executable})")
        return 2
    for name, want in REFERENCE_VERSIONS.items():
        if versions[name] != want:
            print(f"warning: {name} {versions[name]} installed, goldens were made with {want}")

    all_models = sorted(p.name for p in MODELS_DIR.iterdir() if (p / "cog.yaml").is_file())
    unknown = sorted(set(args.models) - set(all_models))
    if unknown:
        print(f"error: no such model folder: {', '.join(unknown)}")
        return 2
    models = args.models or all_models

    failed = []
    for name in models:
        model_dir = MODELS_DIR / name
        golden = model_dir / GOLDEN_NAME
        if name in NO_GOLDEN:
            if golden.exists() and not args.check:
                golden.unlink()
            print(f"skip     {name}: {NO_GOLDEN[name]}")
            continue
        try:
            text = render(generate(model_dir))
        except RuntimeError as e:
            print(f"FAILED   {name}\n{e}")
            failed.append(name)
            continue
        note = " (with emit_metric shim)" if name in SHIMS else ""
        if args.check:
            same = golden.exists() and golden.read_text() == text
            print(f"{'ok' if same else 'DIFFERS':8} {name}{note}")
            if not same:
                failed.append(name)
        else:
            golden.write_text(text)
            print(f"wrote    {golden.relative_to(MODELS_DIR.parent)}{note}")
    if failed:
        print(f"{len(failed)} model(s) failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
