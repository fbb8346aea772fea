"""What every benchmark here needs: percentiles, stopping what it started (everything, on
Ctrl-C or SIGTERM too), measuring how much of the machine other processes took during a run
(the machines are shared and noisy), verdict lines and markdown tables, and a JSON report
with the machine and arguments beside the results."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of an ascending sequence; 0 when it is empty."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate, then kill if it does not exit within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def close_all(things: Iterable[Any]) -> None:
    """`close()` each, whatever one raises (Ctrl-C included): a run's last cleanup."""
    for thing in things:
        with contextlib.suppress(BaseException):
            thing.close()


def interrupted(signum: int, frame: Any) -> None:
    """A signal handler: SIGTERM like Ctrl-C, to unwind through the `finally` that stops
    every process the run started."""
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class Run:
    stopped: bool = False  # by Ctrl-C or SIGTERM


@contextlib.contextmanager
def interruptible(console: Any, cleanup: Callable[[bool], None]) -> Iterator[Run]:
    """A run's body: Ctrl-C (and SIGTERM, with `interrupted` as its handler) ends it early,
    saying so, with `stopped` set; then `cleanup(stopped)` runs, whatever ended it."""
    run = Run()
    try:
        yield run
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping everything[/]")
        run.stopped = True
    finally:
        cleanup(run.stopped)


def _cpu_snapshot() -> tuple[float, float]:
    """(CPU seconds the whole machine has used, CPU seconds this process and its reaped
    children have used): the difference over a run is what other processes took."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy / CLK_TCK, own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class NoiseMeter:
    """How many cores other processes used, on average, between creation and `finish()`."""

    def __init__(self) -> None:
        self._start = _cpu_snapshot()
        self._wall = time.monotonic()

    def finish(self) -> dict[str, Any]:
        (machine, mine), wall = _cpu_snapshot(), time.monotonic() - self._wall
        others = max(0.0, (machine - self._start[0]) - (mine - self._start[1])) / wall
        return {
            "wall_s": round(wall, 1),
            "cores": os.cpu_count(),
            "other_processes_cores": round(others, 2),
            "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
        }

    @staticmethod
    def describe(noise: dict[str, Any]) -> str:
        return (
            f"Noise: other processes used {noise['other_processes_cores']:.2f} of "
            f"{noise['cores']} cores on average during this {noise['wall_s']:.0f} s run "
            f"(load average {noise['loadavg_1min_at_end']})"
        )


def print_verdicts(console: Any, verdicts: Sequence[tuple[str, str, str]]) -> None:
    """(target, measured, PASS/FAIL/n/a) lines, the verdict coloured."""
    for target, measured, verdict in verdicts:
        colour = {"PASS": "green", "FAIL": "red"}.get(verdict, "yellow")
        console.print(f"[bold {colour}]{verdict}[/] {target}: {measured}")


def print_markdown(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    verdicts: Sequence[tuple[str, str, str]],
) -> None:
    """The results table, then the verdicts, as markdown tables on stdout."""
    print()
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    print()
    print("| target | measured | verdict |")
    print("|---|---|---|")
    for target, measured, verdict in verdicts:
        print(f"| {target} | {measured} | **{verdict}** |")


def write_report(path: Path, args: argparse.Namespace, **results: Any) -> None:
    """The results as JSON, with the date, the machine and the arguments that produced them."""
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        **results,
    }
    path.write_text(json.dumps(report, indent=2))


def finish_report(
    console: Any,
    args: argparse.Namespace,
    noise: dict[str, Any],
    seconds: float,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    verdicts: Sequence[tuple[str, str, str]],
    results: dict[str, Any],
) -> None:
    """A report's last lines: the noise; the table and the verdicts as markdown with
    --markdown; with --json, the JSON report: `results`, then the verdicts as `targets`."""
    console.print(NoiseMeter.describe(noise) + f"; benchmark {seconds:.0f} s.")
    if args.markdown:
        print_markdown(headers, rows, verdicts)
    if args.json:
        targets = [{"target": t, "measured": m, "verdict": v} for t, m, v in verdicts]
        write_report(args.json, args, noise=noise, **results, targets=targets)
        console.print(f"wrote {args.json}")
