"""The replica process: load one predictor, set it up once, serve predictions until told to stop.

Started by a runtime with an inherited socket (EMBER_WORKER_FD), the package spec
(EMBER_PACKAGE_SPEC, JSON) and a folder for output files (EMBER_OUTPUTS_DIR) — or forked by a
warm host (`host.py`) that has already imported the predictor and perhaps run its setup. It
knows nothing of the control plane: it only speaks the frames in `protocol`.

Two threads besides the predictor's keep the runtime informed whatever predict() does:
- a heartbeat every EMBER_HEARTBEAT_SECONDS, so the runtime can tell a frozen process (stopped,
  deadlocked, swapped to death) from a slow prediction and recycle it;
- on SIGTERM (a spot machine's preemption notice) the worker drains: it says DRAINING, hands
  back the predictions it had queued but not started (`returned`: the runtime runs them on
  another replica), finishes those running, and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember.packages.loader import load_predictor
from ember.packages.predictor import Predictor
from ember.packages.schema import openapi_schema
from ember.packages.spec import PackageSpec
from ember.worker import egress_relay, protocol
from ember.worker.healthcheck import run_healthcheck
from ember.worker.logs import LogCapture
from ember.worker.runner import RETURNED, Job, JobQueue, Runner, interruptible
from ember.worker.tracebacks import model_traceback

STARTING, READY, SETUP_FAILED, STOPPED = "STARTING", "READY", "SETUP_FAILED", "STOPPED"
DRAINING = "DRAINING"
_INTERRUPT = {signal.SIGUSR1}
PREEMPTED = "the replica was preempted (sent SIGTERM) before this prediction started"


@dataclass
class Preloaded:
    """A predictor a warm host imported (and perhaps set up) before forking this worker."""

    predictor: Predictor
    setup_done: bool


class Worker:
    def __init__(self, sock: socket.socket, spec: PackageSpec, outputs_dir: Path) -> None:
        self.sock = sock
        self.spec = spec
        self.outputs_dir = outputs_dir
        self.state = STARTING
        self.setup_logs: list[str] = []
        self.inbox = JobQueue()
        self.runner: Runner | None = None
        self._send_lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._jobs: dict[str, Job] = {}  # concurrent mode: by id, while their task lives
        self._stop: asyncio.Event | None = None
        self._draining = False
        self._preempted = threading.Event()

    # -- talking to the runtime -------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        data = protocol.encode(message)
        # An interruption (SIGUSR1) raised mid-sendall would cut a frame in half and corrupt
        # the stream: hold it until the frame is out (the interrupter signals again anyway).
        signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPT)
        try:
            with self._send_lock:
                self.sock.sendall(data)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPT)

    def emit_log(self, prediction_id: str | None, text: str) -> None:
        if prediction_id is None and self.state == STARTING:
            self.setup_logs.append(text)
        self.send({"ev": protocol.EV_LOG, "id": prediction_id, "data": text})

    def _read_loop(self) -> None:
        while True:
            try:
                message = protocol.recv_message(self.sock)
            except (OSError, protocol.ProtocolError):
                message = None
            if message is None:
                # The runtime is gone: nobody is left to report to, so stop at once.
                os._exit(0)
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == protocol.OP_PREDICT:
            job = Job(
                message["id"],
                message.get("input") or {},
                message.get("context") or {},
                message.get("timeout"),
                message.get("method") or protocol.PREDICT,
            )
            self._submit(job)
        elif op == protocol.OP_CANCEL:
            self._cancel(str(message["id"]))
        elif op == protocol.OP_SHUTDOWN:
            self._shutdown()
        elif op == protocol.OP_HEALTHCHECK:
            threading.Thread(
                target=self._healthcheck, args=(message.get("id"),), daemon=True
            ).start()

    def _submit(self, job: Job) -> None:
        with self._submit_lock:
            if self._draining:  # sent before the runtime heard that this worker drains
                self._return([job])
            elif self._loop is None:
                self.inbox.put(job)
            else:
                self._loop.call_soon_threadsafe(self._spawn, job)

    def _cancel(self, job_id: str) -> None:
        queued = self.inbox.withdraw(job_id)
        if queued is not None:
            self.send({"ev": protocol.EV_DONE, "id": job_id, "status": "canceled", "metrics": {}})
        elif self.runner is not None and self.runner.interrupt(job_id, "canceled"):
            return
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel_waiting, job_id)

    def _healthcheck(self, check_id: Any) -> None:
        """Answer a healthcheck from a thread of its own: the reader must keep reading."""
        error = None
        if self.runner is not None and self.state == READY:
            error = self._model_health(self.runner.predictor, self._loop)
        with contextlib.suppress(OSError):
            self.send({"ev": protocol.EV_HEALTH, "id": check_id, "error": error})

    def _shutdown(self) -> None:
        self._draining = True
        with self._submit_lock:
            if self._loop is None:
                self.inbox.put(None)
            elif self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)

    def _return(self, jobs: list[Job]) -> None:
        """Hand back predictions this worker will not start: the runtime runs them elsewhere."""
        for job in jobs:
            self.send({"ev": protocol.EV_RETURNED, "id": job.id, "reason": PREEMPTED})

    # -- staying in touch whatever predict() does -------------------------------------

    def _heartbeat(self, interval: float) -> None:
        """Prove the process alive; stops when the runtime is gone (the reader exits then)."""
        while True:
            time.sleep(interval)
            try:
                self.send({"ev": protocol.EV_HEARTBEAT})
            except OSError:
                return

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        """Only wakes the preemption thread: a signal handler runs on the main thread, in the
        middle of whatever it was doing (perhaps holding the send lock), so it must not send."""
        self._preempted.set()

    def _await_preemption(self) -> None:
        """Drain on SIGTERM: say DRAINING before handing anything back (the runtime must not
        route a returned prediction here again), then finish what runs and exit."""
        self._preempted.wait()
        with self._submit_lock:
            if self._draining:
                return  # already draining at the runtime's request
            self._draining = True
            self.send({"ev": protocol.EV_STATE, "state": DRAINING})
            if self._loop is None:  # serial mode, or before the concurrent loop runs
                self._return([job for job in self.inbox.drain() if job is not None])
                self.inbox.put(None)
            else:
                self._loop.call_soon_threadsafe(self._return_waiting)

    def _return_waiting(self) -> None:
        """On the loop: hand back the jobs still waiting for a slot, then stop once the
        running ones have finished."""
        waiting = [job for job in self._jobs.values() if job.task is None and not job.interrupt]
        for job in waiting:
            job.interrupt = RETURNED
            self._tasks[job.id].cancel()
        self._return(waiting)
        if self._stop is not None:
            self._stop.set()

    # -- lifecycle --------------------------------------------------------------------

    def run(self, preloaded: Preloaded | None = None) -> int:
        self.logs = LogCapture(self.emit_log)
        self.logs.install()
        self.send({"ev": protocol.EV_STATE, "state": STARTING, "pid": os.getpid()})
        os.chdir(self.spec.root)
        os.environ.update(self.spec.environment)
        self._start_threads()
        timings: dict[str, float] = {}
        if preloaded is None:
            started = time.perf_counter()
            try:
                predictor = load_predictor(self.spec)
            except BaseException:  # a broken package is reported, not raised
                return self._setup_failed()
            timings["load_time"] = round(time.perf_counter() - started, 6)
            setup_done = False
        else:
            predictor, setup_done = preloaded.predictor, preloaded.setup_done
        self.runner = Runner(
            predictor, self.send, self.outputs_dir, self.logs.wait_drained, self.spec.root
        )
        if predictor.is_async or predictor.max_concurrency > 1:
            return asyncio.run(self._serve_concurrent(predictor, timings, setup_done))
        if not setup_done:
            loaded = time.perf_counter()
            try:
                result = predictor.setup()
                if inspect.isawaitable(result):
                    asyncio.run(_awaited(result))
            except BaseException:
                return self._setup_failed()
            timings["setup_time"] = round(time.perf_counter() - loaded, 6)
        if not self._ready(predictor, timings, self._model_health(predictor, None)):
            return 1
        with interruptible(self.runner):
            while (job := self.inbox.get()) is not None:
                self.runner.run_sync_job(job)
        return self._stopped()

    def _start_threads(self) -> None:
        """The control reader, the heartbeat and the preemption watcher (before setup: a
        setup that freezes is recycled too)."""
        interval = float(
            os.environ.get(protocol.HEARTBEAT_ENV) or protocol.DEFAULT_HEARTBEAT_SECONDS
        )
        signal.signal(signal.SIGTERM, self._on_sigterm)
        os.register_at_fork(
            before=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}),
            after_in_parent=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM}),
            after_in_child=_default_sigterm,
        )
        for target, name, args in (
            (self._read_loop, "ember-control", ()),
            (self._heartbeat, "ember-heartbeat", (interval,)),
            (self._await_preemption, "ember-preemption", ()),
        ):
            threading.Thread(target=target, name=name, args=args, daemon=True).start()

    async def _serve_concurrent(
        self, predictor: Predictor, timings: dict[str, float], setup_done: bool
    ) -> int:
        assert self.runner is not None
        if not setup_done:
            loaded = time.perf_counter()
            try:
                result = predictor.setup()
                if inspect.isawaitable(result):
                    await result
            except BaseException:
                return self._setup_failed()
            timings["setup_time"] = round(time.perf_counter() - loaded, 6)
        # In a thread: an async healthcheck runs on this loop, which must stay free for it.
        unhealthy = await asyncio.to_thread(
            self._model_health, predictor, asyncio.get_running_loop()
        )
        if not self._ready(predictor, timings, unhealthy):
            return 1
        self._slots = asyncio.Semaphore(predictor.max_concurrency)
        self._pool = ThreadPoolExecutor(predictor.max_concurrency, thread_name_prefix="predict")
        self._stop = asyncio.Event()
        with self._submit_lock:
            self._loop = asyncio.get_running_loop()
            backlog = self.inbox.drain()
        stop_requested = None in backlog
        for job in backlog:
            if job is not None:
                self._spawn(job)
        if stop_requested or self._draining:
            self._stop.set()
        await self._stop.wait()
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._pool.shutdown(wait=True)
        return self._stopped()

    def _spawn(self, job: Job) -> None:
        assert self.runner is not None
        task = asyncio.get_running_loop().create_task(
            self.runner.run_async_job(job, self._slots, self._pool)
        )
        self._tasks[job.id] = task
        self._jobs[job.id] = job
        task.add_done_callback(lambda done: self._forget(job, done))

    def _forget(self, job: Job, task: asyncio.Task[None]) -> None:
        self._tasks.pop(job.id, None)
        self._jobs.pop(job.id, None)
        if task.cancelled() and job.interrupt != RETURNED:
            # Canceled before its first step: its body, which reports the end, never ran.
            self.send({"ev": protocol.EV_DONE, "id": job.id, "status": "canceled", "metrics": {}})

    def _cancel_waiting(self, job_id: str) -> None:
        task, job = self._tasks.get(job_id), self._jobs.get(job_id)
        if task is None or job is None:
            return
        job.interrupt = job.interrupt or "canceled"  # never handed back once canceled
        task.cancel()

    @staticmethod
    def _model_health(predictor: Predictor, loop: asyncio.AbstractEventLoop | None) -> str | None:
        """The model's own healthcheck (None: healthy, or it has none). Run once set up, its
        answer goes with READY as the first of its checks (Cog serves a model whose check
        fails and says UNHEALTHY; the control plane replaces a replica that keeps failing)."""
        if predictor.healthcheck is None:
            return None
        return run_healthcheck(predictor.healthcheck, loop)

    def _ready(
        self, predictor: Predictor, timings: dict[str, float], unhealthy: str | None
    ) -> bool:
        if unhealthy is not None:
            print(f"setup() finished but the model's healthcheck failed: {unhealthy}")
        try:
            schema = openapi_schema(predictor)
        except BaseException:  # an unsupported signature is a setup failure
            self._setup_failed()
            return False
        self.state = READY
        self.send(
            {
                "ev": protocol.EV_STATE,
                "state": READY,
                "schema": schema,
                "max_concurrency": predictor.max_concurrency,
                "timings": timings,
                "healthcheck": predictor.healthcheck is not None,
                "healthcheck_error": unhealthy,
            }
        )
        return True

    def _setup_failed(self) -> int:
        failure = sys.exc_info()[1]
        assert failure is not None  # called in an except block
        error = model_traceback(failure, self.spec.root)
        print(error, file=sys.stderr, end="")
        self.state = SETUP_FAILED
        self.send(
            {
                "ev": protocol.EV_STATE,
                "state": SETUP_FAILED,
                "error": error,
                "logs": "".join(self.setup_logs),
            }
        )
        return 1

    def _stopped(self) -> int:
        self.state = STOPPED
        self.send({"ev": protocol.EV_STATE, "state": STOPPED})
        return 0


def _default_sigterm() -> None:
    """In a process the predictor forks (a multiprocessing pool's worker): SIGTERM kills, as it
    should; inheriting the drain handler, `pool.terminate()` would wait forever. SIGTERM was
    blocked across the fork, so one sent at once waits for the default action instead of
    reaching the inherited handler. (The worker's threads never block SIGTERM otherwise.)"""
    with contextlib.suppress(ValueError):  # forked from a thread that cannot set handlers
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def main() -> int:
    egress_relay.start()
    sock = socket.socket(fileno=int(os.environ["EMBER_WORKER_FD"]))
    spec = PackageSpec.model_validate_json(os.environ["EMBER_PACKAGE_SPEC"])
    outputs_dir = Path(os.environ["EMBER_OUTPUTS_DIR"])
    code = Worker(sock, spec, outputs_dir).run()
    sys.stdout.flush()
    sys.stderr.flush()
    return code
