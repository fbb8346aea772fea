"""The sandbox's pure parts: what bubblewrap is told to show a replica, which of the server's
variables a replica keeps, how a memory limit reads, and where the egress proxy sends a
request."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.egress import SANDBOX_PROXY_SOCKET
from ember.runtime.sandbox.confinement import format_bytes, sandbox_wanted
from ember.runtime.sandbox.egress_proxy import _destination, _Refused
from ember.runtime.sandbox.layout import Layout, bwrap_arguments, confined_environment

SCRATCH = Path("/data/scratch/r-1")


def binds(args: list[str], kind: str) -> list[tuple[str, str]]:
    return [(args[i + 1], args[i + 2]) for i, arg in enumerate(args) if arg == kind]


def test_a_replica_sees_its_own_folders_and_nothing_else_of_the_data_directory() -> None:
    layout = Layout(read_only=(Path("/data/packages/abc"), Path("/envs/e1")), scratch=SCRATCH)
    args = bwrap_arguments(layout)
    assert ("/data/packages/abc", "/data/packages/abc") in binds(args, "--ro-bind")
    writable = binds(args, "--bind")
    assert (str(SCRATCH), "/tmp") in writable and (str(SCRATCH), str(SCRATCH)) in writable
    # /tmp is mounted before what lies below it could be hidden by it.
    assert args.index("/tmp") < args.index("/data/packages/abc")
    everything = " ".join(args)
    assert "/data " not in everything and "secret.key" not in everything
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-net", "--die-with-parent"):
        assert flag in args
    assert args[args.index("--cap-drop") + 1] == "ALL"


def test_etc_is_only_what_programs_need() -> None:
    targets = [target for _, target in binds(bwrap_arguments(Layout((), SCRATCH)), "--ro-bind-try")]
    assert "/etc/resolv.conf" in targets and "/etc/ssl" in targets
    assert not {"/etc/shadow", "/etc/postgresql", "/etc"} & set(targets)


def test_gpu_devices_only_for_the_assigned_gpus() -> None:
    assert "/dev/nvidiactl" not in bwrap_arguments(Layout((), SCRATCH))
    args = bwrap_arguments(Layout((), SCRATCH, gpus=("1",)))
    devices = [source for source, _ in binds(args, "--dev-bind-try")]
    assert "/dev/nvidia1" in devices and "/dev/nvidia0" not in devices


def test_the_egress_socket_is_bound_where_the_relay_looks() -> None:
    socket = Path("/tmp/ember-egress-x/egress.sock")
    args = bwrap_arguments(Layout((), SCRATCH, egress_socket=socket))
    assert (str(socket), SANDBOX_PROXY_SOCKET) in binds(args, "--bind")


def test_a_replica_keeps_none_of_the_servers_secrets() -> None:
    server = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "EMBER_ADMIN_TOKEN": "r8_admin",
        "EMBER_DATABASE_URL": "postgresql://u:p@127.0.0.1/ember",
        "AWS_SECRET_ACCESS_KEY": "k",
        "HF_HUB_OFFLINE": "1",
        "COG_SETUP_TIMEOUT": "5",
        "EMBER_EGRESS_ALLOW": "127.0.0.1:8000",
    }
    socket = Path("/tmp/ember-egress-x/egress.sock")
    kept = confined_environment(server, Layout((), SCRATCH, egress_socket=socket))
    assert "EMBER_ADMIN_TOKEN" not in kept and "AWS_SECRET_ACCESS_KEY" not in kept
    assert "EMBER_DATABASE_URL" not in kept
    assert kept["HF_HUB_OFFLINE"] == "1" and kept["COG_SETUP_TIMEOUT"] == "5"
    assert kept["EMBER_EGRESS_ALLOW"] == "127.0.0.1:8000"
    assert kept["HOME"] == "/tmp" and kept["TMPDIR"] == str(SCRATCH)
    assert kept["HTTPS_PROXY"] == "http://127.0.0.1:3128"


@pytest.mark.parametrize(
    ("size", "shown"),
    [(8 * 2**30, "8 GiB"), (256 * 2**20, "256 MiB"), (3 * 2**29, "1.5 GiB"), (100, "100 bytes")],
)
def test_a_memory_limit_reads_as_people_write_it(size: int, shown: str) -> None:
    assert format_bytes(size) == shown


def test_the_sandbox_switch() -> None:
    assert sandbox_wanted({}) is True
    assert sandbox_wanted({"EMBER_SANDBOX": "off"}) is False
    with pytest.raises(ValueError, match="on or off"):
        sandbox_wanted({"EMBER_SANDBOX": "maybe"})


def test_the_proxy_reads_where_a_request_goes() -> None:
    assert _destination("CONNECT", "pypi.org:443") == ("pypi.org", 443, None)
    assert _destination("CONNECT", "[::1]:8000") == ("::1", 8000, None)
    assert _destination("GET", "http://example.com/a?b=1") == ("example.com", 80, "/a?b=1")
    for method, target in (("CONNECT", "pypi.org"), ("GET", "/relative"), ("GET", "ftp://x/")):
        with pytest.raises(_Refused):
            _destination(method, target)
