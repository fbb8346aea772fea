"""Outgoing requests refuse loopback, private and link-local addresses unless allowed (SSRF).

The rules first, as a table; then a real `ember serve` that allows one loopback port only (a
file server's): input URLs and webhooks aimed anywhere else inside are refused with a message
that says why and how to allow them, nothing reaches the internal listeners, a redirect from
the allowed server into them is refused too, the server's own uploads still work, and broken
or oversized data URIs fail clearly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ember.egress import EgressPolicy, EgressRefused, origin_entry
from ember.packages.fetch import InputFileError, fetch
from tests.support.paths import EXAMPLES
from tests.support.server import EmberServer, running
from tests.support.webhooks import WebhookReceiver

pytestmark = pytest.mark.timeout(60)

DESCRIBE = EXAMPLES / "describe"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
MAX_DATA_URI = 1000


# -- the rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # 169.254.169.254 through NAT64
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_internal_addresses_are_refused(address: str, reason: str) -> None:
    policy = EgressPolicy()
    assert not policy.allows("example.com", address)
    with pytest.raises(EgressRefused, match=reason):
        policy.check_address("example.com", address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert EgressPolicy().allows("example.com", address)


@pytest.mark.parametrize(
    ("entries", "host", "address", "port", "allowed"),
    [
        (["10.0.0.0/8"], "h", "10.9.8.7", 80, True),
        (["10.0.0.0/8"], "h", "192.168.0.1", 80, False),
        (["127.0.0.1"], "h", "::ffff:127.0.0.1", 80, True),  # the same address
        (["fd00::/8, 127.0.0.1"], "h", "fd00::5", 80, True),  # a comma-separated list
        (["127.0.0.1:8000"], "h", "127.0.0.1", 8000, True),
        (["127.0.0.1:8000"], "h", "127.0.0.1", 8001, False),
        (["[::1]:8000"], "h", "::1", 8000, True),
        (["minio.internal"], "MinIO.internal.", "10.1.1.1", 9000, True),
        (["minio.internal:9000"], "minio.internal", "10.1.1.1", 80, False),
        (["minio.internal"], "other.internal", "10.1.1.1", 9000, False),
    ],
)
def test_allowlist_entries(
    entries: list[str], host: str, address: str, port: int, allowed: bool
) -> None:
    assert EgressPolicy(tuple(entries)).allows(host, address, port) is allowed


def test_bad_entries_and_schemes_are_refused_up_front() -> None:
    for entry in ("not/a/host", "127.0.0.1:99999", "[::1]:http"):
        with pytest.raises(ValueError, match="egress allowlist entry"):
            EgressPolicy((entry,))
    for url in ("ftp://example.com/x", "file:///etc/passwd", "http:///nohost"):
        with pytest.raises(EgressRefused, match="not an http"):
            asyncio.run(EgressPolicy().check_url(url))
    assert origin_entry("http://[::1]:8000/v1") == "[::1]:8000"
    assert origin_entry("https://Ember.example.com/") == "ember.example.com:443"


def test_a_name_is_judged_by_what_it_resolves_to() -> None:
    with pytest.raises(EgressRefused, match=r"localhost \((127\.0\.0\.1|::1)\).*loopback"):
        asyncio.run(EgressPolicy().check_url("http://localhost:9/"))
    asyncio.run(EgressPolicy(("localhost",)).check_url("http://localhost:9/"))


# -- a real server ----------------------------------------------------------------------------


class FileServer:
    """Serves PNG on any GET on 127.0.0.1, or redirects to `?to=URL`; counts the requests."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.requests.append(self.path)
                target = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("to")
                self.send_response(302 if target else 200)
                if target:
                    self.send_header("Location", target[0])
                self.send_header("Content-Length", "0" if target else str(len(PNG)))
                self.end_headers()
                if not target:
                    self.wfile.write(PNG)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def files() -> Iterator[tuple[FileServer, FileServer]]:
    """An allowed file server and an internal one nothing may reach."""
    allowed, internal = FileServer(), FileServer()
    yield allowed, internal
    allowed.close()
    internal.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, files: tuple[FileServer, FileServer]
) -> Iterator[EmberServer]:
    """`ember serve` allowing one loopback port, the allowed file server's, and nothing else."""
    allowed, _ = files
    with running(
        tmp_path_factory.mktemp("egress"),
        allow_egress=[f"127.0.0.1:{allowed.port}"],
        env={"EMBER_MAX_DATA_URI_BYTES": str(MAX_DATA_URI)},
    ) as instance:
        instance.deploy(DESCRIBE, "ember", "describe")
        yield instance


def describe(server: EmberServer, file: str) -> dict[str, Any]:
    """One prediction of ember/describe reading `file`, answered when it ends."""
    with server.client() as http:
        response = http.post(
            "/v1/models/ember/describe/predictions",
            json={"input": {"file": file, "lines": 0, "pause": 0}},
            headers={"Prefer": "wait=60"},
        )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{internal}/x.png", "loopback"),
        ("http://localhost:{internal}/x.png", "loopback"),
        ("http://[::1]:{internal}/x.png", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/x.png", "private"),
    ],
)
def test_input_urls_to_internal_addresses_are_refused_when_the_prediction_is_made(
    server: EmberServer, files: tuple[FileServer, FileServer], url: str, reason: str
) -> None:
    """422 at once, per field (the replica checks again when it connects: see the redirect)."""
    _, internal = files
    with server.client() as http:
        response = http.post(
            "/v1/models/ember/describe/predictions",
            json={"input": {"file": url.format(internal=internal.port)}},
        )
    assert response.status_code == 422, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["body", "input", "file"]
    error = detail["msg"]
    assert "refused to connect" in error and reason in error, error
    assert "--allow-egress" in error and "EMBER_EGRESS_ALLOW" in error, error
    assert internal.requests == []


def test_a_redirect_from_an_allowed_server_into_the_network_is_refused(
    server: EmberServer, files: tuple[FileServer, FileServer]
) -> None:
    allowed, internal = files
    prediction = describe(server, f"{allowed.url}/go?to={internal.url}/x.png")
    assert prediction["status"] == "failed", prediction
    assert "refused to connect to 127.0.0.1" in prediction["error"], prediction["error"]
    assert any(path.startswith("/go?") for path in allowed.requests)
    assert internal.requests == []


def test_an_allowed_address_is_downloaded(
    server: EmberServer, files: tuple[FileServer, FileServer]
) -> None:
    allowed, _ = files
    prediction = describe(server, f"{allowed.url}/cat.png")
    assert prediction["status"] == "succeeded", prediction
    assert f"sha256: {hashlib.sha256(PNG).hexdigest()}\n" in prediction["output"]


def test_an_upload_is_read_through_the_servers_own_url_without_an_allowlist(
    server: EmberServer,
) -> None:
    with server.client() as http:
        upload = http.post("/v1/files", files={"content": ("note.txt", b"uploaded")})
        assert upload.status_code == 201, upload.text
    prediction = describe(server, upload.json()["urls"]["get"])
    assert prediction["status"] == "succeeded", prediction
    assert "size: 8 bytes\n" in prediction["output"]


def test_a_webhook_to_an_internal_address_is_refused_when_the_prediction_is_made(
    server: EmberServer,
) -> None:
    """400 at once (the sender refuses at connect time too: see
    tests/integration/control/test_webhooks.py)."""
    with WebhookReceiver() as receiver, server.client() as http:
        created = http.post(
            "/v1/models/ember/describe/predictions",
            json={"input": {"file": "data:,hi", "pause": 0}, "webhook": receiver.url},
        )
        assert created.status_code == 400, created.text
        assert "loopback" in created.text and "--allow-egress" in created.text


BIG = "data:text/plain;base64," + base64.b64encode(b"x" * (MAX_DATA_URI + 1)).decode()
BROKEN_DATA_URIS = [
    (BIG, "upload the file with POST /v1/files"),
    ("data:text/plain," + "x" * (MAX_DATA_URI + 1), "upload the file with POST /v1/files"),
    ("data:text/plain;base64,bm90*YmFzZTY0", "base64 payload is broken"),
    ("data:text/plain;base64", "no ','"),
    ("data:text/plain,100%zz", "percent-encoding is broken"),
]


@pytest.mark.parametrize(("uri", "message"), BROKEN_DATA_URIS)
def test_fetch_refuses_broken_or_oversized_data_uris(
    uri: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a replica does with them (the gateway turns the malformed ones away before)."""
    monkeypatch.setenv("EMBER_MAX_DATA_URI_BYTES", str(MAX_DATA_URI))
    with pytest.raises(InputFileError, match=re.escape(message)):
        fetch(uri, tmp_path, "file")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("uri", "message"), [BROKEN_DATA_URIS[0], BROKEN_DATA_URIS[-1]])
def test_oversized_or_badly_escaped_data_uris_fail_the_prediction(
    server: EmberServer, uri: str, message: str
) -> None:
    prediction = describe(server, uri)
    assert prediction["status"] == "failed", prediction
    assert message in prediction["error"], prediction["error"]


def test_a_data_uri_within_the_limit_is_read(server: EmberServer) -> None:
    prediction = describe(server, "data:text/plain,hello%20world")
    assert prediction["status"] == "succeeded", prediction
    assert "size: 11 bytes\n" in prediction["output"]
