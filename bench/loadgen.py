"""The closed-loop HTTP load generator the throughput benchmarks share (serve_throughput.py,
embeddings.py): `clients` keep-alive connections POST for `seconds`, every answer checked.

wrk when it is installed (one process, C and epoll: it leaves the cores to the servers; a Lua
script sets the body or rotates the bodies, sets the headers and checks every answer), else
an asyncio + httpx generator in its own process (uvloop if installed). Both print one line,
`WRKJSON {...}`, with the same totals; `run_load` reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# wrk: the body (or the bodies in turn) and the headers; every answer is checked (2xx, and
# `check` in the body when it is set); the totals of all threads come out as one JSON line.
WRK_SCRIPT = """
%(request)s
%(headers)s
local check = %(check)s
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; non2xx = 0; bad = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif check and not string.find(body, check, 1, true) then
    bad = bad + 1
  else
    ok = ok + 1
  end
end
function done(summary, latency, requests)
  local ok_, non2xx_, bad_ = 0, 0, 0
  for _, t in ipairs(threads) do
    ok_ = ok_ + t:get("ok"); non2xx_ = non2xx_ + t:get("non2xx"); bad_ = bad_ + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"ok":%%d,"non2xx":%%d,"bad":%%d,' ..
    '"errors":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, ok_, non2xx_, bad_,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

# One body: wrk builds the request once (no Lua call per request).
WRK_ONE_BODY = """
wrk.method = "POST"
wrk.body = %(body)s
"""

# Several bodies: a Lua call per request picks the next one.
WRK_BODIES = """
local bodies = %(bodies)s
local i = 0
function request()
  i = i %% #bodies + 1
  return wrk.format("POST", nil, nil, bodies[i])
end
"""

# Without wrk: asyncio + httpx in its own process, `clients` coroutines each with its own
# keep-alive connection, the bodies in turn, closed loop for `seconds`. argv: JSON arguments.
PY_LOADGEN = """
import asyncio, json, sys, time
import httpx
a = json.loads(sys.argv[1])
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
lat, counts, turn = [], {"ok": 0, "non2xx": 0, "bad": 0, "errors": 0}, [0]
async def lane(deadline):
    async with httpx.AsyncClient(base_url=a["url"], headers=a["headers"], timeout=30,
                                 limits=httpx.Limits(max_connections=1), trust_env=False) as c:
        while time.perf_counter() < deadline:
            turn[0] += 1
            body = a["bodies"][turn[0] % len(a["bodies"])]
            t0 = time.perf_counter_ns()
            try:
                r = await c.post(a["path"], content=body)
            except httpx.HTTPError:
                counts["errors"] += 1
                continue
            lat.append(time.perf_counter_ns() - t0)
            if not 200 <= r.status_code < 300:
                counts["non2xx"] += 1
            elif a["check"] and a["check"] not in r.text:
                counts["bad"] += 1
            else:
                counts["ok"] += 1
async def main():
    start = time.perf_counter()
    await asyncio.gather(*(lane(start + a["seconds"]) for _ in range(a["clients"])))
    return time.perf_counter() - start
elapsed = asyncio.run(main())
lat.sort()
pick = lambda q: lat[max(0, int(q * len(lat) + 0.999999) - 1)] // 1000 if lat else 0
print("WRKJSON " + json.dumps({"requests": len(lat) + counts["errors"],
      "duration_us": int(elapsed * 1e6), "p50_us": pick(0.5), "p99_us": pick(0.99), **counts}))
"""


@dataclass
class Load:
    """What to send: each body in turn, POSTed to url + path with these headers. A good answer
    is a 2xx whose body contains `check` (any 2xx when it is None)."""

    key: str  # names the Lua script written for it
    url: str
    path: str
    headers: dict[str, str]
    bodies: list[str]
    check: str | None


@dataclass
class LoadCounts:
    requests: int
    seconds: float
    ok: int
    non2xx: int
    bad: int
    errors: int

    @property
    def rps(self) -> float:
        return self.ok / self.seconds  # only good answers count


@dataclass
class LoadResult(LoadCounts):
    p50_us: float
    p99_us: float

    def counts(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(LoadCounts)}


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """--seconds, --clients and --loadgen, which both throughput benchmarks take."""
    parser.add_argument("--seconds", type=float, default=10, help="seconds of load per round")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk if installed (auto), or the Python fallback",
    )


def load_command(
    load: Load, clients: int, seconds: float, wrk: str | None, work_dir: Path, threads: int = 1
) -> list[str]:
    """The generator's command line: wrk (with `threads` threads, its Lua script written in
    work_dir) or, when wrk is None, the Python fallback."""
    if wrk is None:
        arguments = {
            "url": load.url,
            "path": load.path,
            "headers": load.headers,
            "bodies": load.bodies,
            "check": load.check,
            "clients": clients,
            "seconds": seconds,
        }
        return [sys.executable, "-c", PY_LOADGEN, json.dumps(arguments)]
    if len(load.bodies) == 1:
        request = WRK_ONE_BODY % {"body": json.dumps(load.bodies[0])}
    else:
        request = WRK_BODIES % {"bodies": "{" + ", ".join(json.dumps(b) for b in load.bodies) + "}"}
    headers = "\n".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in load.headers.items()
    )
    check = json.dumps(load.check) if load.check else "nil"
    script = work_dir / f"{load.key}.lua"
    script.write_text(WRK_SCRIPT % {"request": request, "headers": headers, "check": check})
    return [wrk, f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "30s", "-s",
            str(script), load.url + load.path]  # fmt: skip


def run_load(
    load: Load, clients: int, seconds: float, wrk: str | None, work_dir: Path, threads: int = 1
) -> LoadResult:
    """One round of load; RuntimeError when the generator fails or overruns by a minute. The
    generator is killed if anything (Ctrl-C included) interrupts the wait."""
    proc = subprocess.Popen(
        load_command(load, clients, seconds, wrk, work_dir, threads),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=seconds + 60)
    except BaseException as exc:
        proc.kill()
        proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise RuntimeError(f"the load generator overran {seconds + 60:.0f} s") from None
        raise
    lines = [line for line in output.splitlines() if line.startswith("WRKJSON ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"load generator failed (exit {proc.returncode}): {output[-500:]}")
    result = json.loads(lines[-1][len("WRKJSON ") :])
    result["seconds"] = result.pop("duration_us") / 1e6
    return LoadResult(**result)
