"""What a sandboxed replica sees of the machine, and the bubblewrap command that builds it.

Why bubblewrap: it is the well-kept tool for unprivileged namespaces (Flatpak's), small, and
it builds a fresh root from nothing but the binds it is given, so what a replica can see is
this module's list and not whatever the server happens to see. Everything is bound at its own
path (the environment, the package, the scratch folder), so paths mean the same inside and
out and nothing needs translating; only `/tmp` is the replica's scratch folder a second time,
where Cog models conventionally write.

Not bound, so not there: the data directory (database, `secret.key`, uploads, outputs,
other packages), home directories, /run and /var (PostgreSQL's and others' sockets), the
server's /etc beyond what programs need to run, other processes (a PID namespace), and the
host's network where the package asks for none or for egress only (a network namespace of
its own; its loopback is not the host's).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ember.egress import SANDBOX_PROXY_ENV, SANDBOX_PROXY_SOCKET, SANDBOX_RELAY_PORT

# The system's programs and libraries, read-only. Where one is a link (a merged /usr), the
# link is recreated rather than bound.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc programs need to start, resolve names, verify TLS and know the time; not
# passwords, keys of the machine, or service configuration.
ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "resolv.conf",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "gai.conf",
    "passwd",
    "group",
    "localtime",
    "timezone",
    "alternatives",
    "mime.types",
    "fonts",
    "os-release",
    "debian_version",
    "xdg",
)
# Device nodes of an NVIDIA GPU that every replica using one needs, besides /dev/nvidiaN.
NVIDIA_SHARED_DEVICES = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)


@dataclass(frozen=True)
class Layout:
    """One sandbox: what it reads, what it writes, its way out and its devices."""

    read_only: tuple[Path, ...]
    scratch: Path  # read-write, also mounted at /tmp
    gpus: tuple[str, ...] = ()  # the GPU indices it may use
    egress_socket: Path | None = None  # its egress proxy's socket (`egress_proxy.py`)


def _system_binds() -> list[str]:
    args: list[str] = []
    for name in SYSTEM_DIRS:
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def _device_binds(gpus: Iterable[str]) -> list[str]:
    args: list[str] = []
    chosen = list(gpus)
    if chosen:
        for device in NVIDIA_SHARED_DEVICES:
            args += ["--dev-bind-try", device, device]
        for index in chosen:
            args += ["--dev-bind-try", f"/dev/nvidia{index}", f"/dev/nvidia{index}"]
    return args


def bwrap_arguments(layout: Layout) -> list[str]:
    """bubblewrap's options for `layout` (the command follows them)."""
    args = [
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "replica",
        # Root outside keeps every capability by default; a replica needs none.
        "--cap-drop",
        "ALL",
        # The server's death ends the sandbox, and with it every process inside.
        "--die-with-parent",
        *_system_binds(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        *_device_binds(layout.gpus),
        # Programs read /sys for CPU topology; nothing in it is writable or any tenant's.
        "--ro-bind-try",
        "/sys",
        "/sys",
        "--tmpfs",
        "/sys/fs/cgroup",
    ]
    # A network of its own, always: its loopback is not the host's. What it may reach goes
    # through its egress proxy, whose socket is bound in.
    args.append("--unshare-net")
    if layout.egress_socket is not None:
        args += ["--bind", str(layout.egress_socket), SANDBOX_PROXY_SOCKET]
    # /tmp first: what is bound below it later (a package in a data directory under /tmp)
    # must not be hidden by it.
    args += ["--bind", str(layout.scratch), "/tmp"]
    for path in layout.read_only:
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(layout.scratch), str(layout.scratch)]
    return [*args, "--chdir", "/tmp"]


# The variables a replica keeps from the server's environment: locale, time zone, and the
# settings of the libraries models use. Everything else (the admin token, the database URL,
# cloud credentials in the server's environment) stays outside.
KEPT_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONUNBUFFERED", "PYTHONHASHSEED")
KEPT_PREFIXES = (
    "LC_",
    "COG_",
    "HF_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "CUDA_",
    "NVIDIA_",
    "GGML_",
    "LLAMA_",
    "EMBER_EGRESS_ALLOW",
    "EMBER_MAX_DATA_URI",
    "EMBER_ENVIRONMENT",
    "EMBER_HEARTBEAT",
)


def confined_environment(env: dict[str, str], layout: Layout) -> dict[str, str]:
    """`env` less what is the server's own; HOME and TMPDIR point at the scratch folder, and
    HTTP clients at the relay to the sandbox's egress proxy."""
    kept = {
        name: value
        for name, value in env.items()
        if name in KEPT_VARIABLES or name.startswith(KEPT_PREFIXES)
    }
    kept.update(HOME="/tmp", TMPDIR=str(layout.scratch))
    if layout.egress_socket is not None:
        relay = f"http://127.0.0.1:{SANDBOX_RELAY_PORT}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            kept[name] = relay
        kept["NO_PROXY"] = kept["no_proxy"] = "localhost,127.0.0.1,::1"
        kept[SANDBOX_PROXY_ENV] = SANDBOX_PROXY_SOCKET
    return kept
