"""A webhook receiver on loopback that records every delivery, for the tests of webhooks and
of what the server may reach."""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A tiny threaded HTTP server on 127.0.0.1 that records every POST and answers 200."""

    max_body: int = 1 << 20
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._arrived = threading.Condition()

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # a stuck connection does not pin a thread forever

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length > receiver.max_body:
                    self.send_response(413)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    self.close_connection = True
                    return
                body = self.rfile.read(length)
                delivery = Delivery(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                with receiver._arrived:
                    receiver.deliveries.append(delivery)
                    receiver._arrived.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def wait(self, count: int = 1, timeout: float = 10) -> list[Delivery]:
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: len(self.deliveries) >= count, timeout)
        assert arrived, f"{len(self.deliveries)} of {count} webhook calls arrived"
        return list(self.deliveries)
