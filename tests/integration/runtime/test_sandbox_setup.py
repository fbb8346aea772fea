"""The sandbox's life around the server's: a server whose sandbox cannot be set up says so and
stops (unless told --no-sandbox), and a server's start ends what a crashed predecessor of the
same data directory left in its cgroups."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ember.runtime.sandbox import Sandboxing
from ember.runtime.sandbox.cgroups import Limits
from tests.support.processes import alive, wait_gone


def test_a_crashed_servers_strays_are_ended_by_the_next_server(tmp_path: Path) -> None:
    first = Sandboxing(tmp_path, enabled=True)
    # What a server that died without cleaning up leaves: its groups (named after a pid and
    # start time no running process has) with a process still in one of them.
    gone = first.root.subtree("999999999-1")
    stray_group = gone.group("r-stray")
    stray_group.create(Limits(memory=2**28, cpu=1.0))
    stray = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        stray_group.add(stray.pid)
        second = Sandboxing(tmp_path, enabled=True)
        assert second.strays_ended == 1
        stray.wait(timeout=10)
        assert wait_gone([stray.pid]) == []
        assert stray_group.pids() == [] and not stray_group.folders["pids"].exists()
        # A running server's groups (the first one's) are not strays.
        assert first.tree.bases["pids"].exists()
    finally:
        if alive(stray.pid):
            stray.kill()
        first.close()


def test_serve_stops_and_says_what_is_missing_without_bubblewrap(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "nothing-here"), "EMBER_HOME": str(tmp_path)}
    env.pop("EMBER_SANDBOX", None)
    ember = [sys.executable, "-m", "ember", "serve", "--port", "1", "--data-dir", str(tmp_path)]
    refused = subprocess.run(ember, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1, refused.stderr
    message = " ".join(refused.stderr.split())
    assert "bubblewrap (bwrap) is not installed" in message, message
    assert "apt-get install bubblewrap" in message and "--no-sandbox" in message, message
