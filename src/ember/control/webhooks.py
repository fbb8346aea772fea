"""Prediction webhooks, delivered the way Replicate and Cog deliver them.

A prediction's owner can ask to be called back (`webhook`, `webhook_events_filter`) when the
prediction starts, produces output, writes logs and completes. Clients written for Replicate
verify these calls with Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256>` keyed with a `whsec_` secret), so Ember signs
exactly that way and the official `replicate.webhook` verifier accepts its calls.

Delivery follows Cog: the body is always the whole prediction object as it is at send time,
progress events (`output`, `logs`) are throttled because a model yielding thousands of items must
not turn into thousands of HTTP calls, and only the terminal `completed` call is retried, because
it is the one a receiver cannot reconstruct from later calls. Ember adds a trailing progress call
at the end of each throttle window so that the newest state is not silently held back.

Webhook URLs are chosen by whoever creates a prediction, so calls go only to addresses the egress
policy allows (ember.egress: no loopback, private or link-local ones unless the operator allows
them), checked on each connection as it is made, with no proxy in between; redirects are not
followed. A refused webhook is logged once and the prediction gets no calls at all: retrying
cannot change the answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import email.utils
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Any

import httpx

from ember.egress import EgressPolicy, EgressRefused

__all__ = ["EVENTS", "WebhookSender", "new_signing_secret", "signature_headers"]

logger = logging.getLogger("ember.webhooks")

EVENTS = ("start", "output", "logs", "completed")

_SECRET_PREFIX = "whsec_"
_PROGRESS = frozenset({"output", "logs"})
# Remembered so that an event arriving after a prediction's terminal one (a late log line, a
# duplicate `completed`) cannot start a second stream of calls for a finished prediction.
_FINISHED_MEMORY = 4096

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60)


def new_signing_secret() -> str:
    """A fresh Standard Webhooks secret: `whsec_` + base64 of 32 random bytes.

    32 bytes matches the HMAC-SHA256 block-size guidance and what Replicate hands out, and the
    standard alphabet (no `_`) keeps the `whsec_<key>` split in verifiers unambiguous.
    """
    return _SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _secret_bytes(secret: str) -> bytes:
    """The HMAC key behind a secret; the `whsec_` prefix is optional, as in Standard Webhooks."""
    encoded = secret.removeprefix(_SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook signing secret is not valid base64") from exc
    if not key:
        raise ValueError("webhook signing secret is empty")
    return key


def _new_message_id() -> str:
    # Hex keeps the id free of '.', the separator of the signed content.
    return "msg_" + secrets.token_hex(16)


def signature_headers(
    secret: str,
    body: bytes,
    *,
    message_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers that let a receiver check who sent `body` and when.

    The signature covers `{id}.{timestamp}.{body}`, so a receiver can reject replays (same id)
    and stale calls (old timestamp) as well as forged ones. `message_id` is passed in when a
    delivery is retried: receivers deduplicate on it, so every attempt must carry the same one.
    """
    message_id = message_id or _new_message_id()
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode("ascii"),
    }


def _json_default(value: Any) -> Any:
    # Prediction records carry datetimes; the API shows them as ISO 8601 strings.
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, default=_json_default, separators=(",", ":")).encode()


def _retry_after(value: str | None) -> float | None:
    """Seconds asked for by a `Retry-After` header (delta-seconds or HTTP-date), if any."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class _Stream:
    """What is owed to one prediction's webhook; its task sends it in order.

    Only the newest payload callable of each kind is kept, so a chatty prediction costs the same
    memory as a quiet one.
    """

    def __init__(self, prediction_id: str, url: str, account: str | None = None) -> None:
        self.prediction_id = prediction_id
        self.url = url
        self.account = account  # whose signing secret signs it (see `secret_for`)
        self.start: Callable[[], dict[str, Any]] | None = None
        self.start_seen = False
        self.progress: Callable[[], dict[str, Any]] | None = None
        self.progress_event = "output"
        self.next_progress_at = 0.0
        self.terminal: Callable[[], dict[str, Any]] | None = None
        self.terminal_wanted = False
        self.terminal_seen = False
        self.in_flight = False
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """Whether a call is being made or is still owed (what `wait_idle` waits for)."""
        return (
            self.in_flight
            or self.start is not None
            or self.progress is not None
            or self.terminal_seen
        )


class WebhookSender:
    """Delivers prediction webhooks: event filter, throttling of output/logs, retries of the
    terminal event, signatures.

    One asyncio task per prediction with a webhook sends its calls one after another, so a
    receiver sees `start` before any `output` and `completed` last, even when it is slow. The task
    and all state for the prediction go away when the terminal event has been dealt with, so the
    caller must report `completed` for every prediction it reported anything for, whatever the
    filter says.
    """

    def __init__(
        self,
        secret: str | Callable[[], str],
        *,
        throttle: float = 0.5,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = "ember-webhooks",
        max_retry_after: float = 60.0,
        policy: EgressPolicy | None = None,
        secret_for: Callable[[str], str] | None = None,
    ) -> None:
        """`secret` may be a callable so that a rotated secret is used from the next call on.
        `secret_for(account)` gives an account's own secret, for predictions notified with an
        `account`: one tenant's receivers then cannot be sent calls signed by another's.

        `max_retry_after` caps how long a receiver's `Retry-After` may hold a delivery, so a
        hostile or confused receiver cannot park a terminal call (and its memory) for hours.
        `policy` says which addresses calls may go to; by default the server's
        (EMBER_EGRESS_ALLOW, read now).
        """
        self._secret = secret
        self._secret_for = secret_for
        self._throttle = max(0.0, float(throttle))
        self._retry_delays = tuple(max(0.0, float(d)) for d in retry_delays)
        self._timeout = float(timeout)
        self._transport = transport
        self._user_agent = user_agent
        self._max_retry_after = max(0.0, float(max_retry_after))
        self._policy = policy if policy is not None else EgressPolicy.from_env()
        self._client: httpx.AsyncClient | None = None
        self._streams: dict[str, _Stream] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._changed = asyncio.Event()
        self._closing = False

    # -- public -----------------------------------------------------------------------------

    @property
    def active_count(self) -> int:
        """Predictions with state held here (for metrics and leak checks)."""
        return len(self._streams)

    def notify(
        self,
        prediction_id: str,
        url: str,
        events_filter: Collection[str] | None,
        event: str,
        payload: Callable[[], dict[str, Any]],
        account: str | None = None,
    ) -> None:
        """Called (from the asyncio loop, never blocks) when something happens to a prediction.

        - event not in filter (None/empty filter = all events) -> nothing.
        - 'start' -> sent once.
        - 'output' / 'logs' -> throttled per prediction: at most one delivery per `throttle`
          seconds; events inside the window are coalesced and a trailing delivery with the
          LATEST payload is sent when the window ends (so the last output is never dropped).
        - 'completed' -> cancels any pending throttled delivery for that prediction (the
          terminal payload supersedes it), sent with the latest payload, retried with the
          retry_delays on connection errors, timeouts, 429 and 5xx (honouring Retry-After,
          capped); 4xx other than 429 is final. If 'completed' is filtered out, a pending
          progress delivery is flushed at once instead, since nothing else will carry it.
        - non-terminal events are not retried.

        `payload()` is called at send time, so a throttled or retried delivery carries the
        current prediction state. Never raises: a webhook must not break the prediction.
        """
        try:
            self._notify(prediction_id, url, events_filter, event, payload, account)
        except Exception:
            logger.exception(
                "webhook %s for prediction %s to %s could not be queued", event, prediction_id, url
            )

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no call is being made or owed; raises TimeoutError after `timeout`.

        Predictions that are still running but have had everything delivered count as idle.
        """
        async with asyncio.timeout(timeout):
            while not self._idle():
                self._changed.clear()
                await self._changed.wait()

    async def aclose(self, grace: float = 5.0) -> None:
        """Finish in-flight deliveries briefly, then close the client.

        Throttle windows are cut short so owed progress calls go out now; whatever is still
        owed after `grace` seconds (e.g. a terminal call in a long retry back-off) is dropped
        and logged. Later `notify` calls are ignored.
        """
        self._closing = True
        for stream in self._streams.values():
            stream.wake.set()
        try:
            await self.wait_idle(grace)
        except TimeoutError:
            owed = [s for s in self._streams.values() if s.busy]
            for stream in owed:
                logger.warning(
                    "webhook for prediction %s to %s dropped at shutdown",
                    stream.prediction_id,
                    stream.url,
                )
        tasks = [s.task for s in self._streams.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._streams.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- queueing ---------------------------------------------------------------------------

    def _notify(
        self,
        prediction_id: str,
        url: str,
        events_filter: Collection[str] | None,
        event: str,
        payload: Callable[[], dict[str, Any]],
        account: str | None,
    ) -> None:
        if event not in EVENTS:
            logger.warning("unknown webhook event %r for prediction %s", event, prediction_id)
            return
        if self._closing:
            logger.warning(
                "webhook %s for prediction %s to %s ignored: sender is closed",
                event,
                prediction_id,
                url,
            )
            return
        if prediction_id in self._finished:
            logger.debug("webhook %s for finished prediction %s ignored", event, prediction_id)
            return
        wanted = not events_filter or event in events_filter
        stream = self._streams.get(prediction_id)
        if stream is None:
            if event == "completed":
                self._remember_finished(prediction_id)
            if not wanted:
                return
            if not _valid_url(url):
                logger.warning(
                    "webhook %s for prediction %s not sent: invalid URL %r",
                    event,
                    prediction_id,
                    url,
                )
                return
            stream = _Stream(prediction_id, url, account)
            self._streams[prediction_id] = stream
            stream.task = asyncio.get_running_loop().create_task(
                self._run(stream), name=f"ember-webhook:{prediction_id}"
            )
        elif url and url != stream.url and _valid_url(url):
            stream.url = url

        if stream.terminal_seen:
            return
        if event == "start":
            if wanted and not stream.start_seen:
                stream.start_seen = True
                stream.start = payload
        elif event in _PROGRESS:
            if wanted:
                stream.progress = payload
                stream.progress_event = event
        else:
            stream.terminal_seen = True
            stream.terminal_wanted = wanted
            stream.terminal = payload
            self._remember_finished(prediction_id)
        stream.wake.set()
        self._changed.set()

    def _remember_finished(self, prediction_id: str) -> None:
        self._finished[prediction_id] = None
        self._finished.move_to_end(prediction_id)
        while len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)

    def _idle(self) -> bool:
        return not any(stream.busy for stream in self._streams.values())

    # -- per-prediction task ----------------------------------------------------------------

    async def _run(self, stream: _Stream) -> None:
        """Send what `stream` is owed, in order, until its terminal event is dealt with."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                if stream.start is not None:
                    payload, stream.start = stream.start, None
                    await self._send(stream, "start", payload, retry=False)
                    continue
                if stream.terminal_seen:
                    if stream.terminal_wanted and stream.terminal is not None:
                        stream.progress = None  # superseded by the terminal state
                        payload, stream.terminal = stream.terminal, None
                        await self._send(stream, "completed", payload, retry=True)
                    elif stream.progress is not None:
                        payload, stream.progress = stream.progress, None
                        await self._send(stream, stream.progress_event, payload, retry=False)
                    return
                if stream.progress is not None:
                    delay = stream.next_progress_at - loop.time()
                    if delay > 0 and not self._closing:
                        await self._wait(stream, delay)
                        continue
                    payload, stream.progress = stream.progress, None
                    stream.next_progress_at = loop.time() + self._throttle
                    await self._send(stream, stream.progress_event, payload, retry=False)
                    continue
                await self._wait(stream, None)
        except EgressRefused as exc:
            # Later events of this prediction are ignored as if it had finished: one warning.
            self._remember_finished(stream.prediction_id)
            logger.warning(
                "webhooks for prediction %s to %s not sent: %s",
                stream.prediction_id,
                stream.url,
                exc,
            )
        except Exception:
            logger.exception(
                "webhook task for prediction %s to %s failed", stream.prediction_id, stream.url
            )
        finally:
            if self._streams.get(stream.prediction_id) is stream:
                del self._streams[stream.prediction_id]
            self._changed.set()

    async def _wait(self, stream: _Stream, timeout: float | None) -> None:
        # Nothing awaited since the caller looked at the state, so no notify() can be missed.
        stream.wake.clear()
        self._changed.set()
        try:
            async with asyncio.timeout(timeout):
                await stream.wake.wait()
        except TimeoutError:
            pass

    # -- HTTP -------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                # A transport of our own also keeps out proxies from the environment: a proxy
                # would connect to the receiver where the egress check cannot see.
                transport=self._transport or httpx.AsyncHTTPTransport(),
                follow_redirects=False,
                headers={"User-Agent": self._user_agent},
            )
        return self._client

    def _current_secret(self, stream: _Stream) -> str:
        if stream.account is not None and self._secret_for is not None:
            return self._secret_for(stream.account)
        return self._secret() if callable(self._secret) else self._secret

    async def _send(
        self,
        stream: _Stream,
        event: str,
        payload: Callable[[], dict[str, Any]],
        *,
        retry: bool,
    ) -> None:
        """One delivery: one webhook-id, and for the terminal event several attempts."""
        stream.in_flight = True
        try:
            await self._attempts(stream, event, payload, retry=retry)
        finally:
            stream.in_flight = False

    async def _attempts(
        self,
        stream: _Stream,
        event: str,
        payload: Callable[[], dict[str, Any]],
        *,
        retry: bool,
    ) -> None:
        message_id = _new_message_id()
        delays = self._retry_delays if retry else ()
        pid, url = stream.prediction_id, stream.url
        for attempt in range(len(delays) + 1):
            try:
                body = _encode(payload())
                headers = signature_headers(
                    self._current_secret(stream), body, message_id=message_id
                )
            except Exception:
                logger.exception("webhook %s for prediction %s to %s not built", event, pid, url)
                return
            headers["Content-Type"] = "application/json"
            status = 0
            retry_after: float | None = None
            try:
                async with asyncio.timeout(self._timeout):
                    async with self._http().stream(
                        "POST",
                        url,
                        content=body,
                        headers=headers,
                        extensions={"trace": self._policy.connection_check(httpx.URL(url).host)},
                    ) as response:
                        status = response.status_code
                        retry_after = _retry_after(response.headers.get("Retry-After"))
            except (httpx.TransportError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
                retryable = True
            except EgressRefused:
                raise  # for _run: the whole prediction's webhook is refused
            except Exception as exc:  # e.g. a redirect loop or a URL httpx rejects: not transient
                logger.warning(
                    "webhook %s for prediction %s to %s failed: %s", event, pid, url, exc
                )
                return
            else:
                if 200 <= status < 300:
                    logger.debug(
                        "webhook %s for prediction %s to %s: HTTP %s", event, pid, url, status
                    )
                    return
                problem = f"HTTP {status}"
                retryable = status == 429 or status >= 500
            if not retryable or attempt >= len(delays):
                level = logging.ERROR if retry else logging.WARNING
                tries = f" after {attempt + 1} attempts" if attempt else ""
                logger.log(
                    level,
                    "webhook %s for prediction %s to %s failed%s: %s",
                    event,
                    pid,
                    url,
                    tries,
                    problem,
                )
                return
            delay = delays[attempt]
            if retry_after is not None:
                delay = max(delay, min(retry_after, self._max_retry_after))
            logger.info(
                "webhook %s for prediction %s to %s failed (%s); retrying in %.1f s",
                event,
                pid,
                url,
                problem,
                delay,
            )
            await asyncio.sleep(delay)
            url = stream.url


def _valid_url(url: str | None) -> bool:
    if not url:
        return False
    try:
        parsed = httpx.URL(url)
    except Exception:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)
