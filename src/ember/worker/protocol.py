"""The wire between a runtime and its replica worker: length-prefixed JSON frames.

Why this shape: a socketpair inherited by the child needs no port, no path and no
handshake; a 4-byte length prefix plus stdlib `json` costs microseconds per message and adds
no dependency inside model environments. Messages are plain dicts so either side can be
written in another language later.

Runtime → worker ("op"):
  predict  {id, input, context, timeout, method?}  run one prediction (method: "predict" or
                                              an OpenAI route the predictor serves itself)
  cancel   {id}                               stop it (CancelationException / CancelledError)
  shutdown {}                                 drain: finish in-flight predictions, then exit
  healthcheck {id}                            run the predictor's own healthcheck() (Cog's,
                                              Truss's is_healthy()) beside any prediction
Worker → runtime ("ev"):
  state    {state, error?, schema?, max_concurrency?, healthcheck?, healthcheck_error?}
                                              STARTING, READY (with whether its model has a
                                              healthcheck, and its first answer), SETUP_FAILED,
                                              DRAINING (sent SIGTERM: finishing what runs),
                                              STOPPED
  heartbeat {}                                alive: every EMBER_HEARTBEAT_SECONDS, from a
                                              thread of its own (a busy predict() does not
                                              stop it; a frozen process does)
  returned {id, reason}                       will not run this prediction (draining): run it
                                              elsewhere
  log      {id|None, data}                    a chunk of stdout/stderr (None: setup/worker log)
  started  {id}
  output   {id, value}                        one item of a streamed output
  done     {id, status, output?, error?, metrics, validation?}
  health   {id, error}                        a healthcheck's answer: error None when healthy
                                              (or when the predictor has no healthcheck)
"""

from __future__ import annotations

import json
import math
import socket
import struct
from typing import Any

HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 30

# Operations sent to the worker.
OP_PREDICT = "predict"
# The `method` of a predict op that calls predict() itself (the others name OpenAI routes).
PREDICT = "predict"
OP_CANCEL = "cancel"
OP_SHUTDOWN = "shutdown"
OP_HEALTHCHECK = "healthcheck"

# Events sent by the worker.
EV_STATE = "state"
EV_LOG = "log"
EV_STARTED = "started"
EV_OUTPUT = "output"
EV_METRIC = "metric"  # a metric the predictor recorded, as it recorded it
EV_DONE = "done"
EV_HEARTBEAT = "heartbeat"
EV_RETURNED = "returned"
EV_HEALTH = "health"

# How often a worker sends its heartbeat (seconds), as the runtime sets it in its environment:
# a fraction of how long the runtime waits for one before declaring the replica hung.
HEARTBEAT_ENV = "EMBER_HEARTBEAT_SECONDS"
DEFAULT_HEARTBEAT_SECONDS = 1.0


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


try:  # orjson where installed (Ember's own environment); model environments use json
    import orjson
except ImportError:
    orjson = None  # type: ignore[assignment]


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they travel as null, as orjson writes them."""
    if isinstance(value, float) and (value != value or value in (math.inf, -math.inf)):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json_dumps(message: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(message), separators=(",", ":"), ensure_ascii=False)
    return text.encode()


def encode(message: dict[str, Any]) -> bytes:
    if orjson is not None:
        try:
            body = orjson.dumps(message)
        except TypeError:  # e.g. integers beyond 64 bits, which json handles
            body = _json_dumps(message)
    else:
        body = _json_dumps(message)
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = orjson.loads(body) if orjson is not None else json.loads(body)
    except ValueError:  # e.g. integers beyond 64 bits, which orjson refuses and json reads
        try:
            message = json.loads(body)
        except ValueError as exc:
            raise ProtocolError(f"unreadable frame: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"expected a JSON object, got {type(message).__name__}")
    return message


def recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    """Read `size` bytes from a blocking socket; None when the peer closed it."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def recv_message(sock: socket.socket) -> dict[str, Any] | None:
    header = recv_exactly(sock, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes exceeds the {MAX_FRAME}-byte limit")
    body = recv_exactly(sock, size)
    if body is None:
        return None
    return decode(body)
