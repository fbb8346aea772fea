"""How much does Ember's replica worker add to a prediction?

Compares, for a trivial predictor (`bench/models/trivial`, `predict(text) -> text.upper()`):

  direct          predictor.predict("hello") in this process: the floor
  validated       the same through Ember's loader: load_predictor() once, then per call
                  validated_inputs() (pydantic) + predict(**values)
  worker job      Runner.run_sync_job() in this process, frames JSON-encoded but not sent:
                  everything the worker does per job except the socket
  ipc floor       a bare blocking socketpair ping-pong of length-prefixed JSON frames with a
                  child process (no Ember code, no asyncio): the cost of the wire itself
  round trip      LocalRuntime → worker process → result, one prediction at a time
  N in flight     the same with N predictions outstanding at once (throughput), against the
                  package as written (concurrency 1: the worker queues them) and against a copy
                  of its spec with concurrency N (the worker's asyncio + thread-pool mode)
  fastapi         a bare FastAPI + uvicorn echo on 127.0.0.1, one keep-alive httpx connection
  cold start      start_replica() → READY (and → first result), vs. uvicorn launch → first answer

Every warm benchmark runs `--repeats` rounds of `--calls` calls (after `--warmup` calls), with
the benchmarks interleaved round by round (their order rotates), so a burst of noise from
another process hits all of them alike. Reported: the median over rounds of each round's
median and p99, the smallest single call, and the spread of the round medians.

    python bench/worker_roundtrip.py [--calls 1000] [--warmup 100] [--repeats 5]
                                     [--concurrency 8 [16 ...]] [--starts 5] [--json out.json]

Everything runs on loopback; every process this starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from common import NoiseMeter, percentile, stop_process, write_report
from harness import listening_socket, python_app, stop_group
from rich.console import Console
from rich.table import Table

from ember.packages.loader import load_predictor, read_package
from ember.packages.predictor import validated_inputs
from ember.packages.spec import PackageSpec
from ember.runtime.base import PredictionRequest, ReplicaState
from ember.runtime.local import LocalRuntime
from ember.runtime.local_replica import LocalReplica
from ember.worker import protocol
from ember.worker.runner import Job, Runner

# Pin math-library threads in this process and in every child (they inherit os.environ);
# nothing imported above reads these, so setting them here is early enough.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

MODEL = Path(__file__).resolve().parent / "models" / "trivial"
TEXT = "hello"
EXPECTED = TEXT.upper()
now_ns = time.perf_counter_ns

# A bare FastAPI echo served by uvicorn on a listening socket inherited from the benchmark
# (no port race). `async def` so no thread pool hop: the cheapest FastAPI can be.
FASTAPI_APP = """
import socket, sys
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

class Input(BaseModel):
    text: str

app = FastAPI()

@app.post("/predict")
async def predict(body: Input) -> dict:
    return {"output": body.text.upper()}

sock = socket.socket(fileno=int(sys.argv[1]))
config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                        timeout_keep_alive=3600)
uvicorn.Server(config).run(sockets=[sock])
"""

# The wire alone: a child that answers each length-prefixed JSON frame with one frame.
ECHO_CHILD = """
import json, socket, struct, sys
H = struct.Struct("!I")
sock = socket.socket(fileno=int(sys.argv[1]))
def recv(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            sys.exit(0)
        buf += chunk
    return bytes(buf)
while True:
    (size,) = H.unpack(recv(4))
    msg = json.loads(recv(size))
    body = json.dumps({"ev": "done", "id": msg["id"], "status": "succeeded",
                       "output": msg["input"]["text"].upper()}, separators=(",", ":")).encode()
    sock.sendall(H.pack(len(body)) + body)
"""


# -- statistics ---------------------------------------------------------------------------


@dataclass
class Round:
    samples_ns: list[int]
    elapsed_ns: int  # wall time of the whole round (for throughput)

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ns)

    @property
    def p99(self) -> int:
        return percentile(sorted(self.samples_ns), 0.99)

    @property
    def throughput(self) -> float:
        return len(self.samples_ns) / (self.elapsed_ns / 1e9)


@dataclass
class Bench:
    key: str
    label: str
    run: Callable[[int], Round]  # run(n) → one round of n timed calls
    note: str = ""
    rounds: list[Round] = field(default_factory=list)
    in_flight: int = 1

    def summary(self) -> dict[str, Any]:
        medians = [r.median for r in self.rounds]
        return {
            "label": self.label,
            "calls": sum(len(r.samples_ns) for r in self.rounds),
            "rounds": len(self.rounds),
            "in_flight": self.in_flight,
            "median_us": statistics.median(medians) / 1e3,
            "p99_us": statistics.median(r.p99 for r in self.rounds) / 1e3,
            "min_us": min(min(r.samples_ns) for r in self.rounds) / 1e3,
            "round_medians_us": [m / 1e3 for m in medians],
            "throughput_per_s": statistics.median(r.throughput for r in self.rounds),
            "note": self.note,
        }


def fmt_time(us: float) -> str:
    if us < 10:
        return f"{us:.2f} µs"
    if us < 1000:
        return f"{us:.1f} µs"
    if us < 1_000_000:
        return f"{us / 1e3:.2f} ms"
    return f"{us / 1e6:.2f} s"


def fmt_ratio(x: float) -> str:
    return f"{x:,.0f}x" if x >= 100 else f"{x:.1f}x"


# -- in-process benchmarks ----------------------------------------------------------------


def timed_loop(n: int, call: Callable[[], Any]) -> Round:
    samples = [0] * n
    start = now_ns()
    for i in range(n):
        t0 = now_ns()
        call()
        samples[i] = now_ns() - t0
    return Round(samples, now_ns() - start)


def make_direct() -> Callable[[int], Round]:
    sys.path.insert(0, str(MODEL))
    try:
        import predict as trivial  # bench/models/trivial/predict.py
    finally:
        sys.path.remove(str(MODEL))
    predictor = trivial.Predictor()
    predictor.setup()
    assert predictor.predict(TEXT) == EXPECTED

    def call() -> None:
        predictor.predict(TEXT)

    return lambda n: timed_loop(n, call)


def make_validated(spec: PackageSpec) -> Callable[[int], Round]:
    predictor = load_predictor(spec)
    predictor.setup()
    raw = {"text": TEXT}
    assert predictor.predict(**validated_inputs(predictor, raw)) == EXPECTED

    def call() -> None:
        predictor.predict(**validated_inputs(predictor, raw))

    return lambda n: timed_loop(n, call)


def make_worker_job(spec: PackageSpec, outputs_dir: Path) -> Callable[[int], Round]:
    predictor = load_predictor(spec)
    predictor.setup()
    frames: list[bytes] = []
    runner = Runner(predictor, lambda message: frames.append(protocol.encode(message)), outputs_dir)
    counter = iter(range(10**12))

    def call() -> None:
        runner.run_sync_job(Job(f"j{next(counter)}", {"text": TEXT}, {}, None))

    call()
    done = protocol.decode(frames[-1][protocol.HEADER.size :])
    assert done["status"] == "succeeded" and done["output"] == EXPECTED, done

    def run(n: int) -> Round:
        frames.clear()
        return timed_loop(n, call)

    return run


# -- the wire alone -----------------------------------------------------------------------


class EchoChild:
    def __init__(self) -> None:
        self.sock, child = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ECHO_CHILD, str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self.counter = 0

    def call(self) -> None:
        self.counter += 1
        self.sock.sendall(
            protocol.encode(
                {
                    "op": "predict",
                    "id": f"e{self.counter}",
                    "input": {"text": TEXT},
                    "context": {},
                    "timeout": None,
                }
            )
        )
        message = protocol.recv_message(self.sock)
        assert message is not None and message["output"] == EXPECTED, message

    def run(self, n: int) -> Round:
        return timed_loop(n, self.call)

    def close(self) -> None:
        self.sock.close()
        stop_process(self.proc)


# -- Ember replicas -----------------------------------------------------------------------


class Replicas:
    """Ember replicas driven from one asyncio loop owned by this benchmark."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.runtime = LocalRuntime(data_dir)
        self.replicas: list[LocalReplica] = []
        self.counter = 0

    def __call__(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def start(self, spec: PackageSpec) -> LocalReplica:
        replica = await self.runtime.start_replica(spec)
        self.replicas.append(replica)
        state = await asyncio.wait_for(replica.wait_started(), 60)
        if state != ReplicaState.READY:
            raise RuntimeError(f"replica did not start: {replica.setup_error}")
        return replica

    def next_id(self) -> str:
        self.counter += 1
        return f"b{self.counter}"

    async def predict_once(self, replica: LocalReplica) -> int:
        t0 = now_ns()
        handle = replica.submit(PredictionRequest(id=self.next_id(), input={"text": TEXT}))
        result = await handle.result()
        elapsed = now_ns() - t0
        if result.status != "succeeded" or result.output != EXPECTED:
            raise RuntimeError(f"prediction failed: {result.status} {result.error}")
        return elapsed

    async def sequential(self, replica: LocalReplica, n: int) -> Round:
        samples = [0] * n
        start = now_ns()
        for i in range(n):
            samples[i] = await self.predict_once(replica)
        return Round(samples, now_ns() - start)

    async def in_flight(self, replica: LocalReplica, n: int, width: int) -> Round:
        """n predictions with `width` outstanding at all times (closed loop)."""
        samples: list[int] = []
        remaining = iter(range(n))

        async def lane() -> None:
            for _ in remaining:  # lanes share one iterator: n predictions in all
                samples.append(await self.predict_once(replica))

        start = now_ns()
        await asyncio.gather(*(lane() for _ in range(width)))
        return Round(samples, now_ns() - start)

    async def cold_start(self, spec: PackageSpec) -> tuple[int, int]:
        """(start → READY, start → first result) for a fresh replica, which is then stopped."""
        t0 = now_ns()
        replica = await self.start(spec)
        ready = now_ns() - t0
        await self.predict_once(replica)
        first = now_ns() - t0
        await self.stop(replica)
        return ready, first

    async def stop(self, replica: LocalReplica) -> None:
        try:
            await asyncio.wait_for(replica.stop(drain=True, timeout=10), 20)
        except TimeoutError:
            replica.kill("benchmark stopping")
            await asyncio.wait_for(replica.wait_stopped(), 10)
        with contextlib.suppress(ValueError):
            self.replicas.remove(replica)

    def close(self) -> None:
        for replica in list(self.replicas):
            with contextlib.suppress(Exception):
                self(self.stop(replica))
        for replica in self.replicas:  # anything that would not stop
            replica.kill("benchmark exiting")
        self.loop.close()


# -- the HTTP peer ------------------------------------------------------------------------


class FastAPIPeer:
    def __init__(self) -> None:
        self.listener = listening_socket()
        self.peer = python_app(FASTAPI_APP, self.listener)
        self.proc: subprocess.Popen[Any] | None = None
        self.client = self.connect()

    def connect(self) -> httpx.Client:
        """A client of one keep-alive connection."""
        return httpx.Client(
            base_url=self.peer.url,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=30.0,
            trust_env=False,
        )

    def launch(self) -> int:
        """Launch the server; ns until it answered its first request (the socket already
        listens, so the request waits in the backlog instead of polling)."""
        assert self.proc is None
        t0 = now_ns()
        self.proc = self.peer.start(log=None)
        self.call()
        return now_ns() - t0

    def call(self) -> None:
        response = self.client.post("/predict", json={"text": TEXT})
        response.raise_for_status()
        assert response.json()["output"] == EXPECTED

    def run(self, n: int) -> Round:
        return timed_loop(n, self.call)

    def shutdown(self) -> None:
        self.client.close()  # drop the keep-alive connection so the next launch opens a new one
        stop_group(self.proc)
        self.proc = None
        self.client = self.connect()

    def close(self) -> None:
        self.client.close()
        stop_group(self.proc)
        self.proc = None
        self.listener.close()


def http_peer_available() -> bool:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    return True


# -- noise --------------------------------------------------------------------------------


# -- the run ------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per round")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls before each round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[8],
        help="predictions in flight for the throughput rows",
    )
    parser.add_argument("--starts", type=int, default=5, help="cold starts to time")
    parser.add_argument("--no-peer", action="store_true", help="skip the FastAPI/uvicorn peer")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.calls < 1 or args.repeats < 1 or args.starts < 1 or args.warmup < 0:
        parser.error("--calls, --repeats and --starts must be ≥ 1, --warmup ≥ 0")

    console = Console(width=None if sys.stdout.isatty() else 150)
    spec = read_package(MODEL)
    spec_concurrent = spec.model_copy(
        update={"max_concurrency": max(args.concurrency)}
    )  # same code, worker in its concurrent (asyncio + thread pool) mode
    use_peer = not args.no_peer and http_peer_available()
    meter = NoiseMeter()

    with tempfile.TemporaryDirectory(prefix="ember-bench-") as tmp:
        data_dir = Path(tmp)
        replicas = Replicas(data_dir / "home")
        echo: EchoChild | None = None
        peer: FastAPIPeer | None = None
        try:
            # Cold starts first, Ember and the peer interleaved.
            console.print(f"[bold]cold starts[/] x{args.starts} …")
            ember_ready: list[int] = []
            ember_first: list[int] = []
            peer_first: list[int] = []
            if use_peer:
                peer = FastAPIPeer()
            for _ in range(args.starts):
                ready, first = replicas(replicas.cold_start(spec))
                ember_ready.append(ready)
                ember_first.append(first)
                if peer is not None:
                    peer_first.append(peer.launch())
                    peer.shutdown()

            console.print("[bold]starting warm replicas[/] …")
            serial = replicas(replicas.start(spec))
            concurrent = replicas(replicas.start(spec_concurrent))
            echo = EchoChild()
            if peer is not None:
                peer.launch()

            benches = [
                Bench("direct", "1. direct predict() in-process", make_direct()),
                Bench(
                    "validated",
                    "2. loader + validated_inputs() in-process",
                    make_validated(spec),
                ),
                Bench(
                    "worker_job",
                    "2b. Runner.run_sync_job() in-process (no socket)",
                    make_worker_job(spec, data_dir / "outputs"),
                ),
                Bench("ipc", "   IPC floor: bare socketpair JSON ping-pong", echo.run),
                Bench(
                    "roundtrip",
                    "3. replica round trip, sequential",
                    lambda n: replicas(replicas.sequential(serial, n)),
                ),
            ]
            for width in args.concurrency:
                benches.append(
                    Bench(
                        f"inflight{width}",
                        f"4. {width} in flight, replica concurrency 1",
                        lambda n, w=width: replicas(replicas.in_flight(serial, n, w)),
                        in_flight=width,
                    )
                )
                benches.append(
                    Bench(
                        f"inflight{width}_c",
                        f"4b. {width} in flight, replica concurrency "
                        f"{spec_concurrent.max_concurrency}",
                        lambda n, w=width: replicas(replicas.in_flight(concurrent, n, w)),
                        in_flight=width,
                    )
                )
            if peer is not None:
                benches.append(
                    Bench("fastapi", "peer: FastAPI+uvicorn HTTP echo, keep-alive", peer.run)
                )

            for round_no in range(args.repeats):
                console.print(f"[bold]round {round_no + 1}/{args.repeats}[/] …")
                shift = round_no % len(benches)
                for bench in benches[shift:] + benches[:shift]:
                    if args.warmup:
                        bench.run(args.warmup)
                    bench.rounds.append(bench.run(args.calls))
        finally:
            if echo is not None:
                echo.close()
            if peer is not None:
                peer.close()
            replicas.close()

    noise = meter.finish()

    # -- report ---------------------------------------------------------------------------
    summaries = {b.key: b.summary() for b in benches}
    floor = summaries["direct"]["median_us"]
    table = Table(
        title=f"Ember worker round trip — trivial predictor, {args.repeats} rounds x "
        f"{args.calls} calls (+{args.warmup} warm-up)",
        caption="median / p99: median over rounds of each round's value; "
        "spread: min-max of round medians; per-pred = 1 / throughput",
    )
    for column, justify in [
        ("benchmark", "left"),
        ("median", "right"),
        ("p99", "right"),
        ("min", "right"),
        ("vs direct", "right"),
        ("throughput", "right"),
        ("spread of medians", "right"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for bench in benches:
        s = summaries[bench.key]
        if s["in_flight"] > 1:
            per_prediction = 1e6 / s["throughput_per_s"]
            ratio = f"{fmt_ratio(per_prediction / floor)} (per-pred)"
        else:
            ratio = fmt_ratio(s["median_us"] / floor)
        spread = f"{fmt_time(min(s['round_medians_us']))}-{fmt_time(max(s['round_medians_us']))}"
        table.add_row(
            s["label"],
            fmt_time(s["median_us"]),
            fmt_time(s["p99_us"]),
            fmt_time(s["min_us"]),
            ratio,
            f"{s['throughput_per_s']:,.0f}/s",
            spread,
        )

    def cold_row(label: str, samples: list[int]) -> dict[str, Any]:
        us = sorted(x / 1e3 for x in samples)
        return {
            "label": label,
            "starts": len(us),
            "median_us": statistics.median(us),
            "min_us": us[0],
            "max_us": us[-1],
        }

    cold = [
        cold_row("5. replica start → READY", ember_ready),
        cold_row("5. replica start → first result", ember_first),
    ]
    if peer_first:
        cold.append(cold_row("peer: uvicorn launch → first answer", peer_first))
    table.add_section()
    for row in cold:
        table.add_row(
            f"{row['label']} (x{row['starts']})",
            fmt_time(row["median_us"]),
            f"max {fmt_time(row['max_us'])}",
            fmt_time(row["min_us"]),
            "",
            "",
            f"{fmt_time(row['min_us'])}-{fmt_time(row['max_us'])}",
        )
    console.print(table)

    roundtrip = summaries["roundtrip"]["median_us"]
    verdict = "well under" if roundtrip < 500 else ("under" if roundtrip < 1000 else "NOT under")
    console.print(
        f"Sequential replica round trip median {fmt_time(roundtrip)}: {verdict} a millisecond "
        f"({fmt_ratio(roundtrip / floor)} the direct call)."
    )
    if "fastapi" in summaries:
        http = summaries["fastapi"]["median_us"]
        console.print(
            f"FastAPI/uvicorn HTTP echo median {fmt_time(http)}: Ember's round trip is "
            f"{roundtrip / http:.2f}x an HTTP hop."
        )
    console.print(NoiseMeter.describe(noise) + ".")
    if args.json:
        write_report(args.json, args, noise=noise, warm=summaries, cold=cold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
