"""What does the replica sandbox (bubblewrap + cgroups) cost: a replica's start and a
prediction, sandboxed and not, on this machine, in one run?

Two measuring processes, one per mode, each this script run with `--child`, each with its own
`LocalRuntime` (bench/models/trivial, `predict(text) -> text.upper()`: everything measured is
platform), its own data dir and a warm host kept ready (`keep_ready(WARM_HOST)`):

  unsandboxed   LocalRuntime(sandbox=False), EMBER_SANDBOX=off in the process's environment
  sandboxed     LocalRuntime(sandbox=True), EMBER_SANDBOX unset (the default: on)

The mode is said both ways: to the runtime, and in the whole process's environment, so that
wherever else Ember reads the variable it sees the same. Each process times itself, so no
cross-process hop is in any figure:

  warm-host start   start_replica(WARM_HOST) → wait_started() READY, forked from the ready
                    warm host (checked: the replica says it was forked), then stopped untimed
  cold start        start_replica(COLD) → wait_started() READY, a spawned replica (checked),
                    then stopped untimed
  round trip        one replica kept READY (forked from the warm host) for the whole run;
                    per repetition, `--warmup` untimed then `--calls` timed sequential
                    predictions, submit() → result(): that repetition's median

Each of `--repeat` repetitions takes one sample of each metric in each mode, the modes
alternated per metric (off then on, then on then off in the next repetition), so a burst of
noise from another process hits both modes alike. One untimed warm-host and cold start per
mode go first (imports, page cache). Reported: the median over repetitions in each mode, the
delta (sandboxed minus unsandboxed) and the ratio, against the issue's bounds: warm-host start
+10 ms, cold start +50 ms, round trip +0.1 ms.

Whether each mode's replicas were isolated is checked, not assumed: for every timed replica
the namespaces (/proc/<pid>/ns) and cgroup of its process tree are compared with the measuring
process's own. The sandboxed mode must show isolation and the unsandboxed mode none, else the
verdicts are n/a (the sandbox was not active, or could not be turned off).

    python bench/sandbox_overhead.py [--repeat 30] [--calls 500] [--warmup 30]
                                     [--markdown] [--json out.json]

Each mode's data dir is ~/.cache/ember-bench/sandbox_overhead/<off|on>, emptied at start; the
children's logs are kept in ~/.cache/ember-bench/last-run-logs/sandbox_overhead. Every process
started is stopped: the children close their runtimes, then their whole process groups are
stopped, then anything still mentioning the data dirs (a sandbox may start a new session) is
killed; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import (
    NoiseMeter,
    close_all,
    finish_report,
    interrupted,
    interruptible,
    percentile,
    print_verdicts,
)
from harness import (
    CACHE,
    HERE,
    ROOT,
    keep_logs,
    kill_mentioning,
    launch,
    pinned_env,
    process_tree,
    stop_group,
)
from rich.console import Console
from rich.markup import escape
from rich.table import Table

MODEL = HERE / "models" / "trivial"
# Each mode's data dir: the same across runs, as for `ember serve` in coldstart.py (the
# runtime names its cgroups after it; a later run finds and ends what an interrupted one left).
DATA = CACHE / "sandbox_overhead"
TEXT = "hello"
EXPECTED = TEXT.upper()
SANDBOX_ENV = "EMBER_SANDBOX"
MODES = ("off", "on")  # unsandboxed, sandboxed
MODE_LABELS = {"off": "unsandboxed", "on": "sandboxed"}
START_TIMEOUT_S = 60.0  # one replica start, one warm host, one reply from a child
SETUP_TIMEOUT_S = 300.0  # a child's runtime, warm host and first replica
NAMESPACES = ("mnt", "pid", "net", "user", "ipc", "uts", "cgroup")

# metric → (label, the bound on the delta, in ms)
METRICS: dict[str, tuple[str, float]] = {
    "warm": ("warm-host start → READY", 10.0),
    "cold": ("cold start → READY", 50.0),
    "roundtrip": ("prediction round trip", 0.1),
}
now_ns = time.perf_counter_ns


# -- isolation ----------------------------------------------------------------------------


def _identity(pid: int) -> dict[str, str] | None:
    """A process's namespaces and cgroup, None when it is gone or unreadable."""
    found: dict[str, str] = {}
    try:
        for name in NAMESPACES:
            with contextlib.suppress(FileNotFoundError):
                found[name] = os.readlink(f"/proc/{pid}/ns/{name}")
        found["cgroup"] = Path(f"/proc/{pid}/cgroup").read_text().strip()
    except OSError:
        return None
    return found


def isolation(pid: int | None) -> list[str]:
    """What separates `pid` or one of its descendants from this process: the namespaces it
    does not share, and "cgroup" when it is in another cgroup. Empty: not isolated."""
    if pid is None:
        return []
    own = _identity(os.getpid()) or {}
    differs: set[str] = set()
    for member in process_tree(pid):
        theirs = _identity(member)
        if theirs is None:
            continue
        for name, value in theirs.items():
            if name == "cgroup" and value != own.get("cgroup"):
                differs.add("cgroup")
            elif name != "cgroup" and value != own.get(name):
                differs.add(f"{name} ns")
    return sorted(differs)


# -- the measuring child (one per mode) ---------------------------------------------------


class Measurer:
    """One mode's LocalRuntime, its warm host and a replica kept for the round trips, driven
    from one asyncio loop; `handle(command)` answers one command of the parent's."""

    def __init__(self, data_dir: Path, sandbox: bool) -> None:
        # Imported here: the parent never imports Ember's runtime (nor builds one).
        from ember.packages.loader import read_package
        from ember.runtime.base import PredictionRequest, ReplicaState, Tier
        from ember.runtime.local import LocalRuntime

        self.Tier, self.ReplicaState, self.Request = Tier, ReplicaState, PredictionRequest
        self.spec = read_package(MODEL)
        self.runtime = LocalRuntime(data_dir, sandbox=sandbox)
        self.kept: Any = None
        self.counter = 0

    async def setup(self) -> dict[str, Any]:
        await self.runtime.keep_ready([(self.spec, self.Tier.WARM_HOST)])
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while True:
            status = self.runtime.readiness(self.spec)
            if status.ready:
                break
            if (status.detail or "").startswith("warm host failed") or (
                time.monotonic() > deadline
            ):
                raise RuntimeError(f"warm host not ready: {status.detail}")
            await asyncio.sleep(0.025)
        self.kept, _ = await self.start(self.Tier.WARM_HOST)
        await self.predict_once(self.kept)
        return {"isolation": isolation(self.kept.pid)}

    async def start(self, tier: Any) -> tuple[Any, int]:
        """A READY replica started at `tier` (checked to have started that way), and the ns
        from start_replica() to READY."""
        t0 = now_ns()
        replica = await self.runtime.start_replica(self.spec, tier)
        try:
            state = await asyncio.wait_for(replica.wait_started(), START_TIMEOUT_S)
            elapsed = now_ns() - t0
            if state != self.ReplicaState.READY:
                raise RuntimeError(f"replica did not start: {replica.setup_error}")
            if replica.tier != tier:
                raise RuntimeError(f"asked for a {tier} start, the replica started {replica.tier}")
        except BaseException:
            await self.stop(replica)
            raise
        return replica, elapsed

    async def stop(self, replica: Any) -> None:
        try:
            await asyncio.wait_for(replica.stop(drain=True, timeout=10), 20)
        except TimeoutError:
            replica.kill("benchmark stopping")
            await asyncio.wait_for(replica.wait_stopped(), 10)

    async def timed_start(self, tier: Any) -> dict[str, Any]:
        replica, elapsed = await self.start(tier)
        try:
            return {
                "ms": elapsed / 1e6,
                "phases_ms": {k: v * 1e3 for k, v in replica.start_phases().items()},
                "isolation": isolation(replica.pid),
            }
        finally:
            await self.stop(replica)

    async def predict_once(self, replica: Any) -> int:
        self.counter += 1
        t0 = now_ns()
        handle = replica.submit(self.Request(id=f"b{self.counter}", input={"text": TEXT}))
        result = await handle.result()
        elapsed = now_ns() - t0
        if result.status != "succeeded" or result.output != EXPECTED:
            raise RuntimeError(f"prediction failed: {result.status} {result.error}")
        return elapsed

    async def round_trips(self, calls: int, warmup: int) -> dict[str, Any]:
        for _ in range(warmup):
            await self.predict_once(self.kept)
        samples = sorted([await self.predict_once(self.kept) for _ in range(calls)])
        return {
            "ms": statistics.median(samples) / 1e6,
            "p99_ms": percentile(samples, 0.99) / 1e6,
        }

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "setup":
            return await self.setup()
        if op == "warm":
            return await self.timed_start(self.Tier.WARM_HOST)
        if op == "cold":
            return await self.timed_start(self.Tier.COLD)
        if op == "roundtrip":
            return await self.round_trips(command["calls"], command["warmup"])
        raise ValueError(f"unknown command {op!r}")

    async def close(self) -> None:
        if self.kept is not None:
            with contextlib.suppress(Exception):
                await self.stop(self.kept)
        await asyncio.wait_for(self.runtime.close(), 30)


def child_main(fd: int, data_dir: Path, mode: str) -> int:
    """Answer the parent's commands (one JSON line each, on the inherited socket) until it
    closes the socket or says quit. Read from the asyncio loop, so that between commands the
    replicas' heartbeats are still heard."""

    async def serve() -> None:
        reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))

        async def reply(message: dict[str, Any]) -> None:
            writer.write(json.dumps(message).encode() + b"\n")
            await writer.drain()

        measurer: Measurer | None = None
        try:
            measurer = Measurer(data_dir, sandbox=mode == "on")
            while line := await reader.readline():
                command = json.loads(line)
                if command["op"] == "quit":
                    break
                try:
                    await reply({"ok": True, **(await measurer.handle(command))})
                except Exception as exc:
                    await reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        except Exception as exc:
            await reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            if measurer is not None:
                await measurer.close()
            writer.close()

    asyncio.run(serve())
    return 0


# -- the parent ---------------------------------------------------------------------------


class Mode:
    """One measuring child: this script with --child, its environment saying the mode."""

    def __init__(self, mode: str, tmp: Path, threads: int) -> None:
        data_dir = DATA / mode
        shutil.rmtree(data_dir, ignore_errors=True)  # the last run's outputs and scratch
        self.mode = mode
        env = pinned_env(threads)
        if mode == "off":
            env[SANDBOX_ENV] = "off"
        else:
            env.pop(SANDBOX_ENV, None)  # the default: on
        self.log = tmp / "logs" / f"{mode}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.sock, child = socket.socketpair()
        self.sock.settimeout(START_TIMEOUT_S)
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(child.fileno()),
                   "--data-dir", str(data_dir), "--mode", mode]  # fmt: skip
        self.proc = launch(command, env=env, cwd=ROOT, log=self.log, pass_fds=(child.fileno(),))
        child.close()
        self.lines = self.sock.makefile("rb")

    def ask(self, timeout: float = START_TIMEOUT_S, **command: Any) -> dict[str, Any]:
        self.sock.settimeout(timeout)
        self.sock.sendall(json.dumps(command).encode() + b"\n")
        try:
            line = self.lines.readline()
        except TimeoutError:
            raise RuntimeError(
                f"{MODE_LABELS[self.mode]}: no answer to {command['op']} in {timeout:.0f} s"
            ) from None
        if not line:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-8:]
            raise RuntimeError(f"{MODE_LABELS[self.mode]}: the child exited: " + "\n".join(tail))
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise RuntimeError(f"{MODE_LABELS[self.mode]}, {command['op']}: {answer['error']}")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.settimeout(5)
            self.sock.sendall(b'{"op": "quit"}\n')
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=40)  # it closes its runtime: replicas, warm host
        self.lines.close()
        self.sock.close()
        stop_group(self.proc)


def fmt_ms(ms: float) -> str:
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def fmt_delta(ms: float) -> str:
    return f"{ms:+.3f}" if abs(ms) < 1 else f"{ms:+.1f}"


def summarize(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for metric, (label, bound) in METRICS.items():
        off, on = samples[metric]["off"], samples[metric]["on"]
        median_off, median_on = statistics.median(off), statistics.median(on)
        summary[metric] = {
            "label": label,
            "bound_ms": bound,
            "off_median_ms": median_off,
            "on_median_ms": median_on,
            "delta_ms": median_on - median_off,
            "ratio": median_on / median_off,
            "off_ms": off,
            "on_ms": on,
        }
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeat", type=int, default=30, help="samples of each metric in each mode (30)"
    )
    parser.add_argument(
        "--calls", type=int, default=500, help="timed predictions per round-trip sample (500)"
    )
    parser.add_argument(
        "--warmup", type=int, default=30, help="untimed predictions before each sample (30)"
    )
    parser.add_argument("--threads", type=int, default=1, help="math-library threads (1)")
    parser.add_argument("--markdown", action="store_true", help="also print markdown tables")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child_main(args.child, args.data_dir, args.mode)
    if args.repeat < 1 or args.calls < 1 or args.warmup < 0:
        parser.error("--repeat and --calls must be ≥ 1, --warmup ≥ 0")

    signal.signal(signal.SIGTERM, interrupted)
    console = Console(width=None if sys.stdout.isatty() else 150)
    tmp = Path(tempfile.mkdtemp(prefix="ember-bench-sandbox-"))
    modes: dict[str, Mode] = {}
    samples: dict[str, dict[str, list[float]]] = {m: {"off": [], "on": []} for m in METRICS}
    seen: dict[str, set[str]] = {"off": set(), "on": set()}  # isolation of every replica
    phases: dict[str, dict[str, list[dict[str, float]]]] = {
        m: {"off": [], "on": []} for m in ("warm", "cold")
    }
    began = time.monotonic()

    def cleanup(stopped: bool) -> None:
        close_all(modes.values())
        kill_mentioning(str(DATA))  # a sandboxed process that left its process group
        keep_logs(tmp, "sandbox_overhead")

    try:
        with interruptible(console, cleanup) as run:
            console.print("starting one runtime per mode (a warm host and a replica each) …")
            for mode in MODES:
                modes[mode] = Mode(mode, tmp, args.threads)
            for mode in MODES:
                seen[mode].update(modes[mode].ask(timeout=SETUP_TIMEOUT_S, op="setup")["isolation"])
                for op in ("warm", "cold"):  # untimed: imports, page cache
                    seen[mode].update(modes[mode].ask(op=op)["isolation"])
            noise = NoiseMeter()
            per_metric = {"roundtrip": {"calls": args.calls, "warmup": args.warmup}}
            for rep in range(args.repeat):
                order = MODES if rep % 2 == 0 else MODES[::-1]
                for metric in METRICS:
                    for mode in order:
                        answer = modes[mode].ask(op=metric, **per_metric.get(metric, {}))
                        if metric in phases:
                            phases[metric][mode].append(answer["phases_ms"])
                            seen[mode].update(answer["isolation"])
                        samples[metric][mode].append(answer["ms"])
                console.print(f"repetition {rep + 1}/{args.repeat} done")
            noise_report = noise.finish()
    except RuntimeError as exc:  # a mode that would not start or measure (cleaned up)
        console.print(f"[bold red]could not measure[/]: {escape(str(exc))}")
        return 1
    if run.stopped:
        return 1

    summary = summarize(samples)
    active = bool(seen["on"]) and not seen["off"]
    isolation_line = (
        f"isolation seen: unsandboxed {', '.join(sorted(seen['off'])) or 'none'}; "
        f"sandboxed {', '.join(sorted(seen['on'])) or 'none'}"
    )
    table = Table(
        title=f"Ember replica sandbox overhead — trivial predictor, medians of {args.repeat} "
        f"alternated samples per mode",
        caption=f"round trip: each sample the median of {args.calls} sequential predictions; "
        + isolation_line,
    )
    headers = ["metric", "unsandboxed", "sandboxed", "delta (ms)", "ratio", "bound", "verdict"]
    for header in headers:
        table.add_column(header, justify="left" if header == "metric" else "right")
    rows, verdicts = [], []
    for s in summary.values():
        bound = f"≤ +{s['bound_ms']:g} ms"
        passed = s["delta_ms"] <= s["bound_ms"]
        verdict = ("PASS" if passed else "FAIL") if active else "n/a"
        row = [s["label"], fmt_ms(s["off_median_ms"]), fmt_ms(s["on_median_ms"]),
               fmt_delta(s["delta_ms"]), f"{s['ratio']:.2f}x", bound, verdict]  # fmt: skip
        rows.append(row)
        colour = {"PASS": "green", "FAIL": "red"}.get(verdict, "yellow")
        table.add_row(*row[:-1], f"[{colour}]{verdict}[/]")
        verdicts.append(
            (
                f"the sandbox adds {bound} to a {s['label']}",
                f"{fmt_delta(s['delta_ms'])} ms ({fmt_ms(s['on_median_ms'])} vs "
                f"{fmt_ms(s['off_median_ms'])})",
                verdict,
            )
        )
    console.print(table)
    if not active:
        console.print(
            "[yellow]The two modes were not told apart[/] ("
            + isolation_line
            + "): the sandbox was not active when on, or stayed on when off; no verdict."
        )
    print_verdicts(console, verdicts)
    finish_report(
        console, args, noise_report, time.monotonic() - began, headers, rows, verdicts,
        {"sandbox_active": active, "isolation": {m: sorted(v) for m, v in seen.items()},
         "results": summary, "start_phases_ms": phases},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
