"""The control plane's pure parts and the group-commit writer, without a server."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from ember.api.errors import ApiError
from ember.api.routes.predictions import parse_prefer
from ember.control.predictions import PredictionState
from ember.control.signing import UrlSigner
from ember.control.validation import InputValidator
from ember.packages.loader import load_predictor, read_package
from ember.packages.schema import openapi_schema
from ember.store.db import connect, migrate
from ember.store.repository import Store
from ember.store.writer import GroupCommitWriter
from tests.support.paths import model_path


def schema_of(kind: str, name: str) -> dict:
    return openapi_schema(load_predictor(read_package(model_path(kind, name))))


def test_validator_reports_errors_the_way_cog_does():
    validator = InputValidator(schema_of("cog", "constraint-choices"))
    assert validator.errors({"mode": "fast"}) == []
    errors = validator.errors({"scheduler": "nope", "size": 3})
    assert {tuple(e["loc"]) for e in errors} == {
        ("body", "input", "mode"),
        ("body", "input", "scheduler"),
        ("body", "input", "size"),
    }
    assert next(e for e in errors if e["loc"][-1] == "mode")["type"] == "missing"


def test_validator_accepts_null_for_optional_inputs_and_checks_bounds():
    validator = InputValidator(schema_of("cog", "constraint-optional"))
    assert validator.errors({"tag": None, "seed": None}) == []
    bounds = InputValidator(schema_of("cog", "constraint-ge-le"))
    assert [e["loc"][-1] for e in bounds.errors({"steps": 11})] == ["steps"]
    assert bounds.errors({"steps": 10, "temperature": 0.0}) == []


def test_ember_packages_reject_unknown_inputs_at_the_gateway():
    validator = InputValidator(schema_of("ember", "function"))
    assert validator.errors({"text": "a", "stpes": 1})[0]["type"] == "extra_forbidden"


def test_signed_urls_expire_and_resist_tampering():
    signer = UrlSigner(b"k" * 32)
    path, _, query = signer.sign("/v1/outputs/p1/out.png", ttl=60).partition("?")
    params = dict(item.split("=") for item in query.split("&"))
    assert signer.verify(path, params["expires"], params["signature"])
    assert not signer.verify("/v1/outputs/p2/out.png", params["expires"], params["signature"])
    assert not signer.verify(path, str(int(params["expires"]) + 1), params["signature"])
    expired = signer.sign(path, ttl=-1).split("?")[1]
    old = dict(item.split("=") for item in expired.split("&"))
    assert not signer.verify(path, old["expires"], old["signature"])
    assert not UrlSigner(b"x" * 32).verify(path, params["expires"], params["signature"])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, (None, None)),
        ("wait", (60, None)),
        ("wait=5", (5, None)),
        ("respond-async, wait=1", (1, None)),
        ("wait; files=data-uri", (60, True)),
        ("files=url", (None, False)),
    ],
)
def test_prefer_header(header, expected):
    assert parse_prefer(header) == expected


@pytest.mark.parametrize("header", ["wait=0", "wait=61", "wait=1000", "wait=abc", "wait=-1"])
def test_absurd_prefer_wait_is_a_clear_400(header):
    with pytest.raises(ApiError) as raised:
        parse_prefer(header)
    assert raised.value.status == 400
    assert "between 1 and 60" in str(raised.value.detail)


def _state(prediction_id: str) -> PredictionState:
    return PredictionState(
        id=prediction_id, owner="ember", model="ember/m", version_id="v" * 64, input={"x": 1}
    )


def test_group_commit_writes_the_latest_state_and_wakes_waiters(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'ember.db'}")
    migrate(engine)
    store = Store(engine)
    writer = GroupCommitWriter(store)

    async def go():
        states = [_state(f"p{i}") for i in range(50)]
        await asyncio.gather(*(writer.durable(s.id, s.row) for s in states))
        states[0].mark_started()
        states[0].finish("succeeded", output="done")
        await writer.durable(states[0].id, states[0].row)

    asyncio.run(go())
    writer.close()
    rows = {row.id: row for row in store.unfinished_predictions()}
    assert len(rows) == 49 and "p0" not in rows
    finished = store.prediction("p0")
    assert finished.status == "succeeded" and finished.output == "done"
    assert finished.completed_at is not None


def test_group_commit_flushes_marks_on_close(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'ember.db'}")
    migrate(engine)
    store = Store(engine)
    writer = GroupCommitWriter(store)
    state = _state("only-marked")
    writer.mark(state.id, state.row)
    writer.close()
    assert store.prediction("only-marked").status == "starting"


def test_prediction_page_cursor_orders_newest_first(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'ember.db'}")
    migrate(engine)
    store = Store(engine)
    base = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    rows = []
    for i in range(5):
        state = _state(f"p{i}")
        state.created_at = base + datetime.timedelta(seconds=i)
        rows.append(state.row())
    store.upsert_predictions(rows)
    first = store.predictions_page(2)
    assert [r.id for r in first] == ["p4", "p3"]
    second = store.predictions_page(2, (first[-1].created_at, first[-1].id))
    assert [r.id for r in second] == ["p2", "p1"]


def test_repeated_marks_coalesce_to_the_last_state(tmp_path):
    """Marks for the same prediction coalesce: the last state wins, nothing is lost."""
    engine = connect(f"sqlite:///{tmp_path / 'ember.db'}")
    migrate(engine)
    store = Store(engine)
    writer = GroupCommitWriter(store)
    state = _state("busy")
    for i in range(2000):
        state.logs = f"line {i}\n"
        writer.mark(state.id, state.row)
    writer.close()
    assert store.prediction("busy").logs == "line 1999\n"
