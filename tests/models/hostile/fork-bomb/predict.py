"""A fork bomb, bounded so that a missing sandbox cannot take the machine down: forks as fast
as it can until `max_forks` children or `seconds` have passed, each child sleeping until then;
it keeps trying while forks fail, holds its children to the end, then ends them and reports
how many forks succeeded and the error of the first that did not.

Why it must fail: a replica's processes and threads are counted by its pids cgroup, so forks
fail with BlockingIOError (EAGAIN) at the replica's limit (hundreds, well under `max_forks`)
while the machine, the server and other replicas can still start processes. `bomb=false` is
a normal prediction.
"""

import contextlib
import json
import os
import signal
import time


def predict(bomb: bool = True, seconds: float = 5.0, max_forks: int = 2000) -> str:
    if not bomb:
        return json.dumps({"forked": 0})
    deadline = time.monotonic() + seconds
    children: list[int] = []
    refused = 0
    first_error: OSError | None = None
    while len(children) < max_forks and time.monotonic() < deadline:
        try:
            pid = os.fork()
        except OSError as exc:
            refused += 1
            first_error = first_error or exc
            time.sleep(0.01)  # keep pressing on the limit without spinning a core
            continue
        if pid == 0:  # a child: no forking of its own, so a broken sandbox stays bounded
            try:
                time.sleep(max(0.0, deadline - time.monotonic()))
            finally:
                os._exit(0)
        children.append(pid)
    time.sleep(max(0.0, deadline - time.monotonic()))  # the limit held while the test looks
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return json.dumps(
        {
            "forked": len(children),
            "refused": refused,
            "error": type(first_error).__name__ if first_error else None,
            "errno": first_error.errno if first_error else None,
        }
    )
