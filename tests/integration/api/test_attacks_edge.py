"""Attacks on the server's edges (issue 18, items 7, 8 and 10), each reproduced against a real
`ember serve` and shown not to work any more: a time series asked for since the year 1, the
metrics read without a token, and clients that send slowly, send huge headers or an odd
`Prefer`. The header and body timeouts are set to a second here, so that waiting them out
stays quick."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.paths import EXAMPLES
from tests.support.server import TOKEN, EmberServer, free_port, running

pytestmark = pytest.mark.timeout(180)

TIMEOUT = 1.0  # EMBER_HEADER_TIMEOUT and EMBER_BODY_TIMEOUT of this module's server
HOLD = 10.0  # how long a test waits for the server to answer a slow client (or not)
PREDICT = "/v1/deployments/ember/hello/predictions"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    env = {
        "EMBER_HEADER_TIMEOUT": str(TIMEOUT),
        "EMBER_BODY_TIMEOUT": str(TIMEOUT),
        "EMBER_METRICS_PORT": str(free_port()),
    }
    with running(tmp_path_factory.mktemp("ember-attacks-edge"), env=env) as instance:
        instance.deploy(EXAMPLES / "hello", "ember", "hello")
        with instance.client() as admin:
            made = admin.post("/v1/deployments", json={"name": "hello", "model": "ember/hello"})
            assert made.status_code == 201, made.text
        yield instance


@pytest.fixture(scope="module")
def tenant_token(server: EmberServer) -> str:
    with server.client() as admin:
        made = admin.post(
            "/v1/tokens", json={"name": "bob-deploy", "owner": "bob", "scope": "deploy"}
        )
    assert made.status_code == 201, made.text
    return made.json()["token"]


def _exchange(server: EmberServer, *pieces: bytes, pause: float = 0.0) -> bytes:
    """Send `pieces` on a new connection (`pause` seconds apart), then read what the server
    answers until it closes the connection; fail if it has not within HOLD seconds."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=HOLD) as sock:
        try:
            for i, piece in enumerate(pieces):
                if i and pause:
                    time.sleep(pause)
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all sent: the answer may be waiting all the same
        answer = b""
        deadline = time.monotonic() + HOLD
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                pytest.fail(f"the server held the connection {HOLD:g} s; it sent {answer!r}")
            if not data:
                break
            answer += data
        else:
            pytest.fail(f"the server held the connection {HOLD:g} s; it sent {answer!r}")
        return answer


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


# Item 7: the time series.


def test_a_time_series_since_the_year_one_is_a_year_in_at_most_121_buckets(
    server: EmberServer,
) -> None:
    """Without `step`, `since=0001-01-01` built 740,000 daily buckets (40 MB of JSON, over
    a second of the event loop's time per request)."""
    with server.client() as api:
        series = api.get("/v1/deployments/ember/hello/timeseries", params={"since": "0001-01-01"})
    assert series.status_code == 200, series.text
    body = series.json()
    assert len(body["t"]) <= 121 and body["step"] % 86400 == 0
    assert time.time() - body["start"] <= 366 * 86400 + body["step"]  # a year ago, aligned


@pytest.mark.parametrize(
    "since", ["9999999d", pytest.param("9" * 5000 + "d", id="5000-digit-days")]
)
@pytest.mark.parametrize("path", ["/v1/deployments/ember/hello/timeseries", "/v1/costs"])
def test_a_since_before_the_year_one_is_a_422_not_a_500(
    server: EmberServer, since: str, path: str
) -> None:
    with server.client() as api:
        answer = api.get(path, params={"since": since})
    assert answer.status_code == 422, answer.text
    assert "out of range" in answer.json()["detail"]


# Item 8: /metrics.


def test_metrics_on_the_api_port_need_an_admin_token(
    server: EmberServer, tenant_token: str
) -> None:
    """/metrics named every tenant's deployments and their traffic, to anyone."""
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    with server.client(tenant_token) as bob:
        refused = bob.get("/metrics")
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    with server.client() as admin:
        metrics = admin.get("/metrics")
    assert metrics.status_code == 200 and "ember_predictions_total" in metrics.text


def test_the_metrics_port_serves_them_without_a_token(server: EmberServer) -> None:
    """EMBER_METRICS_PORT (`--metrics-port`): a port for a Prometheus scraper alone."""
    port = server.env["EMBER_METRICS_PORT"]
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert metrics.status_code == 200, metrics.text
    assert "ember_replica_starts_total" in metrics.text
    assert httpx.get(f"http://127.0.0.1:{port}/v1/predictions").status_code == 404  # nothing else


# Item 10: slow and oversized requests, and Prefer.


def test_headers_that_never_end_get_a_408_and_the_connection_closed(server: EmberServer) -> None:
    """A client that sent its headers slowly held its connection as long as it liked."""
    answer = _exchange(server, b"GET /health HTTP/1.1\r\nHost: ember\r\nX-Slow: ")
    assert _status(answer) == 408 and b"EMBER_HEADER_TIMEOUT" in answer


def test_a_connection_that_sends_nothing_is_closed(server: EmberServer) -> None:
    assert _status(_exchange(server)) == 408


def test_a_slow_body_without_a_token_gets_a_408_and_the_connection_closed(
    server: EmberServer,
) -> None:
    """A small body sent slowly, without a token, held its connection and its request's
    task for as long as it took (70 s and more)."""
    head = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: ember\r\nContent-Type: application/json\r\n"
        "Content-Length: 40\r\n\r\n"
    ).encode()
    answer = _exchange(server, head + b'{"input": {"na')
    assert _status(answer) == 408 and b"EMBER_BODY_TIMEOUT" in answer
    assert b"\r\nconnection: close\r\n" in answer.lower()


def test_a_known_callers_body_may_take_longer_while_it_keeps_coming(server: EmberServer) -> None:
    """With a valid token, only a gap between chunks longer than the timeout counts."""
    body = b'{"input": {"name": "slow but steady"}}'
    head = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: ember\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        "\r\n"
    ).encode()
    chunks = [body[i : i + 8] for i in range(0, len(body), 8)]  # 5 chunks: 1.7 s in all
    answer = _exchange(server, head, *chunks, pause=TIMEOUT / 3)
    assert _status(answer) == 201, answer


@pytest.mark.parametrize("size", [100 * 1024, 1024 * 1024])
def test_huge_headers_are_refused_with_431(server: EmberServer, size: int) -> None:
    """A 1 MB `Authorization` header was read whole and answered 401."""
    request = (
        f"GET /v1/predictions HTTP/1.1\r\nHost: ember\r\nAuthorization: Bearer {'x' * size}\r\n\r\n"
    ).encode()
    answer = _exchange(server, request)
    assert _status(answer) == 431 and b"EMBER_MAX_HEADER_BYTES" in answer


@pytest.mark.parametrize("prefer", ["wait=", "wait= 5", "wait =5", "wait=+5", "wait=5s", "wait=0"])
def test_a_blank_spaced_or_signed_prefer_wait_is_a_400(server: EmberServer, prefer: str) -> None:
    """`Prefer: wait=` (blank) was read as 60 s, and `wait= 5` as 5."""
    with server.client() as api:
        answer = api.post(PREDICT, json={"input": {"name": "x"}}, headers={"Prefer": prefer})
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert "Prefer:" in detail and "`Prefer: wait=N`" in detail and "between 1 and 60" in detail


@pytest.mark.parametrize(("prefer", "applied"), [("wait", "wait=60"), ("wait=5", "wait=5")])
def test_prefer_wait_and_wait_n_still_work(server: EmberServer, prefer: str, applied: str) -> None:
    with server.client() as api:
        answer = api.post(PREDICT, json={"input": {"name": "x"}}, headers={"Prefer": prefer})
    assert answer.status_code == 201, answer.text
    assert answer.headers["preference-applied"] == applied
