"""Prediction webhooks must reach a real receiver signed, filtered, throttled, ordered and retried
the way Replicate's and Cog's are, and be verifiable with the official client's verifier."""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest
from replicate.webhook import InvalidSignatureError, Webhooks, WebhookSigningSecret

from ember.control.webhooks import (
    EVENTS,
    WebhookSender,
    new_signing_secret,
    signature_headers,
)
from ember.egress import EgressPolicy

pytestmark = pytest.mark.timeout(30)

SECRET = new_signing_secret()
FAST = (0.01, 0.01, 0.01, 0.01)
# The receivers listen on loopback, which webhooks may reach only when allowed.
LOOPBACK = EgressPolicy(("127.0.0.1",))


# -- a real HTTP/1.1 receiver on loopback -----------------------------------------------------


@dataclass
class Reply:
    """How the receiver answers one call: status, headers, delay; `drop` closes the socket."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes
    arrived: float
    answered: float = 0.0

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str = SECRET) -> None:
        Webhooks.validate(
            headers=self.headers, body=self.body.decode(), secret=WebhookSigningSecret(key=secret)
        )


class Receiver:
    """Answers with `script` in order (then 200) and records every call it gets."""

    def __init__(self, *script: Reply | int) -> None:
        self.script = [r if isinstance(r, Reply) else Reply(r) for r in script]
        self.calls: list[Call] = []
        self.url = ""
        self._arrived = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def wait_calls(self, count: int, timeout: float = 5.0) -> list[Call]:
        async with asyncio.timeout(timeout):
            while len(self.calls) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.calls

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        headers: dict[str, str] = {}
        body = bytearray()
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                    body = bytearray()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    call = Call(headers, bytes(body), time.monotonic())
                    self.calls.append(call)
                    self._arrived.set()
                    reply = self.script.pop(0) if self.script else Reply()
                    if reply.drop:
                        return
                    await asyncio.sleep(reply.delay)
                    response_headers = [("content-length", "0"), *reply.headers.items()]
                    call.answered = time.monotonic()
                    writer.write(
                        conn.send(h11.Response(status_code=reply.status, headers=response_headers))
                    )
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                        conn.start_next_cycle()
                    else:
                        return
                else:  # ConnectionClosed or anything unexpected
                    return
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


# -- helpers ----------------------------------------------------------------------------------


class Prediction:
    """A prediction's current state; `payload` is what the sender calls at send time."""

    def __init__(self, prediction_id: str = "p1") -> None:
        self.id = prediction_id
        self.state: dict[str, Any] = {
            "id": prediction_id,
            "model": "acme/echo",
            "version": "v1",
            "status": "starting",
            "output": None,
            "logs": "",
            "n": 0,
        }

    def payload(self) -> dict[str, Any]:
        return copy.deepcopy(self.state)

    def update(self, **changes: Any) -> None:
        self.state.update(changes)
        self.state["n"] += 1


def webhook_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("ember-webhook:")]


async def finish(sender: WebhookSender) -> None:
    """Wait for every owed call, close, and check nothing was left behind."""
    await sender.wait_idle(timeout=5)
    await sender.aclose()
    assert sender.active_count == 0
    assert webhook_tasks() == []


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


# -- signatures -------------------------------------------------------------------------------


def test_signature_matches_the_standard_webhooks_test_vector():
    headers = signature_headers(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        b'{"test": 2432232314}',
        message_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
    )
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_new_secret_and_signatures_verify_with_the_replicate_client():
    secret = new_signing_secret()
    assert secret.startswith("whsec_") and secret != new_signing_secret()
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32

    body = json.dumps({"id": "p1", "status": "succeeded", "output": "héllo"}).encode()
    headers = signature_headers(secret, body)
    assert headers["webhook-id"].startswith("msg_")
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    key = WebhookSigningSecret(key=secret)
    Webhooks.validate(headers=headers, body=body.decode(), secret=key, tolerance=60)

    with pytest.raises(InvalidSignatureError):
        Webhooks.validate(headers=headers, body=body.decode().replace("p1", "p2"), secret=key)
    with pytest.raises(InvalidSignatureError):
        Webhooks.validate(
            headers=headers, body=body.decode(), secret=WebhookSigningSecret(key=SECRET)
        )
    assert signature_headers(secret, body, message_id="msg_x", timestamp=5) == signature_headers(
        secret.removeprefix("whsec_"), body, message_id="msg_x", timestamp=5
    )
    with pytest.raises(ValueError):
        signature_headers("whsec_not base64!", body)


def test_deliveries_are_signed_json_prediction_objects():
    async def go():
        async with Receiver() as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK)
            p = Prediction()
            p.update(status="processing")
            sender.notify(p.id, rx.url, None, "start", p.payload)
            await rx.wait_calls(1)
            p.update(status="succeeded", output="done")
            sender.notify(p.id, rx.url, None, "completed", p.payload)
            calls = await rx.wait_calls(2)
            await finish(sender)

        assert [c.json for c in calls] == [
            {**p.state, "status": "processing", "output": None, "n": 1},
            p.state,
        ]
        for call in calls:
            call.verify()
            assert call.headers["content-type"] == "application/json"
            assert call.headers["user-agent"] == "ember-webhooks"
            assert abs(int(call.headers["webhook-timestamp"]) - time.time()) < 5
        assert calls[0].id != calls[1].id

    run(go)


def test_rotated_secret_is_used_from_the_next_delivery_on():
    async def go():
        secrets = [new_signing_secret()]
        async with Receiver() as rx:
            sender = WebhookSender(lambda: secrets[-1], policy=LOOPBACK)
            p = Prediction()
            sender.notify(p.id, rx.url, None, "start", p.payload)
            await rx.wait_calls(1)
            secrets.append(new_signing_secret())
            sender.notify(p.id, rx.url, None, "completed", p.payload)
            calls = await rx.wait_calls(2)
            await finish(sender)
        calls[0].verify(secrets[0])
        calls[1].verify(secrets[1])
        with pytest.raises(InvalidSignatureError):
            calls[1].verify(secrets[0])

    run(go)


# -- filter, throttling, order ----------------------------------------------------------------


def test_filter_with_only_completed_sends_only_completed():
    async def go():
        async with Receiver() as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, throttle=0.01)
            p = Prediction()
            for event in EVENTS:
                p.update(status="succeeded" if event == "completed" else "processing")
                sender.notify(p.id, rx.url, ["completed"], event, p.payload)
                await asyncio.sleep(0.02)
            await finish(sender)
        assert [c.json for c in rx.calls] == [p.state]

    run(go)


def test_outputs_are_throttled_and_the_last_state_is_delivered():
    async def go():
        async with Receiver() as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, throttle=0.5)
            p = Prediction()
            p.update(status="processing", output=[])
            started = time.monotonic()
            for i in range(20):
                p.update(output=[*p.state["output"], i])
                sender.notify(p.id, rx.url, None, "output", p.payload)
                await asyncio.sleep(0.3 / 20)
            await sender.wait_idle(timeout=3)
            outputs = list(rx.calls)
            p.update(status="succeeded")
            sender.notify(p.id, rx.url, None, "completed", p.payload)
            await finish(sender)

        assert 1 <= len(outputs) <= 2
        assert outputs[-1].json["output"] == list(range(20))
        if len(outputs) == 2:
            assert outputs[1].arrived - started >= 0.45  # the window opened at the first send
        assert rx.calls[-1].json == p.state
        assert len(rx.calls) == len(outputs) + 1

    run(go)


def test_logs_and_outputs_share_one_window_per_prediction_not_across_predictions():
    async def go():
        async with Receiver() as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, throttle=0.5)
            a, b = Prediction("a"), Prediction("b")
            started = time.monotonic()
            sender.notify(a.id, rx.url, None, "output", a.payload)
            await rx.wait_calls(1)
            sender.notify(a.id, rx.url, None, "logs", a.payload)  # inside a's window
            sender.notify(b.id, rx.url, None, "logs", b.payload)  # b has its own window
            await rx.wait_calls(2)
            await asyncio.sleep(0.1)
            assert [c.json["id"] for c in rx.calls] == ["a", "b"]
            assert all(c.arrived - started < 0.3 for c in rx.calls)
            await rx.wait_calls(3)
            assert rx.calls[2].json["id"] == "a"
            assert rx.calls[2].arrived - started >= 0.45
            sender.notify(a.id, rx.url, None, "completed", a.payload)
            sender.notify(b.id, rx.url, None, "completed", b.payload)
            await finish(sender)
        assert len(rx.calls) == 5

    run(go)


def test_completed_supersedes_a_pending_throttled_output():
    async def go():
        async with Receiver() as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, throttle=0.5)
            p = Prediction()
            started = time.monotonic()
            p.update(status="processing", output=["a"])
            sender.notify(p.id, rx.url, None, "output", p.payload)
            await rx.wait_calls(1)
            p.update(output=["a", "b"])
            sender.notify(p.id, rx.url, None, "output", p.payload)
            p.update(status="succeeded")
            sender.notify(p.id, rx.url, None, "completed", p.payload)
            await finish(sender)
        assert [c.json for c in rx.calls] == [
            {**p.state, "status": "processing", "output": ["a"], "n": 1},
            p.state,
        ]
        assert rx.calls[1].arrived - started < 0.4  # not held until the window ended

    run(go)


def test_completed_filtered_out_flushes_the_pending_output_at_once():
    async def go():
        async with Receiver() as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, throttle=5)
            p = Prediction()
            p.update(output=["a"])
            sender.notify(p.id, rx.url, ["output"], "output", p.payload)
            await rx.wait_calls(1)
            p.update(output=["a", "b"])
            sender.notify(p.id, rx.url, ["output"], "output", p.payload)
            p.update(status="succeeded")
            sender.notify(p.id, rx.url, ["output"], "completed", p.payload)
            await finish(sender)
        assert [c.json["output"] for c in rx.calls] == [["a"], ["a", "b"]]

    run(go)


def test_start_outputs_logs_and_completed_arrive_in_order_one_at_a_time():
    async def go():
        async with Receiver(*[Reply(delay=0.05) for _ in range(20)]) as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, throttle=0.02)
            p = Prediction()
            p.update(status="processing")
            sender.notify(p.id, rx.url, None, "start", p.payload)
            for i in range(5):
                await asyncio.sleep(0.03)
                p.update(output=list(range(i + 1)))
                sender.notify(p.id, rx.url, None, "output", p.payload)
                p.update(logs=p.state["logs"] + f"line {i}\n")
                sender.notify(p.id, rx.url, None, "logs", p.payload)
            p.update(status="succeeded")
            sender.notify(p.id, rx.url, None, "completed", p.payload)
            await finish(sender)

        calls = rx.calls
        assert calls[0].json == {
            **p.state,
            "status": "processing",
            "output": None,
            "logs": "",
            "n": 1,
        }
        assert calls[-1].json == p.state
        assert len(calls) >= 3
        assert [c.json["n"] for c in calls] == sorted(c.json["n"] for c in calls)
        for before, after in itertools.pairwise(calls):
            assert after.arrived >= before.answered  # never two calls in flight at once
        assert len({c.id for c in calls}) == len(calls)

    run(go)


def test_events_after_completed_are_ignored_and_state_is_dropped():
    async def go():
        async with Receiver() as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, throttle=0)
            p = Prediction()
            p.update(status="succeeded")
            sender.notify(p.id, rx.url, None, "completed", p.payload)
            await rx.wait_calls(1)
            await sender.wait_idle(timeout=2)
            assert sender.active_count == 0
            sender.notify(p.id, rx.url, None, "logs", p.payload)
            sender.notify(p.id, rx.url, None, "completed", p.payload)
            await asyncio.sleep(0.1)
            await finish(sender)
        assert len(rx.calls) == 1

    run(go)


# -- retries ----------------------------------------------------------------------------------


def test_completed_is_retried_on_503_with_the_same_webhook_id():
    async def go():
        async with Receiver(503, 503, 200) as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, retry_delays=FAST)
            p = Prediction()
            p.update(status="succeeded")
            sender.notify(p.id, rx.url, None, "completed", p.payload)
            await finish(sender)
        assert len(rx.calls) == 3
        assert len({c.id for c in rx.calls}) == 1
        for call in rx.calls:
            call.verify()
            assert call.json == p.state

    run(go)


def test_completed_gets_one_attempt_on_400_and_the_failure_is_logged(caplog):
    async def go():
        async with Receiver(400) as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, retry_delays=FAST)
            sender.notify("p1", rx.url, None, "completed", Prediction().payload)
            await finish(sender)
            return rx.url, len(rx.calls)

    caplog.set_level(logging.WARNING, logger="ember.webhooks")
    url, count = asyncio.run(go())
    assert count == 1
    failures = [r.getMessage() for r in caplog.records if r.name == "ember.webhooks"]
    assert len(failures) == 1 and url in failures[0] and "400" in failures[0]


def test_429_retry_after_is_honoured():
    async def go():
        async with Receiver(Reply(429, {"Retry-After": "1"}), 200) as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, retry_delays=FAST)
            sender.notify("p1", rx.url, None, "completed", Prediction().payload)
            await finish(sender)
        assert len(rx.calls) == 2
        assert rx.calls[1].arrived - rx.calls[0].arrived >= 0.95
        assert rx.calls[0].id == rx.calls[1].id

    run(go)


def test_retry_after_is_capped():
    async def go():
        async with Receiver(Reply(503, {"Retry-After": "3600"}), 200) as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, retry_delays=FAST, max_retry_after=0.1)
            sender.notify("p1", rx.url, None, "completed", Prediction().payload)
            await finish(sender)
        assert len(rx.calls) == 2

    run(go)


def test_dropped_connections_and_timeouts_are_retried():
    async def go():
        async with Receiver(Reply(drop=True), Reply(delay=1.0), 200) as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, retry_delays=FAST, timeout=0.2)
            sender.notify("p1", rx.url, None, "completed", Prediction().payload)
            await finish(sender)
        assert len(rx.calls) == 3
        assert len({c.id for c in rx.calls}) == 1

    run(go)


def test_retries_give_up_after_the_last_delay(caplog):
    async def go():
        async with Receiver(*[500] * 10) as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, retry_delays=(0.01, 0.01))
            sender.notify("p1", rx.url, None, "completed", Prediction().payload)
            await finish(sender)
            return len(rx.calls)

    caplog.set_level(logging.WARNING, logger="ember.webhooks")
    assert asyncio.run(go()) == 3
    assert any(r.levelno == logging.ERROR and "500" in r.getMessage() for r in caplog.records)


def test_unreachable_receiver_is_retried_then_given_up(caplog):
    async def go():
        async with Receiver() as rx:
            url = rx.url
        sender = WebhookSender(SECRET, policy=LOOPBACK, retry_delays=(0.01, 0.01))
        sender.notify("p1", url, None, "completed", Prediction().payload)
        await finish(sender)

    caplog.set_level(logging.INFO, logger="ember.webhooks")
    run(go)
    messages = [r.getMessage() for r in caplog.records if r.name == "ember.webhooks"]
    assert sum("retrying" in m for m in messages) == 2
    assert "after 3 attempts" in messages[-1]


def test_progress_events_are_not_retried():
    async def go():
        async with Receiver(503, 503) as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, throttle=0, retry_delays=FAST)
            p = Prediction()
            sender.notify(p.id, rx.url, None, "start", p.payload)
            await rx.wait_calls(1)
            sender.notify(p.id, rx.url, None, "output", p.payload)
            await rx.wait_calls(2)
            sender.notify(p.id, rx.url, None, "completed", p.payload)
            await finish(sender)
        assert len(rx.calls) == 3
        assert len({c.id for c in rx.calls}) == 3

    run(go)


# -- robustness and lifecycle -----------------------------------------------------------------


def test_nothing_raises_into_the_caller(caplog):
    def broken() -> dict[str, Any]:
        raise RuntimeError("state is gone")

    def no_secret() -> str:
        raise RuntimeError("vault down")

    # Outside a running loop (a caller bug) the event is logged and dropped.
    WebhookSender(SECRET, policy=LOOPBACK).notify("p0", "http://127.0.0.1:9/", None, "start", dict)

    async def go():
        async with Receiver() as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, retry_delays=FAST)
            sender.notify("p1", rx.url, None, "bogus", dict)
            sender.notify("p2", "ftp://example.invalid/x", None, "completed", dict)
            sender.notify("p3", "not a url", None, "completed", dict)
            sender.notify("p4", rx.url, None, "completed", broken)
            sender.notify("p5", rx.url, None, "completed", lambda: {"when": object()})
            other = WebhookSender(no_secret, policy=LOOPBACK)
            other.notify("p6", rx.url, None, "completed", dict)
            sender.notify("ok", rx.url, None, "completed", lambda: {"id": "ok"})
            await finish(sender)
            await finish(other)
        assert [c.json for c in rx.calls] == [{"id": "ok"}]

    caplog.set_level(logging.WARNING, logger="ember.webhooks")
    run(go)
    text = caplog.text
    for expected in ("p0", "bogus", "ftp://example.invalid/x", "state is gone", "vault down"):
        assert expected in text


def test_a_refused_address_gets_no_call_and_one_warning(caplog):
    async def go():
        async with Receiver() as rx:
            sender = WebhookSender(SECRET, retry_delays=FAST, policy=EgressPolicy())
            p = Prediction()
            for event in EVENTS:
                sender.notify(p.id, rx.url, None, event, p.payload)
            await finish(sender)
            # Allowing another port of the same address does not allow this one.
            port = int(rx.url.rsplit(":", 1)[1].split("/")[0])
            other_port = EgressPolicy((f"127.0.0.1:{port + 1}",))
            other = WebhookSender(SECRET, retry_delays=FAST, policy=other_port)
            other.notify("p2", rx.url, None, "completed", p.payload)
            await finish(other)
        assert rx.calls == []

    caplog.set_level(logging.WARNING, logger="ember.webhooks")
    run(go)
    refusals = [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    assert len(refusals) == 2, refusals
    assert "p1" in refusals[0] and "loopback" in refusals[0]
    assert "--allow-egress 127.0.0.1" in refusals[0]


def test_wait_idle_times_out_while_a_call_is_owed():
    async def go():
        async with Receiver() as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, throttle=5)
            p = Prediction()
            sender.notify(p.id, rx.url, None, "output", p.payload)
            await rx.wait_calls(1)
            await sender.wait_idle(timeout=1)  # first call delivered: idle though still running
            sender.notify(p.id, rx.url, None, "output", p.payload)
            with pytest.raises(TimeoutError):
                await sender.wait_idle(timeout=0.1)
            await sender.aclose()
            assert webhook_tasks() == []

    run(go)


def test_aclose_flushes_throttled_output_and_ignores_later_events():
    async def go():
        async with Receiver() as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, throttle=5)
            p = Prediction()
            p.update(output=["a"])
            sender.notify(p.id, rx.url, None, "output", p.payload)
            await rx.wait_calls(1)
            p.update(output=["a", "b"])
            sender.notify(p.id, rx.url, None, "output", p.payload)
            started = time.monotonic()
            await sender.aclose()
            assert time.monotonic() - started < 1
            assert webhook_tasks() == [] and sender.active_count == 0
            sender.notify(p.id, rx.url, None, "completed", p.payload)
            await asyncio.sleep(0.05)
        assert [c.json["output"] for c in rx.calls] == [["a"], ["a", "b"]]

    run(go)


def test_aclose_gives_up_on_a_long_retry_after_its_grace(caplog):
    async def go():
        async with Receiver(*[503] * 5) as rx:
            sender = WebhookSender(SECRET, policy=LOOPBACK, retry_delays=(30, 30))
            sender.notify("p1", rx.url, None, "completed", Prediction().payload)
            await rx.wait_calls(1)
            started = time.monotonic()
            await sender.aclose(grace=0.2)
            assert time.monotonic() - started < 1
            assert webhook_tasks() == [] and sender.active_count == 0
        assert len(rx.calls) == 1

    caplog.set_level(logging.WARNING, logger="ember.webhooks")
    run(go)
    assert "dropped at shutdown" in caplog.text
