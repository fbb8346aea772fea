"""What every benchmark here needs: percentiles, stopping what it started, measuring how much
of the machine other processes took during a run (the machines are shared and noisy), and a
JSON report with the machine and arguments beside the results."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import time
from collections.abc import Sequence
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
