"""`cog` as seen by a Cog model running in an Ember replica.

The worker puts this folder first on sys.path for Cog packages, so `from cog import ...`
resolves here without installing Cog. Every name maps onto Ember's own types, which is what
lets one worker, one validator and one schema generator serve Cog models unchanged. It covers
the 0.16 names and the 0.17+ ones (`BaseRunner`, `run`, `@concurrent`, `self.record_metric`).
"""

import typing
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import CoreSchema, core_schema

from ember.scope import MetricMode, current_scope, record_metric
from ember.types import (
    AsyncConcatenateIterator,
    CancelationException,
    ConcatenateIterator,
    File,
    InputSpec,
    Path,
    Secret,
)

from . import coder, types
from .types import Input, URLFile, URLPath

__version__ = "0.16.12+ember"

F = TypeVar("F", bound=Callable[..., Any])


ExperimentalFeatureWarning = types.ExperimentalFeatureWarning

# Cog's record of what `Input(...)` was given; here it is Ember's own record of the same.
FieldInfo = InputSpec


class _OpaqueMarker:
    """`Annotated[T, Opaque]`: T is passed through as plain JSON and shown as an object.

    Cog uses it for types its schema generator cannot read (a third-party class). Acting as
    pydantic metadata, it swaps T's validation for "any value" without ever asking pydantic
    about T, and describes T as an object (or an array of objects for a list annotation).
    """

    __ember_opaque__ = True

    def __repr__(self) -> str:
        return "cog.Opaque"

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        """Accept any value: the model receives exactly the JSON it was sent."""
        return core_schema.any_schema(metadata={"cog_opaque_list": _is_list(source)})

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        """An object, or an array of objects, with no further detail — as Cog writes it."""
        if (schema.get("metadata") or {}).get("cog_opaque_list"):
            return {"type": "array", "items": {"type": "object"}}
        return {"type": "object"}


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (list, tuple, set, frozenset)


Opaque = _OpaqueMarker()


class BasePredictor:
    """Cog's optional base class: `setup()` once, then `predict(...)` per request."""

    def setup(self, weights: Any = None) -> None:
        """Load the model; override it."""

    def predict(self, **kwargs: Any) -> Any:
        raise NotImplementedError("predict has not been implemented by the predictor")

    def record_metric(self, key: str, value: Any, mode: MetricMode = "replace") -> None:
        """Cog 0.17+: record a metric on the running prediction."""
        record_metric(key, value, mode)

    @property
    def scope(self) -> Any:
        return current_scope()


class BaseRunner(BasePredictor):
    """Cog 0.17+ name for a predictor whose entry point is `run(...)`."""

    def run(self, **kwargs: Any) -> Any:
        raise NotImplementedError("run has not been implemented by the runner")


def emit_metric(name: str, value: Any) -> None:
    """Cog ≤0.13 spelling of record_metric, still used by many models."""
    record_metric(name, value)


def concurrent(max: int = 1) -> Callable[[F], F]:
    """Cog 0.17+: `@concurrent(max=N)` on an async predict allows N predictions at once."""

    def mark(fn: F) -> F:
        fn.__cog_concurrency__ = max  # type: ignore[attr-defined]
        return fn

    return mark


def streaming(fn: F | None = None) -> Any:
    """Cog's `@streaming` (or `@streaming()`) on predict(): callers of the container API may
    then ask for server-sent events (`Accept: text/event-stream`); the schema says so with
    `x-cog-streaming`. Streaming the output itself follows the return type, as always."""

    def mark(inner: F) -> F:
        inner.__cog_streaming__ = True  # type: ignore[attr-defined]
        return inner

    return mark if fn is None else mark(fn)


__all__ = [
    "AsyncConcatenateIterator",
    "BaseModel",
    "BasePredictor",
    "BaseRunner",
    "CancelationException",
    "ConcatenateIterator",
    "ExperimentalFeatureWarning",
    "FieldInfo",
    "File",
    "Input",
    "Opaque",
    "Path",
    "Secret",
    "URLFile",
    "URLPath",
    "__version__",
    "coder",
    "concurrent",
    "current_scope",
    "emit_metric",
    "streaming",
    "types",
]
