"""Load and soak: does `ember serve` hold a burst at zero replicas, keep its memory bounded
with a deep queue, and stay flat under steady load?

One real `ember serve` (SQLite, a fresh data dir in a temp dir, started by bench/harness.py's
`EmberServe` with its admin token) and two tiny models: `predict(text, hold="")` returns
`text.upper()`, first waiting while the file `hold` exists; the second model's `setup()` also
waits while the server's setup-hold file exists (a slow model load that ends at will). Three
phases in turn, each on its own deployment:

  burst   `--concurrent` predictions at once, each `Prefer: wait` (polled when the wait runs
          out), against load-burst (the held model, min 0, max `--max-instances`) at zero
          replicas. Its replicas cannot finish setup, so every request is held with no replica
          ready; once all are (the deployment's queue says so), the hold is released. Figures:
          held, succeeded, lost, p50/p99 from the release to each answer, replicas started
  queue   load-queue (max 1, queue_limit `--queued`): its replica is kept busy by two held
          predictions, `--queued` predictions are created without waiting (each a 201), then
          OVERFLOW more, which the queue limit must refuse with 429; the server's RSS before
          and at the peak (per queued prediction); the hold is released and all must succeed.
          `--queue-rounds` times: a leak would grow every round's peak, memory kept for reuse
          would not
  soak    `--rate` predictions/s (open loop; every other one `Prefer: wait`, the others
          created without waiting) on load-soak for `--soak` seconds after `--warmup`, sampling
          the server's RSS and open fds every `--sample-every` seconds: linear-fit slopes per
          minute, and p99 of the first and last window (a minute, or a quarter of a shorter
          soak)

RSS and fds are the `ember serve` process's own (/proc/PID/status VmRSS, /proc/PID/fd), not its
replicas'; the soak's fd figures leave out client connections (counted in /proc/net/tcp),
which come and go with the load. "Lost" is a prediction that was acknowledged (201) but is
not `succeeded` in the database (the paged, filtered prediction list) once its phase is over.
Nothing is written outside the temp dir; the server and its replicas are stopped at the end,
on Ctrl-C and on SIGTERM too. tests/integration/api/test_load.py runs a shortened version of
the same functions in CI.

    python bench/load.py --concurrent 1000 --queued 10000 --soak 600 --markdown
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from common import (
    NoiseMeter,
    close_all,
    finish_report,
    interrupted,
    interruptible,
    percentile,
    print_verdicts,
)
from harness import EmberServe
from rich.console import Console
from rich.table import Table

from ember.control.predictions import TERMINAL

MODEL = "load"  # for the queue and the soak
HELD_MODEL = "load-held"  # for the burst: setup() lasts while the server's setup hold exists
MIB = 1024 * 1024
# What holds load-queue's one replica busy: the prediction it runs and the one it prefetches
# (the runner's PREFETCH), so that everything after them waits in the gateway's queue.
BLOCKERS = 2
OVERFLOW = 20  # predictions beyond the queue limit: each must be refused with a 429

PREDICTOR = '''"""bench/load.py's model: no work, but for waiting while a hold file exists."""

import os
import time


def wait_while(path: str) -> None:
    deadline = time.monotonic() + 900  # a hold never released must not keep a process forever
    while path and os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


class Predictor:
    def setup(self) -> None:
        wait_while(os.environ.get("LOAD_SETUP_HOLD", ""))  # a slow model load, ended at will

    def predict(self, text: str, hold: str = "") -> str:
        wait_while(hold)
        return text.upper()
'''


# -- the server and what is measured of it ---------------------------------------------------


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `needed` (as far as the hard limit
    allows): every open request is a socket here and another in the server, which inherits
    the limit. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (VmRSS), not of its children."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def client_connections(port: int) -> int:
    """TCP connections whose server end is `port` (ESTABLISHED or CLOSE_WAIT: each is an fd
    in the server), from /proc/net/tcp: the fds a client's connection pool accounts for."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                local, _, state = line.split()[1:4]
                count += int(local.rsplit(":", 1)[1], 16) == port and state in ("01", "08")
    return count


@dataclass
class Sample:
    at: float  # seconds since the sampler started
    rss: int
    fds: int
    connections: int  # of those fds, client connections

    @property
    def own_fds(self) -> int:
        """Fds the server holds for itself (files, pipes, replicas' sockets, database)."""
        return self.fds - self.connections


class Sampler:
    """The server's RSS and open fds every `interval` seconds, in the background of an
    asyncio run (reading /proc takes microseconds, so it runs on the loop itself)."""

    def __init__(self, pid: int, port: int, interval: float) -> None:
        self.pid = pid
        self.port = port
        self.interval = interval
        self.samples: list[Sample] = []
        self._began = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def take(self) -> Sample:
        sample = Sample(
            time.monotonic() - self._began,
            rss_bytes(self.pid),
            open_fds(self.pid),
            client_connections(self.port),
        )
        self.samples.append(sample)
        return sample

    async def _loop(self) -> None:
        while True:
            self.take()
            await asyncio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        self._task = asyncio.create_task(self._loop())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self.take()

    @property
    def peak_rss(self) -> int:
        return max(s.rss for s in self.samples)

    @property
    def peak_fds(self) -> int:
        return max(s.fds for s in self.samples)


class LoadServer:
    """`ember serve` with both load models uploaded; each phase makes its own deployment."""

    def __init__(self, work: Path) -> None:
        self.work = work
        # While it exists, replicas of the held model cannot finish setup (nor can the upload's
        # check of it, so it is made once both models are in).
        self.setup_hold = work / "setup-hold"
        # Unsandboxed: the hold files are this bench's instrument, shared with its models by
        # path, and a sandbox shows a replica no path of the server's (by design). What is
        # measured here is the control plane; bench/sandbox_overhead.py measures the sandbox.
        self.server = EmberServe(work / "data", work / "server.log", args=["--no-sandbox"])
        try:
            self.server.start()
            for name, environment in (
                (MODEL, {}),
                (HELD_MODEL, {"LOAD_SETUP_HOLD": str(self.setup_hold)}),
            ):
                package = work / "packages" / name
                package.mkdir(parents=True)
                manifest = {
                    "name": name,
                    "predictor": "predict.py:Predictor",
                    "environment": environment,
                }
                (package / "ember.yaml").write_text(json.dumps(manifest))  # JSON is YAML
                (package / "predict.py").write_text(PREDICTOR)
                self.server.upload(package, name)
            self.setup_hold.touch()
        except BaseException:
            self.server.close()
            raise

    @property
    def pid(self) -> int:
        return self.server.pid

    def sampler(self, interval: float) -> Sampler:
        return Sampler(self.pid, self.server.port, interval)

    @property
    def log_tail(self) -> str:
        return self.server.log_tail(20)

    def client(self, connections: int = 64, timeout: float = 90) -> httpx.AsyncClient:
        """An admin client with up to `connections` open at once."""
        return httpx.AsyncClient(
            base_url=self.server.url,
            headers=self.server.headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=64),
            trust_env=False,
        )

    def deploy(self, name: str, model: str = MODEL, **scaling: int) -> str:
        """A deployment of one of the load models: its `owner/name`."""
        path = self.server.create_deployment(name, model, **scaling)
        return path.removeprefix("/v1/deployments/")

    def close(self) -> None:
        self.server.close()


async def deployment_status(client: httpx.AsyncClient, deployment: str) -> dict[str, Any]:
    response = await client.get(f"/v1/deployments/{deployment}")
    response.raise_for_status()
    return response.json()["status"]


async def replica_starts(client: httpx.AsyncClient, deployment: str) -> int:
    """Successful replica starts of a deployment so far, from the server's /metrics."""
    text = (await client.get("/metrics")).text
    pattern = re.compile(
        r'^ember_replica_starts_total\{(?=[^}]*deployment="' + re.escape(deployment) + r'")'
        r'(?=[^}]*outcome="ready")[^}]*\}\s+(\S+)$',
        re.MULTILINE,
    )
    return round(sum(float(value) for value in pattern.findall(text)))


async def durable_statuses(
    client: httpx.AsyncClient, deployment: str, ids: set[str], timeout: float = 60
) -> dict[str, str]:
    """Each id's status as the database has it (the paged prediction list of the
    deployment), read again until every one is terminal or `timeout` passes: a prediction's
    last state reaches the database through the group-commit writer a moment after it ends."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, str] = {}
        url: str | None = f"/v1/predictions?deployment={deployment}"
        while url:
            response = await client.get(url)
            response.raise_for_status()
            page = response.json()
            found.update((p["id"], p["status"]) for p in page["results"] if p["id"] in ids)
            url = page.get("next")
        settled = len(found) == len(ids) and all(s in TERMINAL for s in found.values())
        if settled or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


@dataclass
class Outcomes:
    """What happened to a phase's requests, counted on the client side and in the database."""

    sent: int = 0
    accepted: set[str] = field(default_factory=set)  # ids of the 201s
    non2xx: dict[int, int] = field(default_factory=dict)  # HTTP status -> count
    errors: int = 0  # transport errors and timeouts
    latencies: list[float] = field(default_factory=list)  # seconds, of the succeeded ones
    durable: dict[str, str] = field(default_factory=dict)  # id -> status in the database

    def refused(self, status: int) -> None:
        self.non2xx[status] = self.non2xx.get(status, 0) + 1

    @property
    def succeeded(self) -> int:
        return sum(1 for status in self.durable.values() if status == "succeeded")

    @property
    def lost(self) -> int:
        """Acknowledged, but not succeeded in the database after the phase."""
        return len(self.accepted) - self.succeeded

    def percentile_ms(self, q: float) -> float:
        return percentile(sorted(self.latencies), q) * 1e3

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "accepted": len(self.accepted),
            "succeeded": self.succeeded,
            "lost": self.lost,
            "non2xx": self.non2xx,
            "errors": self.errors,
            "p50_ms": round(self.percentile_ms(0.5), 2),
            "p99_ms": round(self.percentile_ms(0.99), 2),
        }


async def predict_and_wait(
    client: httpx.AsyncClient, deployment: str, text: str, outcomes: Outcomes
) -> tuple[dict[str, Any] | None, float]:
    """One `Prefer: wait` prediction, polled to its end if the wait runs out: (its final body,
    None when it was refused or the connection failed; the monotonic time of that answer)."""
    outcomes.sent += 1
    try:
        response = await client.post(
            f"/v1/deployments/{deployment}/predictions",
            json={"input": {"text": text}},
            headers={"Prefer": "wait"},
        )
        if response.status_code != 201:
            outcomes.refused(response.status_code)
            return None, time.monotonic()
        body = response.json()
        outcomes.accepted.add(body["id"])
        while body["status"] not in TERMINAL:
            await asyncio.sleep(0.5)
            body = (await client.get(f"/v1/predictions/{body['id']}")).json()
    except httpx.HTTPError:
        outcomes.errors += 1
        return None, time.monotonic()
    return body, time.monotonic()


def answered_right(body: dict[str, Any] | None, text: str) -> bool:
    return body is not None and body["status"] == "succeeded" and body["output"] == text.upper()


# -- phase 1: a burst at zero replicas -------------------------------------------------------


@dataclass
class BurstResult:
    outcomes: Outcomes  # latencies: from the release of the setup hold to the answer
    held: int  # waiting at once with no replica ready
    hold_seconds: float  # the first send until that many were held
    first_answer_s: float  # the release of the setup hold until the first answer
    last_answer_s: float  # ... until the last
    replicas_started: int
    rss_before: int
    rss_peak: int
    rss_after: int
    fds_before: int
    fds_peak: int
    fds_after: int

    def summary(self) -> dict[str, Any]:
        return {
            **self.outcomes.summary(),
            **{k: v for k, v in asdict(self).items() if k != "outcomes"},
        }


async def burst(
    server: LoadServer, deployment: str, concurrent: int, hold_timeout: float = 120
) -> BurstResult:
    """`concurrent` predictions at once against a deployment of the held model at zero
    replicas. Its replicas cannot finish setup while the server's setup hold exists, so every
    request is held while none is ready; once all are held (or `hold_timeout` has passed) the
    hold is released and every one must succeed."""
    outcomes = Outcomes()
    texts = [f"b{i}" for i in range(concurrent)]
    async with server.client(connections=concurrent + 8, timeout=120) as client:
        replicas = (await deployment_status(client, deployment))["replicas"]
        if replicas["ready"] or replicas["starting"]:
            raise RuntimeError(f"{deployment} is not at zero replicas: {replicas}")
        starts_before = await replica_starts(client, deployment)
        sampler = server.sampler(0.1)
        async with sampler.running():
            sent = time.monotonic()
            calls = [
                asyncio.create_task(predict_and_wait(client, deployment, text, outcomes))
                for text in texts
            ]
            held = 0
            while held < concurrent and time.monotonic() < sent + hold_timeout:
                await asyncio.sleep(0.05)
                status = await deployment_status(client, deployment)
                if status["replicas"]["ready"]:
                    raise RuntimeError(f"{deployment} had a ready replica before the release")
                held = max(held, status["queued"])
                if all(call.done() for call in calls):  # all refused or failed: nothing to hold
                    break
            hold_seconds = time.monotonic() - sent
            server.setup_hold.unlink()
            released = time.monotonic()
            answers = await asyncio.gather(*calls)
        outcomes.durable = await durable_statuses(client, deployment, outcomes.accepted)
        started = await replica_starts(client, deployment) - starts_before
    answered = [at - released for body, at in answers if body is not None]
    for text, (body, at) in zip(texts, answers, strict=True):
        if answered_right(body, text):
            outcomes.latencies.append(at - released)
    return BurstResult(
        outcomes,
        held,
        hold_seconds,
        min(answered, default=0.0),
        max(answered, default=0.0),
        started,
        sampler.samples[0].rss,
        sampler.peak_rss,
        sampler.samples[-1].rss,
        sampler.samples[0].fds,
        sampler.peak_fds,
        sampler.samples[-1].fds,
    )


# -- phase 2: a deep queue --------------------------------------------------------------------


@dataclass
class QueueResult:
    outcomes: Outcomes  # latencies: creation (the 201), not completion
    queued: int  # waiting in the deployment's queue once all were created
    overflow_429: int  # of OVERFLOW more, refused for the queue limit
    rss_before: int
    rss_peak: int
    rss_drained: int
    fds_before: int
    fds_peak: int
    fds_drained: int
    submit_seconds: float
    drain_seconds: float
    created_per_s_first: float  # the first tenth of the creations, against an emptier queue
    created_per_s_last: float  # the last tenth, against the deepest queue

    @property
    def rss_per_queued(self) -> float:
        """Bytes of gateway RSS per queued prediction, at the peak."""
        return (self.rss_peak - self.rss_before) / max(1, self.queued)

    def summary(self) -> dict[str, Any]:
        return {
            **self.outcomes.summary(),
            **{k: v for k, v in asdict(self).items() if k != "outcomes"},
            "rss_per_queued_bytes": round(self.rss_per_queued),
        }


async def create(
    client: httpx.AsyncClient, deployment: str, inputs: dict[str, str]
) -> httpx.Response:
    """Create a prediction without waiting: the 201 comes once it is durably queued."""
    return await client.post(f"/v1/deployments/{deployment}/predictions", json={"input": inputs})


async def create_counted(
    client: httpx.AsyncClient, deployment: str, inputs: dict[str, str], outcomes: Outcomes
) -> bool:
    """`create`, its outcome counted; True for a 201."""
    outcomes.sent += 1
    try:
        response = await create(client, deployment, inputs)
    except httpx.HTTPError:
        outcomes.errors += 1
        return False
    if response.status_code != 201:
        outcomes.refused(response.status_code)
        return False
    outcomes.accepted.add(response.json()["id"])
    return True


def rate(times: list[float]) -> float:
    """Events per second over a sorted list of their times."""
    return (
        (len(times) - 1) / (times[-1] - times[0])
        if len(times) > 1 and times[-1] > times[0]
        else 0.0
    )


async def fill_queue(
    server: LoadServer, deployment: str, queued: int, clients: int = 32, round_number: int = 1
) -> QueueResult:
    """Hold the deployment's one replica with predictions that wait on a hold file, create
    `queued` more without waiting (then OVERFLOW beyond the queue limit), release the hold and
    wait for the queue to drain. The deployment must allow one replica and `queued` waiting
    predictions."""
    hold = server.work / f"queue-hold-{round_number}"
    hold.touch()
    outcomes = Outcomes()
    created: list[float] = []
    overflow_429 = 0
    async with server.client(connections=clients + 8) as client:
        blockers = []
        for i in range(BLOCKERS):
            response = await create(client, deployment, {"text": f"g{i}", "hold": str(hold)})
            response.raise_for_status()
            blockers.append(response.json()["id"])
        outcomes.accepted.update(blockers)
        deadline = time.monotonic() + 60
        while True:
            status = await deployment_status(client, deployment)
            if status["running"] == BLOCKERS and not status["queued"]:
                break  # the replica has both: everything from now on waits in the gateway
            if time.monotonic() > deadline:
                raise RuntimeError(f"the held predictions never started: {status}")
            await asyncio.sleep(0.05)
        sampler = server.sampler(0.2)
        async with sampler.running():
            before = sampler.take()
            todo = iter(range(queued))

            async def submitter() -> None:
                for i in todo:
                    sent_at = time.monotonic()
                    if await create_counted(client, deployment, {"text": f"q{i}"}, outcomes):
                        created.append(time.monotonic())
                        outcomes.latencies.append(created[-1] - sent_at)

            began = time.monotonic()
            await asyncio.gather(*(submitter() for _ in range(clients)))
            submit_seconds = time.monotonic() - began
            held = (await deployment_status(client, deployment))["queued"]
            for i in range(OVERFLOW):
                response = await create(client, deployment, {"text": f"o{i}"})
                if response.status_code == 201:  # the queue was not full: it must run too
                    outcomes.accepted.add(response.json()["id"])
                elif response.status_code == 429 and "queue_limit" in response.text:
                    overflow_429 += 1
                else:
                    outcomes.refused(response.status_code)
            peak = sampler.take()
            hold.unlink()
            began = time.monotonic()
            deadline = began + 120 + queued / 50
            while True:
                status = await deployment_status(client, deployment)
                if not status["queued"] and not status["running"]:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the queue did not drain: {status}\n{server.log_tail}")
                await asyncio.sleep(0.2)
            drain_seconds = time.monotonic() - began
            await asyncio.sleep(1)  # the last answers' buffers go
        outcomes.durable = await durable_statuses(client, deployment, outcomes.accepted)
    tenth = max(2, len(created) // 10)
    return QueueResult(
        outcomes,
        held,
        overflow_429,
        before.rss,
        max(sampler.peak_rss, peak.rss),
        sampler.samples[-1].rss,
        before.fds,
        sampler.peak_fds,
        sampler.samples[-1].fds,
        submit_seconds,
        drain_seconds,
        rate(created[:tenth]),
        rate(created[-tenth:]),
    )


# -- phase 3: a soak at steady load ------------------------------------------------------------


@dataclass
class SoakResult:
    outcomes: Outcomes
    rate: float
    seconds: float  # measured, after the warm-up
    window: float  # seconds of the first and last windows compared
    samples: list[Sample]  # after the warm-up, `at` from its end
    done: list[tuple[float, float]]  # (completed at, latency) of each succeeded prediction

    def _fit(self, values: list[float]) -> float:
        """Least-squares slope per minute of the samples' `values`."""
        minutes = [s.at / 60 for s in self.samples]
        if len(set(minutes)) < 2:
            return 0.0
        return statistics.linear_regression(minutes, values).slope

    @property
    def rss_slope_mib_per_min(self) -> float:
        return self._fit([s.rss / MIB for s in self.samples])

    @property
    def fds_slope_per_min(self) -> float:
        """Of the server's own fds (client connections come and go with the load)."""
        return self._fit([float(s.own_fds) for s in self.samples])

    def _window(self, first: bool) -> tuple[float, float]:
        return (0.0, self.window) if first else (self.seconds - self.window, self.seconds)

    def rss_mib(self, first: bool) -> float:
        low, high = self._window(first)
        inside = [s.rss for s in self.samples if low <= s.at <= high] or [self.samples[-1].rss]
        return statistics.mean(inside) / MIB

    @property
    def fds_growth(self) -> float:
        """The server's own fds gained over the soak, on the fitted line: a leak's steady
        climb shows here even while each window's count stays within the slack."""
        return self.fds_slope_per_min * self.seconds / 60

    def fds(self, first: bool) -> int:
        """The most of the server's own fds open at once in the window."""
        low, high = self._window(first)
        return max([s.own_fds for s in self.samples if low <= s.at <= high] or [0])

    def p99_ms(self, first: bool) -> float:
        low, high = self._window(first)
        return percentile(sorted(lat for at, lat in self.done if low <= at < high), 0.99) * 1e3

    def summary(self) -> dict[str, Any]:
        return {
            **self.outcomes.summary(),
            "rate": self.rate,
            "seconds": round(self.seconds, 1),
            "window_s": self.window,
            "rss_mib_first": round(self.rss_mib(True), 2),
            "rss_mib_last": round(self.rss_mib(False), 2),
            "rss_slope_mib_per_min": round(self.rss_slope_mib_per_min, 3),
            "fds_first": self.fds(True),
            "fds_last": self.fds(False),
            "fds_slope_per_min": round(self.fds_slope_per_min, 3),
            "fds_growth": round(self.fds_growth, 2),
            "p99_ms_first": round(self.p99_ms(True), 2),
            "p99_ms_last": round(self.p99_ms(False), 2),
            "samples": [asdict(s) for s in self.samples],
        }


async def soak(
    server: LoadServer,
    deployment: str,
    seconds: float,
    rate: float,
    warmup: float,
    sample_every: float,
) -> SoakResult:
    """`rate` predictions a second, open loop (each sent on schedule, whatever the answers
    before it do), for `warmup` and then `seconds`, the server sampled every `sample_every`
    seconds after the warm-up (which takes the first replica start out of the figures)."""
    outcomes = Outcomes()
    done: list[tuple[float, float]] = []
    tasks: set[asyncio.Task[None]] = set()
    began = time.monotonic()
    measured_from = began + warmup
    sent = 0

    async def one(client: httpx.AsyncClient, i: int) -> None:
        """Every other prediction `Prefer: wait` (latency: until the output), the others
        created without waiting (latency: until the 201), so that both paths through the
        gateway, durable acknowledgement included, run all along."""
        text = f"s{i}"
        sent_at = time.monotonic()
        if i % 2:
            ok = await create_counted(client, deployment, {"text": text}, outcomes)
            answered_at = time.monotonic()
        else:
            body, answered_at = await predict_and_wait(client, deployment, text, outcomes)
            ok = answered_right(body, text)
        if ok:
            outcomes.latencies.append(answered_at - sent_at)
            if answered_at >= measured_from:
                done.append((answered_at - measured_from, answered_at - sent_at))

    async def send_until(client: httpx.AsyncClient, end: float) -> None:
        nonlocal sent
        while (due := began + sent / rate) < end:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(one(client, sent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1

    async with server.client(connections=256) as client:
        await send_until(client, measured_from)
        sampler = server.sampler(sample_every)
        async with sampler.running():
            await send_until(client, measured_from + seconds)
        measured = time.monotonic() - measured_from
        await asyncio.gather(*tasks)
        outcomes.durable = await durable_statuses(client, deployment, outcomes.accepted)
    return SoakResult(
        outcomes, rate, measured, min(60.0, measured / 4), sampler.samples, sorted(done)
    )


# -- the three phases in turn ------------------------------------------------------------------


@dataclass
class Plan:
    """What to run; a phase whose size is 0 is skipped."""

    concurrent: int = 1000
    queued: int = 10_000
    queue_rounds: int = 2
    soak: float = 600
    rate: float = 20
    warmup: float = 15
    sample_every: float = 5
    max_instances: int = 4
    clients: int = 32


@dataclass
class Results:
    burst: BurstResult | None = None
    queues: list[QueueResult] = field(default_factory=list)
    soak: SoakResult | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "burst": self.burst.summary() if self.burst else None,
            "queue": [q.summary() for q in self.queues],
            "soak": self.soak.summary() if self.soak else None,
        }


def run_phases(server: LoadServer, plan: Plan, say: Callable[[str], object] = print) -> Results:
    """The burst, the queue's rounds and the soak, in that order, on one server (the order
    matters to the soak: by then the platform's bounded caches, such as its recent
    predictions, are full, so what it measures is growth, not filling)."""
    results = Results()
    if plan.concurrent:
        deployment = server.deploy(
            "load-burst", HELD_MODEL, min_instances=0, max_instances=plan.max_instances
        )
        say(f"burst: {plan.concurrent:,} predictions at once on {deployment}")
        results.burst = asyncio.run(burst(server, deployment, plan.concurrent))
    if plan.queued:
        deployment = server.deploy(
            "load-queue", min_instances=0, max_instances=1, queue_limit=plan.queued
        )
        for round_number in range(1, plan.queue_rounds + 1):
            say(f"queue, round {round_number}: {plan.queued:,} predictions behind a busy replica")
            results.queues.append(
                asyncio.run(fill_queue(server, deployment, plan.queued, plan.clients, round_number))
            )
    if plan.soak:
        deployment = server.deploy("load-soak", min_instances=0, max_instances=2)
        say(f"soak: {plan.rate:g}/s for {plan.warmup:g} s of warm-up + {plan.soak:g} s")
        results.soak = asyncio.run(
            soak(server, deployment, plan.soak, plan.rate, plan.warmup, plan.sample_every)
        )
    return results


# -- the report -------------------------------------------------------------------------------


def mib(value: float) -> str:
    return f"{value / MIB:.1f}"


def refusals(outcomes: Outcomes) -> str:
    parts = [f"{status} x{count}" for status, count in sorted(outcomes.non2xx.items())]
    if outcomes.errors:
        parts.append(f"errors x{outcomes.errors}")
    return ", ".join(parts) or "0"


HEADERS_ROW = ["phase", "requests", "held", "succeeded", "lost", "refused / errors", "p50",
               "p99", "replicas started", "server RSS (MiB)", "server fds"]  # fmt: skip


def rows_and_verdicts(
    burst_result: BurstResult | None,
    queue_results: list[QueueResult],
    soak_result: SoakResult | None,
) -> tuple[list[list[str]], list[tuple[str, str, str]]]:
    """The table (a row per phase, and per round of the queue) and the verdicts against the
    issue's targets."""
    rows: list[list[str]] = []
    verdicts: list[tuple[str, str, str]] = []

    def verdict(target: str, measured: str, ok: bool) -> None:
        verdicts.append((target, measured, "PASS" if ok else "FAIL"))

    if burst_result is not None:
        b, o = burst_result, burst_result.outcomes
        rows.append([
            f"burst at zero: {o.sent:,} at once, Prefer: wait", f"{o.sent:,}", f"{b.held:,}",
            f"{o.succeeded:,}", str(o.lost), refusals(o),
            f"{o.percentile_ms(0.5):,.0f} ms after release",
            f"{o.percentile_ms(0.99):,.0f} ms after release", str(b.replicas_started),
            f"{mib(b.rss_before)} → peak {mib(b.rss_peak)} → {mib(b.rss_after)}",
            f"{b.fds_before} → peak {b.fds_peak} → {b.fds_after}",
        ])  # fmt: skip
        verdict(
            f"{o.sent:,} concurrent predictions at zero replicas all complete, lost = 0",
            f"{b.held:,} held with no replica ready ({b.hold_seconds:.1f} s to send them all); "
            f"{o.succeeded:,}/{o.sent:,} succeeded {b.first_answer_s:.2f}-"
            f"{b.last_answer_s:.2f} s after setup was released, lost {o.lost}, refused "
            f"{refusals(o)}",
            b.held == o.sent and o.succeeded == o.sent and o.lost == 0,
        )
    for round_number, q in enumerate(queue_results, 1):
        o = q.outcomes
        rows.append([
            f"queue, round {round_number}: {o.sent:,} behind 1 busy replica", f"{o.sent:,}",
            f"{q.queued:,}", f"{o.succeeded:,}", str(o.lost), refusals(o),
            f"{o.percentile_ms(0.5):.1f} ms (201)", f"{o.percentile_ms(0.99):.1f} ms (201)",
            "", f"{mib(q.rss_before)} → peak {mib(q.rss_peak)} → drained {mib(q.rss_drained)}",
            f"{q.fds_before} → peak {q.fds_peak} → {q.fds_drained}",
        ])  # fmt: skip
        verdict(
            f"queue, round {round_number}: {o.sent:,} queued predictions all complete, lost = 0",
            f"{q.queued:,} queued at once (created at {o.sent / q.submit_seconds:,.0f}/s: "
            f"{q.created_per_s_first:,.0f}/s in the first tenth, {q.created_per_s_last:,.0f}/s "
            f"in the last), {o.succeeded:,}/{len(o.accepted):,} succeeded (drained in "
            f"{q.drain_seconds:.1f} s), lost {o.lost}, refused {refusals(o)}",
            q.queued >= o.sent and o.lost == 0 and not o.non2xx and not o.errors,
        )
        verdict(
            f"queue, round {round_number}: gateway RSS per queued prediction ≤ "
            f"{QUEUED_BYTES_BOUND // 1024} KiB",
            f"{q.rss_per_queued / 1024:.1f} KiB ({mib(q.rss_peak - q.rss_before)} MiB for "
            f"{q.queued:,}); drained: {mib(q.rss_drained - q.rss_before)} MiB above the start",
            q.rss_per_queued <= QUEUED_BYTES_BOUND,
        )
        verdict(
            f"queue, round {round_number}: beyond queue_limit, predictions are refused (429)",
            f"{q.overflow_429}/{OVERFLOW} refused with 429",
            q.overflow_429 == OVERFLOW,
        )
    if soak_result is not None:
        s, o = soak_result, soak_result.outcomes
        rows.append([
            f"soak: {s.rate:g}/s for {s.seconds:.0f} s, half Prefer: wait, half async",
            f"{o.sent:,}", "",
            f"{o.succeeded:,}", str(o.lost), refusals(o), f"{o.percentile_ms(0.5):.1f} ms",
            f"{o.percentile_ms(0.99):.1f} ms", "",
            f"{s.rss_mib(True):.1f} → {s.rss_mib(False):.1f} "
            f"({s.rss_slope_mib_per_min:+.2f}/min)",
            f"{s.fds(True)} → {s.fds(False)} ({s.fds_slope_per_min:+.2f}/min)",
        ])  # fmt: skip
        verdict(
            "soak: every prediction succeeds, lost = 0",
            f"{o.succeeded:,}/{o.sent:,} succeeded, lost {o.lost}, refused {refusals(o)}",
            o.succeeded == o.sent and o.lost == 0,
        )
        verdict(
            f"soak: no memory growth (RSS slope ≤ {SOAK_RSS_SLOPE_BOUND:g} MiB/min)",
            f"{s.rss_slope_mib_per_min:+.3f} MiB/min; first {s.window:.0f} s "
            f"{s.rss_mib(True):.1f} MiB, last {s.rss_mib(False):.1f} MiB",
            s.rss_slope_mib_per_min <= SOAK_RSS_SLOPE_BOUND,
        )
        verdict(
            "soak: no file-descriptor growth (the server's own fds, client connections aside: "
            f"the last window's most, and the fitted line's gain, ≤ {SOAK_FDS_SLACK} over the "
            "first window's)",
            f"{s.fds(True)} → {s.fds(False)}, slope {s.fds_slope_per_min:+.2f}/min "
            f"({s.fds_growth:+.1f} over the soak)",
            s.fds(False) <= s.fds(True) + SOAK_FDS_SLACK and s.fds_growth <= SOAK_FDS_SLACK,
        )
        verdict(
            "soak: no latency growth (p99 of the last window ≤ 1.5 times the first's + 5 ms)",
            f"p99 first {s.window:.0f} s {s.p99_ms(True):.1f} ms, last {s.p99_ms(False):.1f} ms",
            s.p99_ms(False) <= 1.5 * s.p99_ms(True) + 5,
        )
    return rows, verdicts


# Targets. A queued prediction is its input, its state and a few references: a few KiB. A
# leak of 1 KiB per request at 20/s is 1.2 MiB/min: the slope bound catches it.
QUEUED_BYTES_BOUND = 16 * 1024
SOAK_RSS_SLOPE_BOUND = 0.5
# A second replica started or stopped moves the server's own fds by its socket and pipe.
SOAK_FDS_SLACK = 2


def main() -> int:
    defaults = Plan()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--concurrent", type=int, default=defaults.concurrent, help="burst at zero (0: skip)")
    add("--queued", type=int, default=defaults.queued, help="queue depth (0: skip)")
    add("--queue-rounds", type=int, default=defaults.queue_rounds, help="times the queue fills")
    add("--soak", type=float, default=defaults.soak, help="soak seconds (0: skip)")
    add("--rate", type=float, default=defaults.rate, help="soak predictions per second")
    add("--warmup", type=float, default=defaults.warmup, help="soak seconds not measured")
    add("--sample-every", type=float, default=defaults.sample_every, help="soak sampling seconds")
    add("--max-instances", type=int, default=defaults.max_instances, help="burst's max replicas")
    add("--clients", type=int, default=defaults.clients, help="connections creating the queue")
    add("--markdown", action="store_true", help="also print markdown tables")
    add("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if min(args.concurrent, args.queued, args.soak, args.warmup) < 0:
        parser.error("--concurrent, --queued, --soak and --warmup must be ≥ 0")
    if min(args.rate, args.clients, args.queue_rounds, args.sample_every, args.max_instances) <= 0:
        parser.error("--rate, --clients, --queue-rounds, --sample-every, --max-instances > 0")
    plan = Plan(**{k: v for k, v in vars(args).items() if k not in ("markdown", "json")})
    signal.signal(signal.SIGTERM, interrupted)
    console = Console(width=None if sys.stdout.isatty() else 200)
    limit = raise_fd_limit(2 * plan.concurrent + 1024)
    began = time.monotonic()
    meter = NoiseMeter()

    with tempfile.TemporaryDirectory(prefix="ember-load-") as tmp:
        servers: list[LoadServer] = []
        with interruptible(console, lambda stopped: close_all(servers)) as run:
            console.print(f"starting ember serve (SQLite in {tmp}); fd limit {limit}")
            servers.append(LoadServer(Path(tmp)))
            results = run_phases(servers[0], plan, console.print)
        if run.stopped:
            return 130

    rows, verdicts = rows_and_verdicts(results.burst, results.queues, results.soak)
    table = Table(title="ember serve under load (SQLite, one gateway process)")
    for header in HEADERS_ROW:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if results.soak is not None:
        console.print(soak_timeline(results.soak))
    print_verdicts(console, verdicts)
    finish_report(
        console, args, meter.finish(), time.monotonic() - began, HEADERS_ROW, rows, verdicts,
        results.summary(),
    )  # fmt: skip
    return 0 if all(v == "PASS" for _, _, v in verdicts) else 1


def soak_timeline(result: SoakResult, points: int = 10) -> Table:
    """The soak's samples, thinned to about `points` rows: RSS, fds and the p99 of the
    predictions finished since the previous row."""
    table = Table(title="soak, sampled")
    headers = ("at", "server RSS (MiB)", "server fds: own + clients'", "p99 since the row before")
    for header in headers:
        table.add_column(header)
    step = max(1, len(result.samples) // points)
    previous = 0.0
    picked = result.samples[::step]
    if picked and picked[-1] is not result.samples[-1]:
        picked.append(result.samples[-1])
    for sample in picked:
        window = sorted(lat for at, lat in result.done if previous <= at < sample.at)
        p99 = f"{percentile(window, 0.99) * 1e3:.1f} ms" if window else ""
        fds = f"{sample.own_fds} + {sample.connections}"
        table.add_row(f"{sample.at:.0f} s", mib(sample.rss), fds, p99)
        previous = sample.at
    return table


if __name__ == "__main__":
    sys.exit(main())
