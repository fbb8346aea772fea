"""What does `ember serve` cost per request, compared with a bare FastAPI app?

Side by side in one run, on loopback, for the trivial predictor (`bench/models/trivial`,
`predict(text) -> text.upper()`), so that everything measured is platform overhead:

  A  bare app        FastAPI + uvicorn (uvloop, httptools, access log off, one process) with
                     `POST /predict` calling the same Predictor in-process and returning JSON:
                     the floor
  B  ember, sync     `ember serve` (SQLite in a temp data dir) with the package deployed as
                     deployment ember/trivial; `POST /v1/deployments/ember/trivial/predictions`
                     with `Prefer: wait`, body {"input": {"text": "hi"}}: the response carries
                     the output (HTTP → control plane → replica process → back, plus the
                     prediction's row committed to the database)
  C  ember, async    the same without `Prefer: wait`: the 201 comes once the prediction is
                     durably queued; acknowledgment latency only (no throughput: the queue
                     would outgrow the replica), and the queue is drained before going on
  D  ember on PG     B against a fresh PostgreSQL database (postgresql://postgres@127.0.0.1:5432)

For each: warm p50/p99 from `--requests` sequential requests on one keep-alive httpx
connection (after `--warmup`), then requests/s with `--clients` concurrent keep-alive
connections for `--seconds`, counting non-2xx answers, wrong outputs and socket errors. The
load generator is wrk (one thread, C, epoll: it leaves most of the two cores to the servers;
a Lua script sets the POST body and headers and checks every answer); without wrk (or with
`--loadgen python`), an asyncio + httpx generator in a separate process — it needs more than a
core for ~600 req/s, so against the bare app it measures itself: lower bounds only, and the
script warns when the generator was busy). Rounds are interleaved (the order rotates each
round) and `--repeats` rounds are summarised by their medians. Also reported: the CPU time
each server process (and Ember's replica worker) spent per request under load, read from
/proc — that is what decides throughput on a 2-core machine.

    python bench/serve_throughput.py [--seconds 10] [--clients 16] [--repeats 3]
                                     [--requests 500] [--no-async] [--no-postgres]
                                     [--asyncio-floor] [--loadgen auto|wrk|python]
                                     [--wrk-threads 1] [--json out.json]

Targets (from the issue): Ember's sequential p50 within 1 ms of the bare app's, and Ember's
req/s at least 70% of the bare app's. Every process this starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from common import NoiseMeter, percentile, write_report
from harness import (
    ADMIN_TOKEN,
    HERE,
    POSTGRES,
    EmberServe,
    listening_socket,
    postgres_database,
    process_tree,
    python_app,
    stop_group,
)
from loadgen import Load, LoadResult, add_load_arguments, run_load
from rich.console import Console
from rich.table import Table

MODEL = HERE / "models" / "trivial"

# Pin math-library threads in this process and in every child (they inherit os.environ).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

TEXT = "hi"
EXPECTED = TEXT.upper()
BODY = json.dumps({"input": {"text": TEXT}}, separators=(",", ":"))
DEPLOYMENT_PATH = "/v1/deployments/ember/trivial/predictions"
now_ns = time.perf_counter_ns
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The floor: the same Predictor class, called in-process from an `async def` endpoint (no
# thread-pool hop), served by uvicorn with the settings Ember's server asks for (uvloop and
# httptools, access log off, one process) on a listening socket inherited from the benchmark
# (no port race). argv: socket fd, loop ("uvloop" or "asyncio"), model folder.
BARE_APP = """
import socket, sys
from typing import Any
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

sys.path.insert(0, sys.argv[3])
from predict import Predictor  # bench/models/trivial/predict.py

predictor = Predictor()
predictor.setup()

class PredictionRequest(BaseModel):
    input: dict[str, Any]

app = FastAPI()

@app.post("/predict")
async def predict(body: PredictionRequest) -> dict:
    return {"output": predictor.predict(**body.input)}

sock = socket.socket(fileno=int(sys.argv[1]))
config = uvicorn.Config(app, loop=sys.argv[2], http="httptools", log_level="warning",
                        access_log=False, lifespan="on")
uvicorn.Server(config).run(sockets=[sock])
"""

# -- statistics ---------------------------------------------------------------------------


@dataclass
class LatencyRound:
    samples_ns: list[int]
    failures: int

    @property
    def p50_us(self) -> float:
        return statistics.median(self.samples_ns) / 1e3

    @property
    def p99_us(self) -> float:
        return percentile(sorted(self.samples_ns), 0.99) / 1e3


@dataclass
class LoadRound(LoadResult):
    cpu: dict[str, float]  # process role → CPU seconds during the run
    generator_cpu_s: float

    def cpu_ms_per_request(self, role: str) -> float:
        return 1e3 * self.cpu.get(role, 0.0) / max(1, self.requests)


@dataclass
class Target:
    key: str
    label: str
    url: str
    path: str
    headers: dict[str, str]
    check: Callable[[httpx.Response], bool]
    wrk_check: str | None  # substring every good answer contains
    pids: Callable[[], dict[str, list[int]]]  # role → pids whose CPU time is counted
    load: bool = True
    after_round: Callable[[str | None], None] = lambda last_id: None
    latency: list[LatencyRound] = field(default_factory=list)
    loads: list[LoadRound] = field(default_factory=list)

    @property
    def load_spec(self) -> Load:
        """What the load generator sends and checks."""
        return Load(self.key, self.url, self.path, self.headers, [BODY], self.wrk_check)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "rounds": len(self.latency)}
        p50s = [r.p50_us for r in self.latency]
        out["p50_us"] = statistics.median(p50s)
        out["p99_us"] = statistics.median(r.p99_us for r in self.latency)
        out["round_p50s_us"] = p50s
        out["sequential_failures"] = sum(r.failures for r in self.latency)
        if self.loads:
            rps = [r.rps for r in self.loads]
            out["rps"] = statistics.median(rps)
            out["round_rps"] = rps
            out["load_p50_us"] = statistics.median(r.p50_us for r in self.loads)
            out["load_p99_us"] = statistics.median(r.p99_us for r in self.loads)
            out["load_requests"] = sum(r.requests for r in self.loads)
            out["load_non2xx"] = sum(r.non2xx for r in self.loads)
            out["load_bad"] = sum(r.bad for r in self.loads)
            out["load_errors"] = sum(r.errors for r in self.loads)
            roles = [role for role in ("server", "worker", "postgres") if role in self.loads[0].cpu]
            out["cpu_ms_per_request"] = {
                role: statistics.median(r.cpu_ms_per_request(role) for r in self.loads)
                for role in roles
            }
            out["server_cores"] = statistics.median(
                sum(r.cpu.values()) / r.seconds for r in self.loads
            )
            out["generator_cores"] = statistics.median(
                r.generator_cpu_s / r.seconds for r in self.loads
            )
        return out


def fmt_ms(us: float) -> str:
    return f"{us / 1e3:.2f} ms"


# -- processes and CPU accounting -----------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process, in seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as handle:
                if handle.read().strip().startswith("postgres"):
                    pids.append(int(entry))
    return pids


def cpu_by_role(pids: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(proc_cpu_s(pid) for pid in group) for role, group in pids.items()}


class BareApp:
    def __init__(self, loop: str) -> None:
        self.listener = listening_socket(2048)
        peer = python_app(BARE_APP, self.listener, loop, str(MODEL))
        self.url = peer.url
        self.proc = peer.start(log=None)
        try:
            # The socket already listens: this request waits in the backlog until uvicorn runs.
            response = httpx.post(
                f"{self.url}/predict",
                content=BODY,
                headers=SYNC_HEADERS,
                timeout=60,
                trust_env=False,
            )
            if not ok_bare(response):
                raise RuntimeError(f"the bare app answered {response.status_code} {response.text}")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        stop_group(self.proc)
        self.listener.close()


class EmberUnderTest:
    """`ember serve` with bench/models/trivial deployed as deployment ember/trivial."""

    def __init__(self, data_dir: Path, database_url: str | None = None) -> None:
        self.server = EmberServe(data_dir, data_dir / "server.log", database_url=database_url)
        try:
            self.server.start()
            self._deploy()
        except BaseException:
            self.server.close()
            raise

    def _deploy(self) -> None:
        self.server.upload(MODEL, "trivial")
        self.server.create_deployment("trivial", min_instances=1)
        with self.server.client() as client:
            deadline = time.monotonic() + 60  # the first prediction waits for the replica
            while True:
                answer = client.post(DEPLOYMENT_PATH, content=BODY, headers=SYNC_HEADERS)
                if ok_sync(answer):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the deployment never answered: {answer.text}")
                time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.server.pid

    def pids(self) -> dict[str, list[int]]:
        # Everything under the server: the warm host and the replica it forked (a grandchild).
        return {"server": [self.pid], "worker": process_tree(self.pid)[1:]}

    def drain(self, prediction_id: str | None, timeout: float = 60) -> None:
        """Wait until an (async) prediction, and so the FIFO before it, has finished."""
        if prediction_id is None:
            return
        deadline = time.monotonic() + timeout
        with self.server.client() as client:
            while time.monotonic() < deadline:
                body = client.get(f"/v1/predictions/{prediction_id}").json()
                if body["status"] in ("succeeded", "failed", "canceled"):
                    return
                time.sleep(0.05)
        raise RuntimeError(f"async predictions did not drain within {timeout:.0f} s")

    def close(self) -> None:
        self.server.close()


ROLE_ABBREVIATIONS = {"server": "srv", "worker": "wkr", "postgres": "pg"}
COMMON_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
SYNC_HEADERS = {**COMMON_HEADERS, "Prefer": "wait"}


def ok_sync(response: httpx.Response) -> bool:
    if response.status_code != 201:
        return False
    body = response.json()
    return body.get("status") == "succeeded" and body.get("output") == EXPECTED


def ok_async(response: httpx.Response) -> bool:
    return response.status_code == 201 and response.json().get("status") in (
        "starting",
        "processing",
        "succeeded",
    )


def ok_bare(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.json() == {"output": EXPECTED}


# -- measurements ---------------------------------------------------------------------------


def sequential(target: Target, n: int, warmup: int) -> tuple[LatencyRound, str | None]:
    """n requests one after another on one keep-alive connection; (round, last answer's id)."""
    samples = [0] * n
    failures = 0
    last_id = None
    with httpx.Client(
        base_url=target.url,
        headers=target.headers,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=30,
        trust_env=False,
    ) as client:
        for _ in range(warmup):
            client.post(target.path, content=BODY)
        for i in range(n):
            t0 = now_ns()
            try:
                response = client.post(target.path, content=BODY)
            except httpx.HTTPError:
                samples[i] = now_ns() - t0
                failures += 1
                continue
            samples[i] = now_ns() - t0
            if not target.check(response):
                failures += 1
            elif response.status_code == 201:
                last_id = response.json()["id"]
    return LatencyRound(samples, failures), last_id


class LoadGenerator:
    def __init__(
        self, work_dir: Path, clients: int, seconds: float, threads: int, kind: str = "auto"
    ) -> None:
        self.work_dir = work_dir
        self.clients = clients
        self.seconds = seconds
        self.threads = threads
        self.wrk = shutil.which("wrk") if kind in ("auto", "wrk") else None
        if kind == "wrk" and self.wrk is None:
            raise SystemExit("--loadgen wrk: wrk is not installed (apt-get install wrk)")
        self.name = (
            f"wrk -t{threads} -c{clients} -d{seconds:g}s (Lua: POST body, headers, checks)"
            if self.wrk
            else f"Python asyncio+httpx generator, {clients} connections, separate process "
            + (
                "(as asked)"
                if kind == "python"
                else "(wrk not found: `apt-get install wrk` for trustworthy req/s)"
            )
        )

    def run(self, target: Target) -> LoadRound:
        pids = target.pids()
        before = cpu_by_role(pids)
        result = run_load(
            target.load_spec, self.clients, self.seconds, self.wrk, self.work_dir, self.threads
        )
        after = cpu_by_role(pids)
        return LoadRound(
            **vars(result),
            cpu={role: after[role] - before.get(role, 0.0) for role in after},
            generator_cpu_s=0.0,
        )


@contextlib.contextmanager
def children_cpu() -> Iterator[list[float]]:
    """CPU seconds of children reaped inside the block (the load generator)."""
    box: list[float] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    yield box
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    box.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


def postgres_available() -> str | None:
    """None if a PostgreSQL server answers at POSTGRES, else why not."""
    try:
        import psycopg

        with psycopg.connect(f"{POSTGRES}/test", connect_timeout=3):
            return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"


# -- the run ------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--requests", type=int, default=500, help="sequential requests/round")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests before them")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (-t)")
    parser.add_argument("--no-async", action="store_true", help="skip C (async ack latency)")
    parser.add_argument("--no-postgres", action="store_true", help="skip D (PostgreSQL)")
    parser.add_argument(
        "--asyncio-floor",
        action="store_true",
        help="also run the bare app on the stdlib asyncio loop instead of uvloop",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if min(args.seconds, args.clients, args.repeats, args.requests) < 1 or args.warmup < 0:
        parser.error("--seconds, --clients, --repeats, --requests must be ≥ 1, --warmup ≥ 0")

    console = Console(width=None if sys.stdout.isatty() else 200)
    meter = NoiseMeter()
    postgres_skip = "--no-postgres" if args.no_postgres else postgres_available()
    generator_cpu = 0.0

    with (
        tempfile.TemporaryDirectory(prefix="ember-serve-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        loadgen = LoadGenerator(work, args.clients, args.seconds, args.wrk_threads, args.loadgen)
        console.print(f"[bold]load generator:[/] {loadgen.name}")
        targets: list[Target] = []

        console.print("[bold]starting[/] the bare app …")
        bare = BareApp("uvloop")
        stack.callback(bare.close)
        targets.append(
            Target(
                "bare",
                "A. bare FastAPI app (floor)",
                bare.url,
                "/predict",
                SYNC_HEADERS,
                ok_bare,
                f'"output":"{EXPECTED}"',
                lambda: {"server": [bare.proc.pid]},
            )
        )
        if args.asyncio_floor:
            bare_asyncio = BareApp("asyncio")
            stack.callback(bare_asyncio.close)
            targets.append(
                Target(
                    "bare_asyncio",
                    "A'. bare app, stdlib asyncio loop",
                    bare_asyncio.url,
                    "/predict",
                    SYNC_HEADERS,
                    ok_bare,
                    f'"output":"{EXPECTED}"',
                    lambda: {"server": [bare_asyncio.proc.pid]},
                )
            )

        console.print("[bold]starting[/] ember serve (SQLite), deploying bench/models/trivial …")
        ember = EmberUnderTest(work / "ember-sqlite")
        stack.callback(ember.close)
        targets.append(
            Target(
                "ember",
                "B. ember, SQLite, Prefer: wait",
                ember.server.url,
                DEPLOYMENT_PATH,
                SYNC_HEADERS,
                ok_sync,
                f'"output":"{EXPECTED}"',
                ember.pids,
            )
        )
        if not args.no_async:
            targets.append(
                Target(
                    "ember_async",
                    "C. ember, SQLite, async 201 ack",
                    ember.server.url,
                    DEPLOYMENT_PATH,
                    COMMON_HEADERS,
                    ok_async,
                    None,
                    ember.pids,
                    load=False,
                    after_round=ember.drain,
                )
            )
        if postgres_skip is None:
            console.print("[bold]starting[/] ember serve (PostgreSQL, fresh database) …")
            database_url = stack.enter_context(postgres_database())
            ember_pg = EmberUnderTest(work / "ember-postgres", database_url)
            stack.callback(ember_pg.close)
            targets.append(
                Target(
                    "ember_pg",
                    "D. ember, PostgreSQL, Prefer: wait",
                    ember_pg.server.url,
                    DEPLOYMENT_PATH,
                    SYNC_HEADERS,
                    ok_sync,
                    f'"output":"{EXPECTED}"',
                    lambda: {**ember_pg.pids(), "postgres": postgres_pids()},
                )
            )
        else:
            console.print(f"[yellow]skipping D (PostgreSQL):[/] {postgres_skip}")

        for round_no in range(args.repeats):
            shift = round_no % len(targets)
            order = targets[shift:] + targets[:shift]
            console.print(
                f"[bold]round {round_no + 1}/{args.repeats}[/]: " + ", ".join(t.key for t in order)
            )
            for target in order:
                latency, last_id = sequential(target, args.requests, args.warmup)
                target.latency.append(latency)
                target.after_round(last_id)
                if target.load:
                    with children_cpu() as box:
                        load = loadgen.run(target)
                    load.generator_cpu_s = box[0]
                    generator_cpu += box[0]
                    target.loads.append(load)
                    console.print(
                        f"  {target.key:13} p50 {fmt_ms(latency.p50_us)}  "
                        f"{load.rps:,.0f} req/s  (non-2xx {load.non2xx}, bad {load.bad}, "
                        f"errors {load.errors})"
                    )
                else:
                    console.print(f"  {target.key:13} p50 {fmt_ms(latency.p50_us)}")

    noise = meter.finish() | {
        "postgres_included_in_other": postgres_skip is None,
        "load_generator_cpu_s": round(generator_cpu, 1),
    }

    # -- report ---------------------------------------------------------------------------
    summaries = {t.key: t.summary() for t in targets}
    floor = summaries["bare"]
    table = Table(
        title=f"ember serve vs a bare FastAPI app — trivial predictor, {args.repeats} rounds: "
        f"{args.requests} sequential requests + {args.clients} clients x {args.seconds:g} s",
        caption="p50/p99: sequential, one keep-alive connection (median over rounds); "
        "req/s: 2xx answers with the right output per second under load (median over rounds); "
        "CPU/req: CPU ms per request under load in the server process (srv), "
        "Ember's replica worker (wkr) and all PostgreSQL processes (pg)",
    )
    for column in (
        "target",
        "p50",
        "p99",
        "p50 vs bare",
        f"req/s @{args.clients}",
        "vs bare",
        f"p50/p99 @{args.clients}",
        "non-2xx/bad/err",
        "CPU/req (ms)",
        "spread p50 · req/s",
    ):
        table.add_column(column, justify="left" if column == "target" else "right")
    for target in targets:
        s = summaries[target.key]
        p50s = s["round_p50s_us"]
        p50_spread = f"{min(p50s) / 1e3:.2f}-{max(p50s) / 1e3:.2f} ms"
        delta = "" if target.key == "bare" else f"{(s['p50_us'] - floor['p50_us']) / 1e3:+.2f} ms"
        if "rps" in s:
            cpu = " + ".join(
                f"{ROLE_ABBREVIATIONS[role]} {ms:.2f}"
                for role, ms in s["cpu_ms_per_request"].items()
            )
            table.add_row(
                s["label"],
                fmt_ms(s["p50_us"]),
                fmt_ms(s["p99_us"]),
                delta,
                f"{s['rps']:,.0f}",
                f"{s['rps'] / floor['rps']:.0%}",
                f"{fmt_ms(s['load_p50_us'])} / {fmt_ms(s['load_p99_us'])}",
                f"{s['load_non2xx']}/{s['load_bad']}/{s['load_errors']}"
                + (f" (+{s['sequential_failures']} seq)" if s["sequential_failures"] else ""),
                cpu,
                f"{p50_spread} · {min(s['round_rps']):,.0f}-{max(s['round_rps']):,.0f}/s",
            )
        else:
            table.add_row(
                s["label"],
                fmt_ms(s["p50_us"]),
                fmt_ms(s["p99_us"]),
                delta,
                "",
                "",
                "",
                f"{s['sequential_failures']} seq",
                "",
                p50_spread,
            )
    console.print(table)

    verdicts: dict[str, dict[str, Any]] = {}
    for key in ("ember", "ember_pg"):
        if key not in summaries:
            continue
        s = summaries[key]
        delta_ms = (s["p50_us"] - floor["p50_us"]) / 1e3
        ratio = s["rps"] / floor["rps"]
        verdicts[key] = {
            "p50_delta_ms": round(delta_ms, 3),
            "p50_target": "PASS" if delta_ms <= 1.0 else "MISS",
            "rps_ratio": round(ratio, 3),
            "rps_target": "PASS" if ratio >= 0.70 else "MISS",
        }
        v = verdicts[key]
        colour = {"PASS": "green", "MISS": "red"}
        console.print(
            f"{s['label']}: p50 {delta_ms:+.2f} ms vs bare (target ≤ +1 ms) "
            f"[{colour[v['p50_target']]}]{v['p50_target']}[/]; req/s {ratio:.0%} of bare "
            f"(target ≥ 70%) [{colour[v['rps_target']]}]{v['rps_target']}[/]"
        )
    for key, s in summaries.items():
        if "server_cores" in s:
            console.print(
                f"  {key}: servers used {s['server_cores']:.2f} cores under load, "
                f"the load generator {s['generator_cores']:.2f}"
            )
    console.print(f"Load generator: {loadgen.name}.")
    busy = [key for key, s in summaries.items() if s.get("generator_cores", 0) > 0.6]
    if busy:
        console.print(
            f"[yellow]Warning:[/] the load generator used more than 0.6 of a core against "
            f"{', '.join(busy)}: those req/s are bounded by the generator, not the server, "
            "and their ratios understate the gap (use wrk)."
        )
    console.print(
        NoiseMeter.describe(noise)
        + ("; PostgreSQL's own CPU counts as 'other' here." if postgres_skip is None else ".")
    )
    if args.json:
        write_report(
            args.json,
            args,
            noise=noise,
            load_generator=loadgen.name,
            results=summaries,
            targets=verdicts,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
