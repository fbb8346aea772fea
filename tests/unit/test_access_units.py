"""The pure rules behind tenant isolation: scopes and owners, rate limits, sealing secrets,
safe file names and file-input values."""

from __future__ import annotations

import secrets
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from ember.control.access import Forbidden, Principal, acts_for, allows, require, sees
from ember.control.files import safe_file_name
from ember.control.policies.ratelimit import RateLimit, RateLimiter, retry_after
from ember.control.predictions import PredictionState
from ember.control.sealing import (
    REDACTED,
    Sealer,
    SealError,
    redact,
    scrub,
    secret_fields,
)
from ember.control.validation import file_value_problem
from ember.store.db import connect, migrate, sqlite_url
from ember.store.repository import Store

ALICE_PREDICT = Principal("alice", "predict", "tok_1")
ALICE_DEPLOY = Principal("alice", "deploy", "tok_2")
ADMIN = Principal("ember", "admin")


def test_scopes_nest_predict_in_deploy_in_admin() -> None:
    assert [allows(ALICE_PREDICT, s) for s in ("predict", "deploy", "admin")] == [1, 0, 0]
    assert [allows(ALICE_DEPLOY, s) for s in ("predict", "deploy", "admin")] == [1, 1, 0]
    assert [allows(ADMIN, s) for s in ("predict", "deploy", "admin")] == [1, 1, 1]
    with pytest.raises(Forbidden, match=r"scope 'deploy'.*--scope deploy"):
        require(ALICE_PREDICT, "deploy", "delete models")


def test_owners_see_their_own_and_public_objects_admins_see_all() -> None:
    assert sees(ALICE_PREDICT, "alice") and not sees(ALICE_PREDICT, "bob")
    assert sees(ALICE_PREDICT, "bob", public=True)
    assert sees(ADMIN, "bob")


def test_acting_on_another_owners_object_is_not_found_not_forbidden() -> None:
    assert acts_for(ALICE_DEPLOY, "alice", "deploy", "x")
    assert not acts_for(ALICE_DEPLOY, "bob", "deploy", "x")  # the caller answers 404
    assert not acts_for(ALICE_PREDICT, "bob", "deploy", "x")  # 404 before the scope
    with pytest.raises(Forbidden):
        acts_for(ALICE_PREDICT, "alice", "deploy", "x")
    assert acts_for(ADMIN, "bob", "deploy", "x")


@pytest.mark.parametrize(
    ("text", "count", "per"),
    [("600/min", 600, 60), ("10/s", 10, 1), ("5000/h", 5000, 3600), (" 3 / minute ", 3, 60)],
)
def test_rate_limits_parse(text: str, count: int, per: float) -> None:
    limit = RateLimit.parse(text)
    assert (limit.count, limit.per) == (count, per)
    assert RateLimit.parse(str(limit)) == limit


@pytest.mark.parametrize("text", ["fast", "0/s", "10/day", "10", "-1/s", "1e3/s"])
def test_bad_rate_limits_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="600/min"):
        RateLimit.parse(text)


def test_the_bucket_allows_a_burst_then_the_steady_rate() -> None:
    limiter, limit = RateLimiter(), RateLimit(3, 60.0)  # 3 a minute: one every 20 s
    assert [limiter.take("t", limit, 0.0) for _ in range(3)] == [0, 0, 0]
    assert limiter.take("t", limit, 0.0) == pytest.approx(20.0)
    assert limiter.take("t", limit, 10.0) == pytest.approx(10.0)  # half a request refilled
    assert limiter.take("t", limit, 20.0) == 0.0
    assert limiter.take("other", limit, 20.0) == 0.0  # buckets are per token
    assert limiter.take("t", None, 20.0) == 0.0  # no limit: never counted
    assert retry_after(0.2) == "1" and retry_after(10.01) == "11"


def test_a_changed_limit_starts_a_fresh_bucket() -> None:
    limiter = RateLimiter()
    assert limiter.take("t", RateLimit(1, 60.0), 0.0) == 0.0
    assert limiter.take("t", RateLimit(1, 60.0), 1.0) > 0
    assert limiter.take("t", RateLimit(5, 60.0), 1.0) == 0.0


def test_the_key_file_is_made_once_readable_by_its_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMBER_SECRET_KEY", raising=False)
    first = Sealer.for_data_dir(tmp_path)
    mode = stat.S_IMODE((tmp_path / "secret.key").stat().st_mode)
    assert mode == 0o600
    sealed = first.seal("whsec_abc")
    assert "whsec_abc" not in sealed
    assert Sealer.for_data_dir(tmp_path).unseal(sealed) == "whsec_abc"
    assert first.read_setting(sealed) == ("whsec_abc", False)
    assert first.read_setting("whsec_old") == ("whsec_old", True)  # stored in clear: reseal
    with pytest.raises(SealError, match="not the one it was stored with"):
        Sealer(Fernet.generate_key()).unseal(sealed)
    with pytest.raises(SealError, match="Fernet key"):
        Sealer(b"short")


def test_secret_fields_are_sealed_stored_and_opened_and_shown_redacted(tmp_path: Path) -> None:
    sealer = Sealer(Fernet.generate_key())
    schema = {
        "components": {
            "schemas": {
                "Input": {
                    "properties": {
                        "key": {"type": "string", "format": "password", "x-cog-secret": True},
                        "text": {"type": "string"},
                    }
                }
            }
        }
    }
    fields = secret_fields(schema)
    assert fields == {"key"}
    stored = sealer.seal_fields({"key": "sk-123456", "text": "hi"}, fields)
    assert stored["text"] == "hi" and "sk-123456" not in str(stored)
    assert sealer.unseal_fields(stored) == ({"key": "sk-123456", "text": "hi"}, {"key"})
    assert redact({"key": "sk-123456", "text": "hi"}, fields) == {"key": REDACTED, "text": "hi"}
    assert scrub("using sk-123456 now", ["sk-123456", "ab"]) == f"using {REDACTED} now"
    assert scrub("a b", ["a"]) == "a b"  # too short to hide anything


def test_an_optional_secret_left_out_does_not_break_logs_or_the_end() -> None:
    state = PredictionState(
        "p", "alice", "alice/m", "v", {"text": "hi"}, secret_fields=frozenset({"api_key"})
    )
    state.add_logs("hello\n")
    state.finish("failed", error="it broke")
    assert state.logs == "hello\n" and state.error == "it broke" and state.done.is_set()


def test_creating_a_setting_twice_at_once_gives_both_the_same_value(tmp_path: Path) -> None:
    store = Store(connect(sqlite_url(tmp_path)))
    migrate(store.engine)
    barrier = threading.Barrier(8)

    def make() -> str:
        barrier.wait()  # every thread past its read, all writing together
        return secrets.token_hex(8)

    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda _: store.setting_or_create("k", make), range(8)))
    assert len(set(values)) == 1


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("photo.png", "photo.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\notes.txt", "notes.txt"),
        ("..", "file"),
        ("", "file"),
        ("bell\x07.txt", "bell.txt"),
        ("é" * 200 + ".txt", "é" * 125 + ".txt"),
    ],
)
def test_file_names_are_made_safe(given: str, kept: str) -> None:
    assert safe_file_name(given) == kept
    assert len(safe_file_name(given).encode()) <= 255


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("https://example.com/cat.png", None),
        ("data:image/png;base64,iVBORw0KGgo=", None),
        ("data:,hello%20world", None),
        ("data:image/png;base64,iVBOR w0KGgo=", "base64"),
        ("data:image/png", "data:<type>;base64,<data>"),
        ("cat.png", "not an http(s) URL"),
        ("ftp://example.com/cat.png", "not an http(s) URL"),
    ],
)
def test_file_values_are_urls_or_well_formed_data_uris(value: str, problem: str | None) -> None:
    found = file_value_problem(value)
    assert (found is None) if problem is None else (problem in (found or ""))
