"""`cog` as seen by a Cog model running in an Ember replica.

The worker puts this folder first on sys.path for Cog packages, so `from cog import ...`
resolves here without installing Cog. Every name maps onto Ember's own types, which is what
lets one worker, one validator and one schema generator serve Cog models unchanged. It covers
the 0.16 names and the 0.17+ ones (`BaseRunner`, `run`, `@concurrent`, `self.record_metric`).
"""

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from ember.scope import MetricMode, current_scope, record_metric
from ember.types import (
    AsyncConcatenateIterator,
    CancelationException,
    ConcatenateIterator,
    File,
    Input,
    Path,
    Secret,
)

__version__ = "0.16.12+ember"

F = TypeVar("F", bound=Callable[..., Any])


class ExperimentalFeatureWarning(Warning):
    """Cog warns with this on experimental features; kept so imports of it work."""


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


def streaming(fn: F) -> F:
    """Cog 0.17+ marker for streaming predictors; streaming already follows the return type."""
    return fn


__all__ = [
    "AsyncConcatenateIterator",
    "BaseModel",
    "BasePredictor",
    "BaseRunner",
    "CancelationException",
    "ConcatenateIterator",
    "ExperimentalFeatureWarning",
    "File",
    "Input",
    "Path",
    "Secret",
    "__version__",
    "concurrent",
    "current_scope",
    "emit_metric",
    "streaming",
]
