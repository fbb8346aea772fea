"""Metrics a model records follow Cog's (coglet's) rules, so a model that works on Ember records
the same metrics on Replicate and fails on the same names; and a failure's error text names an
exception that is not an ordinary one."""

from __future__ import annotations

import pytest

from ember.scope import Scope
from ember.worker.runner import failure_message


def recorded(*calls: tuple) -> dict:
    scope = Scope("p1")
    for call in calls:
        scope.record_metric(*call)
    return scope.metrics


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("_invalid", "segment '_invalid' must start with a letter"),
        ("9lives", "segment '9lives' must start with a letter"),
        ("foo__bar", "segment 'foo__bar' must not contain consecutive underscores"),
        ("invalid_", "segment 'invalid_' must end with a letter or digit"),
        ("foo-bar", "segment 'foo-bar' contains invalid character '-'"),
        ("caf\u00e9", "contains invalid character '\u00e9'"),
        (".invalid", "must not start with a dot"),
        ("invalid.", "must not end with a dot"),
        ("foo..bar", "must not contain empty segments (consecutive dots)"),
        ("a.b.c.d.e", "must have at most 4 dot-separated segments (got 5)"),
        ("a" * 129, "must be 128 characters or fewer (got 129 characters)"),
        ("", "must not be empty"),
        ("predict_time", "'predict_time' is reserved by the runtime"),
        ("cog.system", "the 'cog.' prefix is reserved for system metrics"),
    ],
)
def test_names_cog_refuses_are_refused_with_its_message(name: str, message: str) -> None:
    scope = Scope("p1")
    with pytest.raises(ValueError, match=r"metric name|reserved") as refused:
        scope.record_metric(name, 1)
    assert message in str(refused.value)
    assert scope.metrics == {}


@pytest.mark.parametrize("name", ["a", "valid_name", "a1_b2", "x" * 128, "a.b.c.d", "cogs.x"])
def test_names_cog_accepts_are_recorded(name: str) -> None:
    assert recorded((name, 1))


def test_dotted_names_nest_in_every_mode() -> None:
    metrics = recorded(
        ("timing.preprocess", 0.1),
        ("timing.steps", 1, "incr"),
        ("timing.steps", 2, "increment"),
        ("timing.phases", "load", "append"),
        ("timing.phases", "run", "append"),
        ("temperature", 0.7),
    )
    assert metrics == {
        "timing": {"preprocess": 0.1, "steps": 3, "phases": ["load", "run"]},
        "temperature": 0.7,
    }


def test_a_deeper_name_replaces_a_scalar_in_its_way() -> None:
    assert recorded(("timing", 1), ("timing.total", 2)) == {"timing": {"total": 2}}


def test_none_deletes_and_prunes_what_it_empties() -> None:
    metrics = recorded(
        ("a.b.c", 1), ("a.keep", 2), ("a.b.c", None), ("gone", 3), ("gone", None), ("never", None)
    )
    assert metrics == {"a": {"keep": 2}}
    assert recorded(("x.y", 1), ("x.y", None)) == {}


def test_deleting_a_reserved_name_is_harmless_but_a_malformed_one_is_refused() -> None:
    assert recorded(("predict_time", None)) == {}
    with pytest.raises(ValueError, match="consecutive dots"):
        recorded(("a..b", None))


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric mode"):
        recorded(("a", 1, "multiply"))


def test_failure_text_names_exceptions_outside_exception_as_cog_does() -> None:
    assert failure_message(SystemExit(1)) == "SystemExit: 1"
    assert failure_message(SystemExit()) == "SystemExit"
    assert failure_message(KeyboardInterrupt()) == "KeyboardInterrupt"
    # ordinary exceptions keep their bare message (what Replicate's clients have always seen)
    assert failure_message(ValueError("the model exploded")) == "the model exploded"
    assert failure_message(RuntimeError()) == "RuntimeError"
