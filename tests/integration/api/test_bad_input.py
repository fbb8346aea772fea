"""Hostile and broken input, through a real `ember serve`: every case is a 4xx with a message a
person can act on, nothing is written outside where it belongs, and the server stays healthy
(a normal prediction still succeeds afterwards)."""

from __future__ import annotations

import base64
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.paths import EXAMPLES
from tests.support.server import EmberServer

pytestmark = pytest.mark.timeout(120)

MAX_REQUEST = 256 * 1024
MAX_UPLOAD = 512 * 1024
MAX_PACKAGE = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    limits = {
        "EMBER_MAX_REQUEST_BYTES": str(MAX_REQUEST),
        "EMBER_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "EMBER_MAX_PACKAGE_BYTES": str(MAX_PACKAGE),
    }
    instance = EmberServer(tmp_path_factory.mktemp("ember-bad-input"), env=limits)
    instance.start()
    try:
        instance.deploy(EXAMPLES / "describe", "ember", "describe")
        with instance.client() as api:
            made = api.post("/v1/deployments", json={"name": "describe", "model": "ember/describe"})
            assert made.status_code == 201, made.text
        yield instance
    finally:
        instance.stop()


def _predict(api: httpx.Client, **kwargs: object) -> httpx.Response:
    return api.post("/v1/deployments/ember/describe/predictions", **kwargs)  # type: ignore[arg-type]


def _detail(response: httpx.Response) -> str:
    return str(response.json()["detail"])


def _still_healthy(server: EmberServer) -> None:
    with server.client() as api:
        assert api.get("/health").status_code == 200
        ok = _predict(
            api,
            json={"input": {"file": "data:text/plain;base64," + base64.b64encode(b"hi").decode()}},
            headers={"Prefer": "wait=60"},
        )
        assert ok.status_code == 201 and ok.json()["status"] == "succeeded", ok.text


def test_bodies_over_the_limits_are_413_declared_or_streamed(server: EmberServer) -> None:
    with server.client() as api:
        big = b'{"input": {"file": "data:,' + b"x" * MAX_REQUEST + b'"}}'
        declared = _predict(api, content=big, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413 and "POST /v1/files" in _detail(declared)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"input": {"file": "data:,'
            for _ in range(64):
                yield b"x" * 8192
            yield b'"}}'

        streamed = _predict(api, content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413, streamed.text
        upload = api.post("/v1/files", files={"content": ("big.bin", b"\0" * (MAX_UPLOAD + 1))})
        assert upload.status_code == 413 and "EMBER_MAX_UPLOAD_BYTES" in _detail(upload)
        chat = api.post(
            "/v1/chat/completions",
            content=b'{"model": "x", "messages": "' + b"y" * MAX_REQUEST + b'"}',
            headers={"Content-Type": "application/json"},
        )
        assert chat.status_code == 413 and "request body" in chat.json()["error"]["message"]
    _still_healthy(server)


def test_a_big_body_without_a_valid_token_is_refused_before_it_is_read(
    server: EmberServer,
) -> None:
    """FastAPI reads a body before the route authenticates: without this check anyone could
    spool uploads to disk that end in a 401."""
    spooled = set(Path("/tmp").glob("ember-file-*"))
    big = b"\0" * (MAX_UPLOAD // 2)
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        declared = anonymous.post("/v1/files", files={"content": ("x.bin", big)})
        assert declared.status_code == 401, declared.text

        def chunks() -> Iterator[bytes]:
            for _ in range(16):
                yield b"\0" * 16384

        streamed = anonymous.post(
            "/v1/files",
            content=chunks(),
            headers={"Authorization": "Bearer not-a-token", "Content-Type": "text/plain"},
        )
        assert streamed.status_code == 401, streamed.text
        small = anonymous.post("/v1/predictions", json={"version": "x", "input": {}})
        assert small.status_code == 401  # as before: the route's own check
    assert set(Path("/tmp").glob("ember-file-*")) == spooled
    _still_healthy(server)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"input": {"file": ', "JSON"),
        (b'{"input": {"file": "\xff\xfe"}}', ""),  # not UTF-8
        (b"[1, 2]", ""),
        (b'{"input": "file"}', "dict"),
        (b'{"input": {"file": 3}}', "string"),
        (b'{"input": {"lines": "three", "file": "data:,x"}}', "integer"),
        (b'{"input": {"lines": 1e400, "file": "data:,x"}}', ""),
        (b'{"input": {"file": "data:,x"}, "webhook_events_filter": ["everything"]}', "start"),
    ],
)
def test_malformed_json_and_wrong_types_are_4xx(
    server: EmberServer, body: bytes, words: str
) -> None:
    with server.client() as api:
        answer = _predict(api, content=body, headers={"Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    assert words in answer.text


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"input": {"file": "data:,x", "name": "\\ud800"}}', "lone UTF-16 surrogate"),
        (b'{"input": {"file": "data:,x\\udfff"}}', "lone UTF-16 surrogate"),
        (b'{"input": {"\\ud800": "data:,x"}}', "lone UTF-16 surrogate"),  # in a key
        (b'{"input": {"lines": NaN, "file": "data:,x"}}', "NaN is not a JSON number"),
        (b'{"input": {"lines": -Infinity, "file": "data:,x"}}', "-Infinity is not a JSON"),
    ],
)
def test_lone_surrogates_and_non_finite_numbers_are_refused_at_the_gateway(
    server: EmberServer, body: bytes, words: str
) -> None:
    """One such character used to be stored, answer 500, and then jam the deployment's queue
    (the worker's frame could not encode it): every later prediction waited forever."""
    with server.client() as api:
        answer = _predict(api, content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text
        assert words in answer.text
        chat = api.post(
            "/v1/chat/completions",
            content=b'{"model": "x", "messages": [{"role": "user", "content": "\\ud800"}]}',
            headers={"Content-Type": "application/json"},
        )
        assert 400 <= chat.status_code < 500 and "surrogate" in chat.text, chat.text
        upload = api.post(
            "/v1/files",
            files={"content": ("a.txt", b"hi", "text/plain")},
            data={"metadata": '{"note": "\\ud800"}'},
        )
        assert upload.status_code == 422 and "surrogate" in upload.text, upload.text
        assert api.get("/v1/files").status_code == 200
        assert api.get("/v1/predictions", params={"status": "starting"}).status_code == 200
        # a surrogate pair is an ordinary character (an emoji here)
        paired = _predict(
            api,
            content=b'{"input": {"file": "data:,\\ud83d\\ude00"}}',
            headers={"Content-Type": "application/json", "Prefer": "wait=60"},
        )
        assert paired.status_code == 201 and paired.json()["status"] == "succeeded", paired.text
    _still_healthy(server)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("data:text/plain;base64,@@@not base64@@@", "base64"),
        ("data:text/plain;base64", "data:<type>;base64,<data>"),
        ("/etc/passwd", "not an http(s) URL"),
        ("file:///etc/passwd", "not an http(s) URL"),
    ],
)
def test_broken_file_inputs_are_422_before_any_replica_runs(
    server: EmberServer, value: str, words: str
) -> None:
    with server.client() as api:
        answer = _predict(api, json={"input": {"file": value}})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", "input", "file"]
    assert words in answer.json()["detail"][0]["msg"]


@pytest.mark.parametrize("prefer", ["wait=0", "wait=-1", "wait=61", "wait=99999999999", "wait=x"])
def test_absurd_prefer_wait_is_400(server: EmberServer, prefer: str) -> None:
    with server.client() as api:
        answer = _predict(api, json={"input": {"file": "data:,x"}}, headers={"Prefer": prefer})
    assert answer.status_code == 400 and "between 1 and 60" in _detail(answer), answer.text


def _archive(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for info, data in members:
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, data


GOOD = [
    _member("ember.yaml", b"name: hostile\npredictor: predict.py:Predictor\n"),
    _member("predict.py", b"class Predictor:\n    def predict(self) -> str:\n        return 'x'\n"),
]


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ([*GOOD, _member("../../escaped.txt", b"x")], "unpacked"),
        ([*GOOD, _member("/tmp/ember-absolute.txt", b"x")], "unpacked"),
        ([*GOOD, _member("link", kind=tarfile.SYMTYPE, link="/etc/passwd")], "unpacked"),
        ([*GOOD, _member("dev", kind=tarfile.CHRTYPE)], "unpacked"),
        ([*GOOD, _member("zeros.bin", b"\0" * (MAX_PACKAGE + 1))], "EMBER_MAX_PACKAGE_BYTES"),
        (
            [_member("ember.yaml", b"name: hostile\npredictor: ../../../etc/x.py:P\n")],
            "outside the package",
        ),
    ],
)
def test_hostile_packages_are_refused_and_write_nothing_outside(
    server: EmberServer, members: list, words: str, tmp_path: Path
) -> None:
    with server.client() as api:
        api.post("/v1/models", json={"owner": "ember", "name": "hostile"})
        answer = api.post(
            "/v1/models/ember/hostile/versions",
            files={"package": ("p.tar.gz", _archive(members))},
        )
    assert answer.status_code == 422, answer.text
    assert words in _detail(answer)
    assert not (server.data_dir / "escaped.txt").exists()
    assert not Path("/tmp/ember-absolute.txt").exists()


def test_uploaded_file_names_cannot_leave_their_folder(server: EmberServer) -> None:
    with server.client() as api:
        for name, kept in [
            ("../../../etc/passwd", "passwd"),
            ("..\\..\\boot.ini", "boot.ini"),
            ("..", "file"),
            ("a\x00b\x1f.txt", "ab.txt"),
            ("x" * 400 + ".txt", "x" * 251 + ".txt"),
        ]:
            made = api.post("/v1/files", files={"content": ("f", b"data")}, data={"filename": name})
            assert made.status_code == 201, made.text
            assert made.json()["name"] == kept
            download = api.get(made.json()["urls"]["get"] + "/download")
            assert download.content == b"data"
        for path in ("/v1/outputs/nope/..%2F..%2Fsecret.key", "/v1/files/..%2Fsecret.key"):
            assert api.get(path).status_code == 404
    _still_healthy(server)
