"""Engine packages: an `ember.yaml` that names a serving engine Ember ships instead of a
predictor of its own.

What the control plane needs to know about an engine (what to install, how many requests a
replica takes at once) is plain data here, so reading a package never imports torch or
llama.cpp; the engine module itself (`ember.engines.<name>`) is imported only inside the
replica, by `load`.
"""

from __future__ import annotations

import dataclasses
import importlib
import re

from ember.engines.base import resolve_model_path
from ember.packages.predictor import Predictor, predictor_from_target
from ember.packages.spec import PackageError, PackageSpec


@dataclasses.dataclass(frozen=True)
class EngineInfo:
    requirements: tuple[str, ...]
    default_concurrency: int
    why: str
    # The engine option that sets how many requests one replica serves at once, if any.
    concurrency_option: str | None = None

    def concurrency(self, options: dict) -> int:
        """Predictions one replica accepts at once: the engine's own option when the package
        sets it (checked by the manifest's engine_options), else the engine's default."""
        if self.concurrency_option and options.get(self.concurrency_option):
            return options[self.concurrency_option]
        return self.default_concurrency


ENGINES: dict[str, EngineInfo] = {
    "llama_cpp": EngineInfo(
        ("llama-cpp-python==0.3.36",),
        8,
        "GGUF models on CPU (or GPU builds), continuous batching of `parallel` sequences",
        concurrency_option="parallel",
    ),
    "sentence_transformers": EngineInfo(
        ("torch==2.13.0", "sentence-transformers==6.2.0"),
        32,
        "embeddings; concurrent requests are batched into one forward pass",
    ),
    "vllm": EngineInfo(
        ("vllm==0.33.0",),
        64,
        "LLMs on NVIDIA GPUs with continuous batching",
    ),
}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _distribution(requirement: str) -> str:
    """The project name a requirement line asks for, normalised as PEP 503 says (itself for
    lines that are not requirements, e.g. a local path). Not `packaging`: this module is
    imported inside model environments, which hold only the worker's own dependencies."""
    match = _NAME.match(requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else requirement


def describe_engines() -> str:
    """Each engine's name and what it is for, for error messages."""
    return "; ".join(f"{name} ({info.why})" for name, info in ENGINES.items())


def with_engine_requirements(requirements: list[str], engine: str) -> list[str]:
    """The package's requirements plus the engine's own, except those it pins itself."""
    named = {_distribution(r) for r in requirements}
    extra = [r for r in ENGINES[engine].requirements if _distribution(r) not in named]
    return [*requirements, *extra]


def load(spec: PackageSpec) -> Predictor:
    """Import the engine inside the replica and wrap it as a predictor."""
    assert spec.engine is not None
    try:
        module = importlib.import_module(f"ember.engines.{spec.engine.name}")
    except ImportError as exc:
        raise PackageError(
            f"engine {spec.engine.name!r} cannot be imported ({exc}); its requirements "
            f"{', '.join(ENGINES[spec.engine.name].requirements)} must be installed"
        ) from exc
    try:
        model = resolve_model_path(spec.root, spec.engine.model) if spec.engine.model else None
    except FileNotFoundError as exc:
        raise PackageError(str(exc)) from exc
    instance = module.Engine(model, dict(spec.engine.options))
    return predictor_from_target(spec, instance, reject_unknown_inputs=True)
