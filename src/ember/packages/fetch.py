"""Fetch a file given as an http(s) URL or a data URI into a local folder.

Used for prediction inputs (by the worker) and for Cog's `COG_WEIGHTS` (by the Cog loader).
Local paths are refused: a replica may run on another machine than the caller, and a path
would also let a caller read the replica's files. For the same reason downloads go only to
addresses the egress policy allows (no loopback, private or link-local ones unless the server
was started with `--allow-egress`; see ember.egress), checked on every connection, redirects
included. Data URIs are capped in size: a big file belongs in an upload, not in a JSON body.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import mimetypes
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ember.egress import SANDBOX_PROXY_ENV, SANDBOX_RELAY_PORT, EgressPolicy, EgressRefused

DOWNLOAD_TIMEOUT = 60.0
MAX_DATA_URI_ENV = "EMBER_MAX_DATA_URI_BYTES"
DEFAULT_MAX_DATA_URI_BYTES = 100_000_000
_DATA_URI = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?)(?P<b64>;base64)?,", re.I)
_BROKEN_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class InputFileError(ValueError):
    """A file input that could not be fetched or decoded."""


def _unique(folder: Path, name: str) -> Path:
    name = os.path.basename(name) or "input"
    candidate, stem, suffix, n = folder / name, Path(name).stem, Path(name).suffix, 1
    while candidate.exists():
        candidate = folder / f"{stem}-{n}{suffix}"
        n += 1
    return candidate


def fetch(value: str, folder: Path, field: str) -> Path:
    """Write the file a URL or data URI points at into `folder` and return its path."""
    if not isinstance(value, str):
        raise InputFileError(f"{field}: expected a URL or data URI, got {type(value).__name__}")
    if value[:5].lower() == "data:":
        return _write_data_uri(value, folder, field)
    scheme = urllib.parse.urlsplit(value).scheme
    if scheme not in ("http", "https"):
        raise InputFileError(
            f"{field}: {value[:60]!r} is not an http(s) URL or a data: URI; "
            "upload the file or encode it as a data URI"
        )
    return _download(value, folder, field)


# -- data URIs --------------------------------------------------------------------------------


def _write_data_uri(value: str, folder: Path, field: str) -> Path:
    match = _DATA_URI.match(value)
    if not match:
        raise InputFileError(
            f"{field}: the data URI has no ',' before its data; "
            "expected data:[<type>][;base64],<data>"
        )
    data = _decode(value[match.end() :], bool(match.group("b64")), field)
    suffix = mimetypes.guess_extension(match.group("mime") or "") or ""
    path = _unique(folder, f"{field}{suffix}")
    path.write_bytes(data)
    return path


def _decode(payload: str, is_base64: bool, field: str) -> bytes:
    """The data URI's bytes, after checking their size without decoding them (exact for the
    ASCII a valid data URI is made of), so an oversized one costs no memory."""
    if is_base64:
        size = len(payload) * 3 // 4 - (len(payload) - len(payload.rstrip("=")))
    else:
        if _BROKEN_PERCENT.search(payload):
            raise InputFileError(
                f"{field}: the data URI's percent-encoding is broken (a '%' not followed by two "
                "hex digits); encode the data as data:<type>;base64,<data> instead"
            )
        size = len(payload) - 2 * payload.count("%")
    limit = int(os.environ.get(MAX_DATA_URI_ENV, DEFAULT_MAX_DATA_URI_BYTES))
    if size > limit:
        raise InputFileError(
            f"{field}: the data URI holds {size:,} bytes, more than the {limit:,} a data URI "
            f"may carry ({MAX_DATA_URI_ENV}); upload the file with POST /v1/files and pass "
            "the URL it answers with instead"
        )
    if not is_base64:
        return urllib.parse.unquote_to_bytes(payload)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputFileError(f"{field}: the data URI's base64 payload is broken ({exc})") from exc


# -- downloads --------------------------------------------------------------------------------


class _CheckedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection made only to an address the egress policy allows.

    Replacing `connect` (the one place http.client opens a socket) checks the very address
    connected to, for the first request and for every redirect. The policy is read from the
    environment the server handed down, as in every other replica process.
    """

    def connect(self) -> None:
        policy = EgressPolicy.from_env()
        self.sock = policy.connect(self.host, self.port, self.timeout, self.source_address)


class _CheckedHTTPSConnection(http.client.HTTPSConnection, _CheckedHTTPConnection):
    """HTTPS on a checked connection: HTTPSConnection.connect wraps what ours opened in TLS,
    for the host name (SNI and certificate), not the address."""


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_CheckedHTTPConnection, req)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_CheckedHTTPSConnection, req)


class _ThroughRelay(urllib.request.BaseHandler):
    """Every request, each redirect included, through the sandbox's egress relay: loopback
    URLs too (NO_PROXY, which a ProxyHandler obeys, names the sandbox's own loopback, while
    Ember's URL is the host's)."""

    handler_order = 100  # before the handlers that open connections

    def http_request(self, req: urllib.request.Request) -> urllib.request.Request:
        req.set_proxy(f"127.0.0.1:{SANDBOX_RELAY_PORT}", "http")
        return req

    https_request = http_request


def _opener() -> urllib.request.OpenerDirector:
    """http(s) through checked connections, redirects and errors as usual, and nothing else:
    no proxy (it would connect where we did not check), no ftp: or file: for a redirect to
    lead to (they fail as unknown URL types). In a sandbox, whose network is its own loopback,
    through the sandbox's egress proxy, which makes the same checks outside."""
    opener = urllib.request.OpenerDirector()
    direct: tuple[urllib.request.BaseHandler, ...] = (_CheckedHTTPHandler(), _CheckedHTTPSHandler())
    if os.environ.get(SANDBOX_PROXY_ENV):
        direct = (_ThroughRelay(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler())
    for handler in (
        *direct,
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),
    ):
        opener.add_handler(handler)
    return opener


def _download(url: str, folder: Path, field: str) -> Path:
    url_name = urllib.parse.unquote(Path(urllib.parse.urlsplit(url).path).name)
    try:
        with _opener().open(url, timeout=DOWNLOAD_TIMEOUT) as response:
            # The server's name for it, where it gives one (a download link's last segment
            # is often just "download"), else the URL's last segment.
            path = _unique(folder, response.headers.get_filename() or url_name or field)
            with path.open("wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
    except EgressRefused as exc:
        raise InputFileError(f"{field}: not downloading {url[:80]}: {exc}") from None
    except OSError as exc:
        raise InputFileError(f"{field}: could not download {url[:80]}: {exc}") from exc
    return path
