"""Ember on one Ray node: what runs inside the cluster, next to the replicas.

Ray places and accounts; Ember runs. Each replica is held in Ray's books by a placement group
of one bundle with what the package needs (CPUs, GPUs of a type, memory), so Ray's scheduler
picks the node and its autoscaler sees the demand (a group is bookkeeping only: no process is
started for it). The replica itself runs on that node as an ordinary Ember worker process,
started by the node's one `NodeAgent`: a
`LocalRuntime` with the node's environments, warm hosts and page cache, so every cold-start
tier works per node exactly as on one machine. A worker knows nothing of Ray.

The agent speaks plain data (dicts, bytes) so that nothing but Ray and Ember's own packages
need to be importable on both sides. Output files travel with the events that produce them:
the server, not the node, serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ray

from ember.packages.archive import unpack
from ember.packages.spec import PackageSpec
from ember.runtime.base import (
    PredictionEvent,
    PredictionRequest,
    PredictionResult,
    ReplicaState,
    Tier,
)
from ember.runtime.local import LocalRuntime
from ember.runtime.local_replica import LocalReplica

PREEMPTION_POLL_SECONDS = 0.25
AGENT_NAME = "ember-node-{}"  # one named agent per node id, in Ember's namespace


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()


class _FileShipper:
    """Sends each output file of a prediction once, with the first event after it appears."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sent: dict[str, int] = {}

    def new_files(self) -> dict[str, bytes]:
        if not self.folder.is_dir():
            return {}
        found = {}
        for path in self.folder.iterdir():
            size = path.stat().st_size if path.is_file() else -1
            if size >= 0 and self.sent.get(path.name) != size:
                found[path.name] = path.read_bytes()
                self.sent[path.name] = size
        return found


@ray.remote(num_cpus=0, max_concurrency=10_000)
class NodeAgent:
    """Runs Ember replicas on its node (async actor: every call is a coroutine on one loop)."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = Path(data_dir)
        self.runtime = LocalRuntime(self.data_dir)
        self.replicas: dict[str, LocalReplica] = {}
        self.packages: dict[str, str] = {}  # archive digest: unpacked root on this node
        self._unpacking = asyncio.Lock()
        self.gpus = GpuPool(_node_gpus())

    async def node(self) -> str:
        return node_id()

    # -- packages -------------------------------------------------------------------------

    async def _spec(self, package: dict[str, Any]) -> PackageSpec:
        """The package as unpacked on this node. `package` holds its spec, its archive's digest
        and a reference to the archive, fetched only the first time this node needs it."""
        digest = package["digest"]
        async with self._unpacking:  # two replicas of a new package start at once
            root = self.packages.get(digest)
            if root is None:
                target = self.data_dir / "packages" / digest[:32]
                if not target.is_dir():
                    archive = await package["archive"]
                    await asyncio.to_thread(_unpack, archive, target)
                root = self.packages[digest] = str(target)
        return PackageSpec.model_validate({**package["spec"], "root": root})

    async def prepare(self, package: dict[str, Any]) -> AsyncIterator[dict]:
        """Build (or reuse) the package's environment here, streaming uv's progress lines;
        the last item is the environment (its paths are this node's)."""
        spec = await self._spec(package)
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def progress(line: str) -> None:
            loop.call_soon_threadsafe(lines.put_nowait, line)

        task = asyncio.create_task(self.runtime.prepare(spec, progress))
        task.add_done_callback(lambda _: lines.put_nowait(None))
        while (line := await lines.get()) is not None:
            yield {"progress": line}
        yield {"environment": await task}

    # -- replicas -------------------------------------------------------------------------

    async def start_replica(self, package: dict[str, Any], tier: str) -> dict:
        """Start a replica; one that asks for GPUs sees only devices no other replica here
        holds (Ray counted them; which ones is Ember's to choose: its workers are not Ray's)."""
        spec = await self._spec(package)
        gpus = spec.resources.gpu.count if spec.resources.gpu is not None else 0
        devices = self.gpus.take(gpus)
        env = {"CUDA_VISIBLE_DEVICES": ",".join(devices)} if gpus else None
        try:
            replica = await self.runtime.start_replica(spec, Tier(tier), env)
        except BaseException:
            self.gpus.give_back(devices)
            raise
        self.replicas[replica.id] = replica
        self.gpus.hold(replica.id, devices)
        return {"id": replica.id, "tier": replica.tier.value, "gpus": devices}

    async def setup(self, replica_id: str) -> AsyncIterator[dict]:
        """The replica's setup output as it comes, then how setup ended."""
        replica = self.replicas[replica_id]
        chunks: asyncio.Queue[str] = asyncio.Queue()
        replica.on_setup_log = chunks.put_nowait
        waiting = asyncio.create_task(replica.wait_started())
        while not waiting.done():
            getter = asyncio.create_task(chunks.get())
            done, _ = await asyncio.wait({getter, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield {"log": getter.result()}
            else:
                getter.cancel()
        while not chunks.empty():
            yield {"log": chunks.get_nowait()}
        state = waiting.result()
        yield {
            "state": state.value,
            "schema": replica.schema,
            "max_concurrency": replica.max_concurrency,
            "setup_logs": replica.setup_logs,
            "setup_error": replica.setup_error,
            "phases": replica.start_phases(),
        }

    async def predict(self, replica_id: str, request: dict[str, Any]) -> AsyncIterator[dict]:
        """Run one prediction: its events as they happen, each with the output files that
        appeared since the last, then its result."""
        replica = self.replicas[replica_id]
        events: asyncio.Queue[PredictionEvent | PredictionResult] = asyncio.Queue()
        handle = replica.submit(PredictionRequest(**request), events.put_nowait)
        files = _FileShipper(self.runtime.outputs_dir / handle.id)
        while True:
            event = await events.get()
            if isinstance(event, PredictionResult):
                yield {"result": _result_fields(event), "files": files.new_files()}
                return
            yield {"event": event.type, "data": event.data, "files": files.new_files()}

    async def cancel(self, replica_id: str, prediction_id: str) -> None:
        replica = self.replicas.get(replica_id)
        if replica is not None:
            replica.cancel(prediction_id)

    async def healthcheck(self, replica_id: str) -> str | None:
        replica = self.replicas.get(replica_id)
        return None if replica is None else await replica.healthcheck()

    async def stop(self, replica_id: str, drain: bool, timeout: float | None) -> None:
        replica = self.replicas.get(replica_id)
        if replica is not None:
            await replica.stop(drain=drain, timeout=timeout)

    async def wait_preempted(self, replica_id: str) -> bool:
        """True once the replica drains (its worker was sent SIGTERM, as a spot machine's
        preemption notice, or the head asked); False if it stops first. The head then routes
        nothing more to it. Polled: a replica has no state-change callback to wait on."""
        replica = self.replicas.get(replica_id)
        while replica is not None and replica.state in (ReplicaState.READY, ReplicaState.STARTING):
            await asyncio.sleep(PREEMPTION_POLL_SECONDS)
        return replica is not None and replica.state == ReplicaState.DRAINING

    async def wait_stopped(self, replica_id: str) -> int | None:
        """The replica's exit code, once its process is gone."""
        replica = self.replicas[replica_id]
        try:
            return await replica.wait_stopped()
        finally:
            self.replicas.pop(replica_id, None)
            self.gpus.release(replica_id)

    # -- tiers ----------------------------------------------------------------------------

    async def keep_ready(self, wanted: list[tuple[dict[str, Any], str]]) -> None:
        specs = [(await self._spec(package), Tier(tier)) for package, tier in wanted]
        await self.runtime.keep_ready(specs)

    async def readiness(self, package: dict[str, Any]) -> dict:
        status = self.runtime.readiness(await self._spec(package))
        return {"tier": status.tier.value, "ready": status.ready, "detail": status.detail}

    async def close(self) -> None:
        for replica in list(self.replicas.values()):
            with contextlib.suppress(Exception):
                await replica.stop(drain=False)
        await self.runtime.close()


class GpuPool:
    """Which of the node's GPU devices each replica holds."""

    def __init__(self, devices: list[str]) -> None:
        self.free = list(devices)
        self.held: dict[str, list[str]] = {}

    def take(self, count: int) -> list[str]:
        if count > len(self.free):
            raise RuntimeError(
                f"this node has {len(self.free)} free GPUs, a replica asked for {count}"
            )
        taken, self.free = self.free[:count], self.free[count:]
        return taken

    def hold(self, replica_id: str, devices: list[str]) -> None:
        if devices:
            self.held[replica_id] = devices

    def give_back(self, devices: list[str]) -> None:
        self.free = sorted([*self.free, *devices], key=_device_order)

    def release(self, replica_id: str) -> None:
        self.give_back(self.held.pop(replica_id, []))


def _device_order(device: str) -> tuple[int, str]:
    return (int(device), "") if device.isdigit() else (1 << 30, device)


def _node_gpus() -> list[str]:
    """The node's GPU devices as CUDA names them: those its raylet was given, else 0..N-1 for
    the N GPUs the node advertises."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [d for d in visible.split(",") if d]
    me = node_id()
    count = next((n["Resources"].get("GPU", 0) for n in ray.nodes() if n["NodeID"] == me), 0)
    return [str(i) for i in range(int(count))]


def _result_fields(result: PredictionResult) -> dict[str, Any]:
    return {
        "id": result.id,
        "status": result.status,
        "output": result.output,
        "error": result.error,
        "metrics": result.metrics,
        "started_at": result.started_at,
        "completed_at": result.completed_at,
        "validation_errors": result.validation_errors,
        "never_started": result.never_started,
        "retryable": result.retryable,
    }


def _unpack(archive: bytes, target: Path) -> None:
    """Unpack a package the head sent, with the same checks as an upload (links and special
    files refused, every member inside `target`): the head is trusted, its packages are not."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".tar.gz", dir=target.parent) as bundle:
        bundle.write(archive)
        bundle.flush()
        unpack(Path(bundle.name), target)
