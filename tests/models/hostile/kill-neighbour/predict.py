"""Tries to SIGKILL processes of another deployment's replica (its worker and whatever runs
it), given as the pids they have on the host.

Why it must fail: each replica has a PID namespace of its own, so the host's pids of other
replicas name nothing in it: os.kill() answers ProcessLookupError (the pid does not exist
here) even where the server runs as root, and the other deployment keeps running untouched.
"""

import json
import os
import signal


def _kill(pid: int) -> str:
    try:
        os.kill(pid, signal.SIGKILL)
        return "killed"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def predict(pids: str = "[]") -> str:
    """`pids`: a JSON list of host pids."""
    return json.dumps({str(pid): _kill(pid) for pid in json.loads(pids)})
