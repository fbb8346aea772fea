"""Replicas on a Ray cluster: the `Runtime` that `ember serve --runtime ray` uses.

The control plane is unchanged (queues, autoscaling, routing, ledger): it starts, routes to and
stops replicas through this runtime as it does through the local one. Each start reserves the
package's resources in a one-bundle placement group (bookkeeping: no process is started for it,
so a reservation takes milliseconds where a placeholder actor took most of a second); on the
node Ray picks, that node's `NodeAgent` (started on first use, one per node) runs the replica
as a local worker process. Predictions and setup output stream back through Ray's streaming
generators, output files with them.

Placement prefers a node that already keeps the package warm (an environment built, a warm
host forked from): a soft target node, so Ray still places it elsewhere when that node is
full. A package whose resources no node has waits in Ray's queue, where Ray's autoscaler sees the
demand; the deployment's status says what it waits for (`placement`), and its requests are
held, as at zero replicas, until a node that fits joins.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ember.egress import ALLOW_ENV
from ember.packages.archive import write_archive
from ember.packages.environment import Environment
from ember.packages.spec import PackageSpec
from ember.runtime.base import (
    Listener,
    PredictionEvent,
    PredictionHandle,
    PredictionRequest,
    PredictionResult,
    Replica,
    ReplicaState,
    ReplicaUnavailable,
    Runtime,
    Tier,
    TierStatus,
)
from ember.runtime.ray_node import AGENT_NAME, NodeAgent
from ember.runtime.sandbox import SANDBOX_ENV, sandbox_wanted
from ember.runtime.sandbox.confinement import PUBLIC_URL_ENV
from ember.tasks import cancel_and_wait

logger = logging.getLogger("ember.runtime")

NAMESPACE = "ember"
GIB = 2**30
REFRESH_SECONDS = 1.0
PLACE_SECONDS = 60.0  # re-placing a replica whose node died under it
PLACE_TIMEOUT_SECONDS = 600.0  # an upload's wait for a node that can build and check it
BUSY = "waiting for room: the nodes that could hold a replica are busy"
NODE_LOST = "the node running this prediction's replica went away (Ray lost it)"


def bundle(spec: PackageSpec) -> dict[str, float]:
    """One replica of `spec` in Ray's resources: CPUs, memory (bytes), GPUs of a type.

    A GPU type is Ray's accelerator label (nodes advertise `accelerator_type:<type>`; a
    replica asks for a sliver of it, as Ray's own `accelerator_type` option does).
    """
    resources = spec.resources
    wanted = {"CPU": resources.cpu, "memory": float(resources.memory)}
    if resources.gpu is not None:
        wanted["GPU"] = resources.gpu.count
        wanted[f"accelerator_type:{resources.gpu.type}"] = 0.001
    return wanted


def missing_resources(wanted: dict[str, float], nodes: list[dict[str, Any]]) -> str | None:
    """Why no live node could ever hold a replica needing `wanted` (None: one could)."""
    alive = [n["Resources"] for n in nodes if n.get("Alive")]
    for node in alive:
        if all(node.get(name, 0) >= amount for name, amount in wanted.items()):
            return None
    needs = [f"{wanted.get('CPU', 0):g} CPU", f"{wanted.get('memory', 0) / GIB:.2g} GiB"]
    hint = "more CPUs or memory"
    if wanted.get("GPU"):
        kind = next((n.split(":", 1)[1] for n in wanted if n.startswith("accelerator_type:")), "")
        needs.append(f"{wanted['GPU']:g} GPU" + (f" of type {kind}" if kind else ""))
        labels = f" --resources '{{\"accelerator_type:{kind}\": 1}}'" if kind else ""
        hint = f"`ray start --address HEAD:6379 --num-gpus {wanted['GPU']:g}{labels}`"
    return (
        f"no node of the Ray cluster ({len(alive)} alive) has {', '.join(needs)}: add a node "
        f"with {hint}, or change the package's resources"
    )


class RayReplica(Replica):
    """A replica running on some node of the cluster, seen from the server."""

    def __init__(
        self,
        spec: PackageSpec,
        agent: Any,
        group: PlacementGroup,
        node: str,
        replica_id: str,
        tier: Tier,
        outputs_dir: Path,
    ) -> None:
        self.spec = spec
        self.agent = agent
        self.group = group  # holds the replica's resources in Ray's books
        self.node = node
        self.id = replica_id
        self.tier = tier
        self.outputs_dir = outputs_dir
        self.state = ReplicaState.STARTING
        self.max_concurrency = spec.max_concurrency
        self.schema: dict[str, Any] | None = None
        self.setup_logs = ""
        self.setup_error: str | None = None
        self.exit_code: int | None = None
        self.place_seconds = 0.0  # until Ray had reserved its resources on a node
        self._phases: dict[str, float] = {}
        self._handles: dict[str, PredictionHandle] = {}
        self._started = asyncio.Event()
        self._exited = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def begin(self) -> None:
        self._spawn(self._follow_setup())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def in_flight(self) -> int:
        return len(self._handles)

    def start_phases(self) -> dict[str, float]:
        return {"place": self.place_seconds, **self._phases}

    async def _follow_setup(self) -> None:
        try:
            async for ref in self.agent.setup.remote(self.id):
                item = await ref
                if "log" in item:
                    self.setup_logs += item["log"]
                    if self.on_setup_log is not None:
                        self.on_setup_log(item["log"])
                    continue
                self.schema = item["schema"]
                self.max_concurrency = item["max_concurrency"]
                self.setup_logs = item["setup_logs"]
                self.setup_error = item["setup_error"]
                self._phases = item["phases"]
                self.state = ReplicaState(item["state"])
        except RayActorError:
            self.lost = True
            self.state = ReplicaState.STOPPED
            self.setup_error = "the node running this replica went away during setup"
        finally:
            self._started.set()
        if self.lost:
            self._gone()
        else:  # also after a failed setup: the agent frees what the replica held once it exits
            self._spawn(self._follow_exit())
            if self.state == ReplicaState.READY:
                self._spawn(self._follow_preemption())

    async def _follow_preemption(self) -> None:
        """A replica sent SIGTERM on its node drains by itself: take nothing new for it (the
        runner starts a replacement, and what it hands back runs there)."""
        with contextlib.suppress(RayActorError):
            if await self.agent.wait_preempted.remote(self.id) and self.state == ReplicaState.READY:
                self.state = ReplicaState.DRAINING

    async def _follow_exit(self) -> None:
        reason = "the replica process exited while running this prediction"
        try:
            self.exit_code = await self.agent.wait_stopped.remote(self.id)
        except RayActorError:
            self.exit_code = None  # the node or its agent died: so did the replica
            self.lost = True
            reason = NODE_LOST
        if self.state != ReplicaState.SETUP_FAILED:
            self.state = ReplicaState.STOPPED
        self._gone(reason)

    def _gone(self, reason: str = NODE_LOST) -> None:
        """The replica is no more: free its resources and end what it still held."""
        for handle in list(self._handles.values()):
            self._fail(handle, reason)
        with contextlib.suppress(Exception):
            remove_placement_group(self.group)
        self._exited.set()

    def _fail(self, handle: PredictionHandle, reason: str) -> None:
        """End a prediction the replica can no longer finish; one that showed nothing yet may
        run again elsewhere."""
        self._handles.pop(handle.id, None)
        started = handle.started_at is not None
        handle.finish(
            PredictionResult(
                id=handle.id,
                status="failed",
                error=reason,
                never_started=not started,
                retryable=started and not handle.produced_output,
            )
        )

    async def wait_started(self) -> ReplicaState:
        await self._started.wait()
        return self.state

    async def wait_stopped(self) -> int | None:
        await self._exited.wait()
        return self.exit_code

    def submit(
        self, request: PredictionRequest, listener: Listener | None = None
    ) -> PredictionHandle:
        if self.state != ReplicaState.READY:
            raise ReplicaUnavailable(f"replica {self.id} is {self.state.value.lower()}")
        handle = PredictionHandle(request, self.cancel, listener)
        self._handles[handle.id] = handle
        self._spawn(self._run(handle))
        return handle

    async def _run(self, handle: PredictionHandle) -> None:
        request = handle.request
        fields = {
            "id": request.id,
            "input": request.input,
            "context": request.context,
            "timeout": request.timeout,
            "method": request.method,
        }
        files_dir = self.outputs_dir / handle.id
        try:
            async for ref in self.agent.predict.remote(self.id, fields):
                item = await ref
                if item["files"]:
                    await asyncio.to_thread(_write_files, files_dir, item["files"])
                if "event" in item:
                    handle.publish(PredictionEvent(item["event"], handle.id, item["data"]))
                    continue
                self._handles.pop(handle.id, None)
                handle.finish(PredictionResult(**item["result"], files_dir=files_dir))
        except RayActorError:
            self._fail(handle, NODE_LOST)
        except ReplicaUnavailable as exc:  # it drains on its node (preempted), unknown here yet
            if self.state == ReplicaState.READY:
                self.state = ReplicaState.DRAINING
            self._handles.pop(handle.id, None)
            handle.finish(
                PredictionResult(id=handle.id, status="failed", error=str(exc), never_started=True)
            )

    def cancel(self, prediction_id: str) -> None:
        if prediction_id in self._handles:
            self.agent.cancel.remote(self.id, prediction_id)

    async def healthcheck(self) -> str | None:
        if self.state != ReplicaState.READY:
            return None
        try:
            return await self.agent.healthcheck.remote(self.id)
        except RayActorError:
            return "Healthcheck error: the replica's node went away (Ray lost it)"

    async def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        if self.state in (ReplicaState.READY, ReplicaState.STARTING):
            if drain:
                self.state = ReplicaState.DRAINING
            with contextlib.suppress(RayActorError):
                await self.agent.stop.remote(self.id, drain, timeout)
        await self._exited.wait()


# The server's settings that replicas read from their environment: nodes get them too.
NODE_SETTINGS = (
    ALLOW_ENV,
    "EMBER_HEARTBEAT_TIMEOUT",
    "EMBER_MAX_DATA_URI_BYTES",
    SANDBOX_ENV,
    PUBLIC_URL_ENV,
)


def _node_settings() -> dict[str, str]:
    return {name: os.environ[name] for name in NODE_SETTINGS if name in os.environ}


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / Path(name).name).write_bytes(data)


class RayRuntime(Runtime):
    """Runs replicas on the Ray cluster at `address` ("auto", "ray://host:10001", or None for a
    local cluster started for this process); output files land in `data_dir/outputs`."""

    def __init__(
        self,
        data_dir: Path,
        address: str | None = "auto",
        node_data_dir: str | None = None,
        place_timeout: float = PLACE_TIMEOUT_SECONDS,
    ) -> None:
        self.data_dir = data_dir
        # Each node sandboxes its replicas as EMBER_SANDBOX, passed on to it, says.
        self.sandbox_mode = "on" if sandbox_wanted() else "off"
        self.sandbox_detail = f"{self.sandbox_mode} (on each node, as {SANDBOX_ENV} says)"
        self.outputs_dir = data_dir / "outputs"
        self.address = address
        # Where each node keeps environments and packages (on that node's disk).
        self.node_data_dir = node_data_dir or str(Path.home() / ".ember" / "ray-node")
        self.place_timeout = place_timeout
        self._waiting: dict[str, str] = {}  # package root: what its placement waits for
        self._packages: dict[str, dict[str, Any]] = {}  # package root: see _package
        self._agents: dict[str, Any] = {}  # node id: its agent
        self._warm: dict[str, set[str]] = {}  # package root: nodes that keep it ready
        self._readiness: dict[str, TierStatus] = {}
        # package root: what `prepare` placed, kept for the `start_replica` that follows
        self._prepared: dict[str, tuple[PlacementGroup, str, Any]] = {}
        self._wanted: list[tuple[PackageSpec, Tier]] = []
        self._ran_on: dict[str, set[str]] = {}  # package root: nodes its replicas ran on
        self._refreshed = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect to the cluster (once; a no-op when this process is already connected)."""
        if not ray.is_initialized():
            await asyncio.to_thread(
                ray.init,
                address=self.address,
                namespace=NAMESPACE,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )

    def _package(self, spec: PackageSpec) -> dict[str, Any]:
        """What an agent needs to run `spec`: the spec, and its archive by digest and by
        reference (inside a dict, so Ray hands the reference over rather than the bytes: a
        node fetches the archive once, the first time it runs the package)."""
        if spec.root not in self._packages:
            buffer = io.BytesIO()
            write_archive(Path(spec.root), buffer)
            archive = buffer.getvalue()
            self._packages[spec.root] = {
                "spec": spec.model_dump(mode="json"),
                "digest": hashlib.sha256(archive).hexdigest(),
                "archive": ray.put(archive),
            }
        return self._packages[spec.root]

    def _agent(self, node: str) -> Any:
        """The node's agent: the one already running there, or a new one pinned to it.

        A new agent gets the server's egress allowlist in its environment, as a local worker
        gets it from the server's, for its replicas to inherit (see ember.egress)."""
        if node not in self._agents:
            self._agents[node] = NodeAgent.options(
                name=AGENT_NAME.format(node),
                namespace=NAMESPACE,
                get_if_exists=True,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                runtime_env={"env_vars": _node_settings()},
            ).remote(f"{self.node_data_dir}/{node[:12]}")
        return self._agents[node]

    async def _place(
        self, spec: PackageSpec, timeout: float | None = None
    ) -> tuple[PlacementGroup, str, Any]:
        """Resources for one replica, the node Ray reserved them on, and that node's agent.

        While no node has room, the reservation waits in Ray's queue, where Ray's autoscaler
        (KubeRay's too) sees it and may add a node; `placement(spec)` says meanwhile what it
        waits for. With a `timeout`, a wait that long fails saying so.
        """
        wanted = bundle(spec)
        # Startup-time-aware: where the package is kept ready, if there is room there.
        warm = sorted(self._warm.get(spec.root, ()))
        group = placement_group(
            [wanted], strategy="STRICT_PACK", _soft_target_node_id=warm[0] if warm else None
        )
        began = time.perf_counter()
        try:
            while not await asyncio.to_thread(group.wait, 1):
                why = missing_resources(wanted, await asyncio.to_thread(ray.nodes))
                self._waiting[spec.root] = why or BUSY
                if timeout is not None and time.perf_counter() - began > timeout:
                    remove_placement_group(group)
                    raise ReplicaUnavailable(f"{self._waiting[spec.root]} (waited {timeout:g} s)")
        except asyncio.CancelledError:
            remove_placement_group(group)
            raise
        finally:
            self._waiting.pop(spec.root, None)
        node = placement_group_table(group)["bundles_to_node_id"][0]
        return group, node, self._agent(node)

    def placement(self, spec: PackageSpec) -> str | None:
        return self._waiting.get(spec.root)

    async def prepare(
        self, spec: PackageSpec, on_progress: Callable[[str], None] | None = None
    ) -> Environment:
        """Build the package's environment on the node its next replica will run on (that
        replica's reservation is kept for `start_replica`). An upload cannot wait forever for
        a node: past `place_timeout` it fails with what is missing."""
        group, node, agent = await self._place(spec, self.place_timeout)
        self._prepared[spec.root] = (group, node, agent)
        async for ref in agent.prepare.remote(self._package(spec)):
            item = await ref
            if "environment" in item:
                return item["environment"]
            if on_progress is not None:
                on_progress(item["progress"])
        raise ReplicaUnavailable(f"the agent on node {node} ended the build without a result")

    async def start_replica(self, spec: PackageSpec, tier: Tier = Tier.WARM_HOST) -> RayReplica:
        """Place and start one replica. A node that is going away (Ray notices only after
        missed heartbeats) may still be chosen: its agent then fails, and the replica is placed
        again, for up to PLACE_SECONDS."""
        began = time.perf_counter()
        prepared = self._prepared.pop(spec.root, None)
        while True:
            group, node, agent = prepared or await self._place(spec)
            prepared = None
            placed = time.perf_counter() - began
            try:
                started = await agent.start_replica.remote(self._package(spec), tier.value)
                break
            except RayActorError:
                remove_placement_group(group)
                self._forget(node)
                if time.perf_counter() - began > PLACE_SECONDS:
                    raise
                await asyncio.sleep(0.5)
            except BaseException:
                remove_placement_group(group)
                raise
        self._ran_on.setdefault(spec.root, set()).add(node)
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        replica = RayReplica(
            spec, agent, group, node, started["id"], Tier(started["tier"]), self.outputs_dir
        )
        replica.place_seconds = placed
        replica.begin()
        return replica

    async def keep_ready(self, wanted: list[tuple[PackageSpec, Tier]]) -> None:
        """Each package's tier is kept on the nodes its replicas ran on (first use: none)."""
        self._wanted = wanted
        for node in list(self._agents):
            here = [
                (self._package(spec), tier.value)
                for spec, tier in wanted
                if node in self._ran_on.get(spec.root, ())
            ]
            try:
                await self._agents[node].keep_ready.remote(here)
            except RayActorError:
                self._forget(node)
        await self._refresh(wanted)

    async def _refresh(self, wanted: list[tuple[PackageSpec, Tier]]) -> None:
        """Learn, per package, which nodes have its tier ready (placement prefers them)."""
        self._refreshed = time.monotonic()
        warm: dict[str, set[str]] = {}
        for spec, tier in wanted:
            best: TierStatus | None = None
            for node, agent in list(self._agents.items()):
                if node not in self._ran_on.get(spec.root, ()):
                    continue
                try:
                    found = await agent.readiness.remote(self._package(spec))
                except RayActorError:
                    self._forget(node)
                    continue
                status = TierStatus(Tier(found["tier"]), found["ready"], found["detail"])
                if status.ready and status.tier == tier:
                    warm.setdefault(spec.root, set()).add(node)
                if best is None or (status.ready and not best.ready):
                    best = status
            self._readiness[spec.root] = best or TierStatus(Tier.COLD, ready=True)
        self._warm = warm

    def _forget(self, node: str) -> None:
        self._agents.pop(node, None)
        for nodes in (*self._warm.values(), *self._ran_on.values()):
            nodes.discard(node)

    def readiness(self, spec: PackageSpec) -> TierStatus:
        """What the nodes last said (asked again in the background when over a second old:
        a warm host that finished starting is reported within a second or two)."""
        stale = time.monotonic() - self._refreshed > REFRESH_SECONDS
        if stale and self._wanted and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh(self._wanted))
        return self._readiness.get(spec.root, TierStatus(Tier.COLD, ready=True))

    async def close(self) -> None:
        if self._refreshing is not None:
            await cancel_and_wait(self._refreshing)
        for group, _, _ in self._prepared.values():
            remove_placement_group(group)
        self._prepared.clear()
        for agent in self._agents.values():
            with contextlib.suppress(RayActorError):
                await agent.close.remote()
            ray.kill(agent)
        self._agents.clear()
