"""Per-prediction scope: the request context and metrics a predictor can reach while it runs.

The current scope lives in a context variable so concurrent async predictions each see their
own. Threads the predictor starts do not inherit context variables; for them the worker
registers a fallback (the only prediction running), which is exact whenever concurrency is 1.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

MetricMode = Literal["replace", "incr", "append"]


@dataclass
class Scope:
    """One prediction as its predictor sees it."""

    prediction_id: str
    context: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def record_metric(self, name: str, value: Any, mode: MetricMode = "replace") -> None:
        """Record a metric on the prediction: replace it, add to it, or append to a list."""
        if mode == "replace":
            self.metrics[name] = value
        elif mode == "incr":
            self.metrics[name] = self.metrics.get(name, 0) + value
        elif mode == "append":
            current = self.metrics.get(name)
            if current is None:
                self.metrics[name] = [value]
            elif isinstance(current, list):
                current.append(value)
            else:
                self.metrics[name] = [current, value]
        else:
            raise ValueError(f"unknown metric mode {mode!r}: use replace, incr or append")


_current: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("ember_scope", default=None)
_fallback: Callable[[], Scope | None] = lambda: None  # noqa: E731 - replaced by the worker


def current_scope() -> Scope:
    """The scope of the prediction running in this task or thread."""
    scope = _current.get() or _fallback()
    if scope is None:
        raise RuntimeError("current_scope() is only available while a prediction runs")
    return scope


def current_scope_or_none() -> Scope | None:
    return _current.get() or _fallback()


def enter(scope: Scope) -> contextvars.Token[Scope | None]:
    return _current.set(scope)


def leave(token: contextvars.Token[Scope | None]) -> None:
    _current.reset(token)


def set_fallback(provider: Callable[[], Scope | None]) -> None:
    """Let the worker say which prediction owns code running outside any scope."""
    global _fallback
    _fallback = provider


def record_metric(name: str, value: Any, mode: MetricMode = "replace") -> None:
    """Record a metric on the current prediction (ignored outside a prediction)."""
    scope = current_scope_or_none()
    if scope is not None:
        scope.record_metric(name, value, mode)
