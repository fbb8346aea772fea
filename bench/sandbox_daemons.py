"""Nothing left behind: N scale-to-zero cycles of a model that daemonizes a helper in setup()
and in every predict() (tests/models/hostile/daemon: a double fork into a new session, the
grandchild a `sleep 987654.<digits>`), then a count of its daemons still alive on this machine.

Each cycle starts a replica (alternately forked from a warm host and spawned cold), runs one
prediction, and stops it, as a deployment scaled to zero does. Sandboxed, every cycle must
leave none; unsandboxed (`--no-sandbox`, for comparison) every cycle leaks two.

    .venv/bin/python bench/sandbox_daemons.py            # 100 cycles, sandboxed
    .venv/bin/python bench/sandbox_daemons.py --cycles 20 --no-sandbox
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ember.packages.loader import read_package  # noqa: E402
from ember.runtime.base import PredictionRequest, Tier  # noqa: E402
from ember.runtime.local import LocalRuntime  # noqa: E402

DAEMON = ROOT / "tests" / "models" / "hostile" / "daemon"
MARKER = "987654."


def daemons() -> list[int]:
    """Pids of the daemon model's sleeps on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            words = (entry / "cmdline").read_bytes().split(b"\0")
            if len(words) > 1 and words[1].startswith(MARKER.encode()):
                found.append(int(entry.name))
    return found


async def cycles(count: int, sandbox: bool, data_dir: Path) -> float:
    runtime = LocalRuntime(data_dir, sandbox=sandbox)
    spec = read_package(DAEMON).model_copy(update={"setup_in_host": False})
    try:
        await runtime.keep_ready([(spec, Tier.WARM_HOST)])
        began = time.perf_counter()
        for index in range(count):
            tier = Tier.WARM_HOST if index % 2 == 0 else Tier.COLD
            replica = await runtime.start_replica(spec, tier)
            await replica.wait_started()
            handle = replica.submit(PredictionRequest(id=f"p{index}", input={}))
            result = await handle.result()
            if result.status != "succeeded":
                raise RuntimeError(f"cycle {index}: {result.error}")
            await replica.stop()
            print(f"\rcycle {index + 1}/{count}", end="", flush=True)
        print()
        return time.perf_counter() - began
    finally:
        await runtime.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--no-sandbox", action="store_true", help="compare: replicas unsandboxed")
    args = parser.parse_args()
    before = set(daemons())
    with tempfile.TemporaryDirectory(prefix="ember-daemons-") as folder:
        seconds = asyncio.run(cycles(args.cycles, not args.no_sandbox, Path(folder)))
    leaked = [pid for pid in daemons() if pid not in before]
    mode = "unsandboxed" if args.no_sandbox else "sandboxed"
    print(
        f"{args.cycles} scale-to-zero cycles ({mode}) in {seconds:.1f} s: "
        f"{len(leaked)} daemons of the model still running"
    )
    for pid in leaked:  # leave the machine as we found it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return 0 if args.no_sandbox or not leaked else 1


if __name__ == "__main__":
    sys.exit(main())
