"""The runtime that runs replicas as processes on this machine.

Why a module of its own: it decides how each replica starts and keeps each package ready,
while the replica itself (its process, the worker protocol, crash and hang detection) is
`local_replica.py`. It builds (or reuses) a package's environment, then starts a
`LocalReplica`: forked from the package's warm host when one is ready (`warm_host.py`), else
spawned. It keeps, per package, the tier the control plane asks for (`keep_ready`): a warm
host, the page cache filled with its weights (`page_cache.py`), or nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ember.packages.environment import Environment, ensure_environment, require_system_packages
from ember.packages.spec import PackageSpec
from ember.runtime.base import Runtime, Tier, TierStatus
from ember.runtime.local_replica import HANG_GRACE_SECONDS, HEARTBEAT_TIMEOUT_SECONDS, LocalReplica
from ember.runtime.page_cache import CachedFiles, find_weight_files, read_ahead
from ember.runtime.processes import worker_env
from ember.runtime.sandbox import Sandboxing, sandbox_wanted
from ember.runtime.warm_host import WarmHost
from ember.tasks import cancel_and_wait

logger = logging.getLogger("ember.runtime")

# The page cache forgets under memory pressure: ask again this often for the disk tier.
READ_AHEAD_EVERY_SECONDS = 60.0
# Seconds of silence before a replica is presumed frozen, for a runtime built with defaults.
HEARTBEAT_TIMEOUT_ENV = "EMBER_HEARTBEAT_TIMEOUT"
# A warm host that died after it was ready (a crash, the OOM killer) is restarted at most this
# often; one that failed while preparing is not retried (it would fail the same way).
HOST_RESTART_SECONDS = 60.0


def default_heartbeat_timeout() -> float:
    """EMBER_HEARTBEAT_TIMEOUT (seconds) where set, else 30: how `ember serve` (which builds its
    runtime with defaults) is told a shorter or longer one."""
    value = os.environ.get(HEARTBEAT_TIMEOUT_ENV)
    if not value:
        return HEARTBEAT_TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"{HEARTBEAT_TIMEOUT_ENV} must be a number of seconds above 0: {value!r}")
    return seconds


class LocalRuntime(Runtime):
    """Runs replicas as local processes; builds package environments under `data_dir`; keeps
    warm hosts and warm page caches for the packages the control plane names."""

    def __init__(
        self,
        data_dir: Path,
        hang_grace: float = HANG_GRACE_SECONDS,
        heartbeat_timeout: float | None = None,
        sandbox: bool | None = None,
    ) -> None:
        """`sandbox`: run replicas in sandboxes (None: as EMBER_SANDBOX says, on by default);
        raises SandboxUnavailable, saying what is missing, where they cannot be."""
        self.data_dir = data_dir
        self.sandboxing = Sandboxing(data_dir, sandbox_wanted() if sandbox is None else sandbox)
        self.sandbox_mode = "on" if self.sandboxing.enabled else "off"
        self.sandbox_detail = self.sandboxing.detail
        self.hang_grace = hang_grace
        # None: EMBER_HEARTBEAT_TIMEOUT, else 30 s.
        self.heartbeat_timeout = (
            heartbeat_timeout if heartbeat_timeout is not None else default_heartbeat_timeout()
        )
        self.envs_dir = data_dir / "envs"
        self.outputs_dir = data_dir / "outputs"
        self._environments: dict[str, Environment] = {}
        self._hosts: dict[str, WarmHost] = {}  # by package root
        self._host_setup_unsafe: set[str] = set()
        self._host_restarted: dict[str, float] = {}
        self._cached: dict[str, tuple[CachedFiles, float]] = {}  # root: (files, last read-ahead)
        self._tiers: dict[str, Tier] = {}
        self._preparing: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Nothing to connect to: replicas are this machine's processes."""

    async def prepare(
        self, spec: PackageSpec, on_progress: Callable[[str], None] | None = None
    ) -> Environment:
        """Check system packages and build (or reuse) the package's environment."""
        require_system_packages(spec.system_packages, package_name=spec.name)
        environment = await asyncio.to_thread(
            ensure_environment,
            spec.requirements,
            cache_dir=self.envs_dir,
            no_deps=spec.install_no_deps,
            python_version=spec.python_version,
            on_progress=on_progress,
        )
        self._environments[spec.root] = environment
        return environment

    async def start_replica(
        self, spec: PackageSpec, tier: Tier = Tier.WARM_HOST, env: dict[str, str] | None = None
    ) -> LocalReplica:
        environment = self._environments.get(spec.root) or await self.prepare(spec)
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        replica_id = f"r-{uuid.uuid4().hex[:10]}"
        waited = 0.0
        preparing = self._preparing.get(spec.root) if tier == Tier.WARM_HOST else None
        if preparing is not None:
            # A spawn would redo the imports and setup the host is already part-way through.
            began = time.perf_counter()
            await asyncio.wait([preparing])
            waited = time.perf_counter() - began
        host = self._hosts.get(spec.root) if tier == Tier.WARM_HOST else None
        replica = LocalReplica(
            spec,
            environment,
            self.outputs_dir,
            replica_id,
            scratch_dir=self.data_dir / "scratch" / replica_id,
            hang_grace=self.hang_grace,
            heartbeat_timeout=self.heartbeat_timeout,
            host=host if host is not None and host.ready else None,
            tier=Tier.DISK if tier != Tier.COLD and spec.root in self._cached else Tier.COLD,
            env=env,
            sandboxing=self.sandboxing if self.sandboxing.enabled else None,
        )
        replica.host_wait = waited
        await replica.launch()
        return replica

    # -- tiers ----------------------------------------------------------------------------

    async def keep_ready(self, wanted: list[tuple[PackageSpec, Tier]]) -> None:
        roots = {spec.root for spec, _ in wanted}
        for root in [r for r in self._hosts if r not in roots]:
            await self._retire_host(root)
        for root in [r for r in self._cached if r not in roots]:
            del self._cached[root]
        self._tiers = {spec.root: tier for spec, tier in wanted}
        for spec, tier in wanted:
            if tier == Tier.WARM_HOST:
                self._cached.pop(spec.root, None)
                self._ensure_host(spec)
            else:
                await self._retire_host(spec.root)
                if tier == Tier.DISK:
                    await self._read_ahead(spec)
                else:
                    self._cached.pop(spec.root, None)

    def readiness(self, spec: PackageSpec) -> TierStatus:
        tier = self._tiers.get(spec.root, Tier.COLD)
        if tier == Tier.WARM_HOST:
            host = self._hosts.get(spec.root)
            if spec.root in self._preparing or host is None or host.state == "starting":
                # (also between a host that failed and the one replacing it, without setup)
                return TierStatus(tier, ready=False, detail="warm host starting")
            if not host.ready:
                return TierStatus(
                    tier, ready=False, detail=f"warm host failed; starts are cold:\n{host.error}"
                )
            return TierStatus(
                tier,
                ready=True,
                detail=host.note,
                setup_in_host=host.setup_done,
                # Sandboxed, a host may grow to its limit, and its limit is what it holds.
                memory_bytes=spec.resources.memory if host.confinement else host.memory(),
            )
        if tier == Tier.DISK:
            cached = self._cached.get(spec.root)
            if cached is None:
                return TierStatus(tier, ready=False, detail="reading weights ahead")
            files = cached[0]
            detail = f"{len(files.paths)} files, {files.total_bytes / 2**20:.0f} MiB kept cached"
            return TierStatus(tier, ready=True, detail=detail)
        return TierStatus(tier, ready=True)

    def _ensure_host(self, spec: PackageSpec) -> None:
        root = spec.root
        host = self._hosts.get(root)
        if root in self._preparing or (host is not None and host.state in ("starting", "ready")):
            return
        if host is not None:
            if not host.ever_ready:
                return  # its imports or setup failed: a retry would fail the same way
            if time.monotonic() - self._host_restarted.get(root, 0.0) < HOST_RESTART_SECONDS:
                return  # it died after being ready (a crash, the OOM killer): not in a loop
        self._host_restarted[root] = time.monotonic()
        task = asyncio.create_task(self._start_host(spec))
        self._preparing[root] = task
        task.add_done_callback(lambda _: self._preparing.pop(root, None))

    async def _start_host(self, spec: PackageSpec) -> None:
        try:
            environment = self._environments.get(spec.root) or await self.prepare(spec)
        except Exception:
            logger.exception("no environment for the warm host of %s", spec.name)
            return
        while True:
            confinement = None
            if self.sandboxing.enabled:
                name = f"host-{uuid.uuid4().hex[:10]}"
                confinement = await self.sandboxing.confine(
                    name, spec, environment, self.data_dir / "scratch" / name, {}
                )
            host = WarmHost(
                spec,
                environment,
                self.outputs_dir,
                worker_env(spec, environment, self.outputs_dir, confinement),
                run_setup=(
                    spec.setup_in_host
                    and spec.resources.gpu is None  # CUDA must be initialised after the fork
                    and spec.root not in self._host_setup_unsafe
                ),
                confinement=confinement,
            )
            self._hosts[spec.root] = host
            await host.start()
            if await host.wait_ready():
                return
            logger.warning("warm host for %s failed:\n%s", spec.name, host.error)
            if not host.retry_without_setup:
                return
            self._host_setup_unsafe.add(spec.root)  # and at once a host that only imports

    async def _retire_host(self, root: str) -> None:
        await cancel_and_wait(self._preparing.pop(root, None))
        host = self._hosts.pop(root, None)
        if host is not None:
            if host.ready:
                await host.retire()  # it exits once the replicas it forked have
            else:
                host.kill()

    async def _read_ahead(self, spec: PackageSpec) -> None:
        cached = self._cached.get(spec.root)
        now = time.monotonic()
        if cached is not None and now - cached[1] < READ_AHEAD_EVERY_SECONDS:
            return
        environment = self._environments.get(spec.root)
        if cached is not None:
            files = cached[0]
        else:
            folders = [Path(spec.root)]
            if environment is not None and not environment.shared_with_ember:
                folders.append(environment.root)
            files = await asyncio.to_thread(find_weight_files, folders)
        await asyncio.to_thread(read_ahead, files)
        self._cached[spec.root] = (files, now)

    async def close(self) -> None:
        """Stop every warm host (the replicas they forked are stopped by then)."""
        for task in list(self._preparing.values()):
            task.cancel()
        hosts, self._hosts = list(self._hosts.values()), {}
        for host in hosts:
            host.kill()
        await asyncio.gather(*(h.wait_stopped() for h in hosts), return_exceptions=True)
        await self.sandboxing.close_proxies()
        await asyncio.to_thread(self.sandboxing.close)


def default_data_dir() -> Path:
    return Path(os.environ.get("EMBER_HOME", Path.home() / ".ember"))
