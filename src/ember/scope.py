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

MetricMode = Literal["replace", "incr", "increment", "append"]

# Cog's (coglet's) naming rules, so a model that records a metric Cog refuses fails here too
# rather than working on Ember and breaking on Replicate.
MAX_METRIC_NAME_LENGTH = 128
MAX_METRIC_NAME_SEGMENTS = 4
RESERVED_METRIC = "predict_time"  # the runtime's own: a model must not overwrite it
RESERVED_METRIC_PREFIX = "cog."  # Cog's system metrics


def check_metric_name_structure(name: str) -> None:
    """Refuse a metric name that is not dot-separated `[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*`
    segments, at most 4 of them and 128 characters, with coglet's messages (a model's author
    sees the same error on either platform)."""
    if not name:
        raise ValueError("metric name must not be empty")
    if len(name) > MAX_METRIC_NAME_LENGTH:
        raise ValueError(
            f"metric name must be {MAX_METRIC_NAME_LENGTH} characters or fewer "
            f"(got {len(name)} characters)"
        )
    segments = name.split(".")
    if len(segments) > MAX_METRIC_NAME_SEGMENTS:
        raise ValueError(
            f"metric name must have at most {MAX_METRIC_NAME_SEGMENTS} dot-separated segments "
            f"(got {len(segments)})"
        )
    for index, segment in enumerate(segments):
        if not segment:
            if index == 0:
                raise ValueError("metric name must not start with a dot")
            if index == len(segments) - 1:
                raise ValueError("metric name must not end with a dot")
            raise ValueError("metric name must not contain empty segments (consecutive dots)")
        _check_segment(segment)


def _check_segment(segment: str) -> None:
    """One dot-separated part: starts with a letter, ends with a letter or digit, single
    underscores between ASCII letters and digits."""
    if not (segment[0].isascii() and segment[0].isalpha()):
        raise ValueError(f"metric name segment '{segment}' must start with a letter")
    for char in segment[1:]:
        if not (char == "_" or (char.isascii() and char.isalnum())):
            raise ValueError(f"metric name segment '{segment}' contains invalid character '{char}'")
    if "__" in segment:
        raise ValueError(
            f"metric name segment '{segment}' must not contain consecutive underscores"
        )
    if segment.endswith("_"):
        raise ValueError(f"metric name segment '{segment}' must end with a letter or digit")


def check_metric_name(name: str) -> None:
    """A name a model may record: well formed and not one the runtime keeps for itself."""
    if name == RESERVED_METRIC:
        raise ValueError(f"'{RESERVED_METRIC}' is reserved by the runtime")
    if name.startswith(RESERVED_METRIC_PREFIX):
        raise ValueError(f"the '{RESERVED_METRIC_PREFIX}' prefix is reserved for system metrics")
    check_metric_name_structure(name)


@dataclass
class Scope:
    """One prediction as its predictor sees it."""

    prediction_id: str
    context: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # Told of each metric as it is recorded (name, value, "replace"/"increment"/"append"):
    # the worker sends it on at once, for Cog's live `metric` events.
    on_metric: Callable[[str, Any, str], None] | None = field(
        default=None, repr=False, compare=False
    )

    def record_metric(self, name: str, value: Any, mode: MetricMode = "replace") -> None:
        """Record a metric on the prediction: replace it, add to it, or append to a list.

        A dotted name nests (`timing.preprocess` → `{"timing": {"preprocess": ...}}`), as Cog
        reports it; `None` deletes the metric, as in Cog.
        """
        if mode not in ("replace", "incr", "increment", "append"):
            raise ValueError(f"unknown metric mode {mode!r}: use replace, incr or append")
        if value is None:
            self.delete_metric(name)
            return
        check_metric_name(name)
        *parents, leaf = name.split(".")
        node = self._branch(parents)
        if mode == "replace":
            node[leaf] = value
        elif mode in ("incr", "increment"):
            node[leaf] = node.get(leaf, 0) + value
        else:
            current = node.get(leaf)
            if current is None:
                node[leaf] = [value]
            elif isinstance(current, list):
                current.append(value)
            else:
                node[leaf] = [current, value]
        if self.on_metric is not None:
            self.on_metric(name, value, "increment" if mode == "incr" else mode)

    def delete_metric(self, name: str) -> None:
        """Remove a metric (absent is fine) and the nesting it leaves empty. Reserved names are
        not refused, as in Cog: deleting what a model never had harms nothing."""
        check_metric_name_structure(name)
        *parents, leaf = name.split(".")
        path: list[tuple[dict[str, Any], str]] = []
        node = self.metrics
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                return
            path.append((node, part))
            node = child
        node.pop(leaf, None)
        for parent, part in reversed(path):
            if parent[part]:
                break
            del parent[part]

    def _branch(self, parents: list[str]) -> dict[str, Any]:
        """The dict a dotted name's leaf lives in, made on the way (a scalar in the way is
        replaced: the newer, deeper name wins)."""
        node = self.metrics
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        return node


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
