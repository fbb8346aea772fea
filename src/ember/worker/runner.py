"""Runs predictions inside the replica process.

Two execution modes, chosen from the predictor:
- serial: a synchronous predict() with concurrency 1 runs on the main thread. Cancellation
  and timeouts interrupt it with a signal, which breaks out of sleeps and blocking calls the
  way Cog does, raising `CancelationException` in the predictor.
- concurrent: an async predict(), or a synchronous one allowed several at once, runs from an
  asyncio loop on the main thread (sync calls in a thread pool); up to max_concurrency run
  together and cancellation is task cancellation.
The control connection is read on its own thread so a busy predictor never stops the worker
from hearing "cancel".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import inspect
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from ember import scope
from ember.engines.base import RequestError
from ember.packages.predictor import Predictor, is_async_callable, validated_inputs
from ember.types import CancelationException
from ember.worker import protocol
from ember.worker.inputs import InputFileError, materialize
from ember.worker.outputs import OutputEncoder
from ember.worker.protocol import PREDICT
from ember.worker.tracebacks import model_traceback

Send = Callable[[dict[str, Any]], None]
SIGNAL_RETRY_SECONDS = 0.1
# A job's `interrupt` when the worker handed it back unstarted (draining): the worker has
# reported it as returned, so it ends without a `done` of its own.
RETURNED = "returned"


def failure_message(error: BaseException) -> str:
    """A failed prediction's error text. An ordinary exception's message stands alone (what
    Replicate and Cog's Python server always showed, and what clients match on). An exception
    outside `Exception` (`sys.exit()`'s SystemExit, KeyboardInterrupt) is named as coglet names
    every error, `Type: message`: `1` alone would not say the model called sys.exit(1)."""
    message = str(error)
    if isinstance(error, Exception):
        return message or type(error).__name__
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


@dataclass
class Job:
    """One prediction while the worker holds it."""

    id: str
    input: dict[str, Any]
    context: dict[str, Any]
    timeout: float | None
    # "predict", or the OpenAI route the predictor serves itself ("chat.completions", ...).
    method: str = PREDICT
    scope: scope.Scope = field(init=False)
    interrupt: str | None = None  # "canceled", "timeout" or RETURNED once asked to stop
    thread_id: int | None = None
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        # Exactly the caller's context, as coglet gives it (empty when none was sent).
        self.scope = scope.Scope(self.id, dict(self.context))


def _validation_errors(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    return [{"loc": ["input", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _describe_validation(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'input'}: {e['msg']}" for e in errors)


class Runner:
    """Executes jobs for one loaded predictor and reports every event through `send`."""

    def __init__(
        self,
        predictor: Predictor,
        send: Send,
        outputs_dir: Path,
        drain_logs: Callable[[], None] = lambda: None,
        package_root: str = ".",
    ) -> None:
        self.predictor = predictor
        self.send = send
        self.outputs_dir = outputs_dir
        self.drain_logs = drain_logs
        self.package_root = package_root  # shortened in the tracebacks it logs
        self.active: dict[str, Job] = {}
        self._lock = threading.Lock()
        scope.set_fallback(self._sole_active_scope)

    # -- shared steps -----------------------------------------------------------------

    def _sole_active_scope(self) -> scope.Scope | None:
        jobs = list(self.active.values())
        return jobs[0].scope if len(jobs) == 1 else None

    @staticmethod
    def _scratch(job: Job) -> Path:
        """The job's folder for fetched input files, created only if a file input needs it.

        Under the replica's private TMPDIR, which its runtime removes when the replica exits,
        so files survive neither a crash nor a kill. Not created eagerly: a mkdtemp/rmtree
        pair costs more than the rest of a trivial prediction.
        """
        return Path(tempfile.gettempdir()) / f"inputs-{job.id}"

    def prepare(self, job: Job, scratch: Path) -> dict[str, Any] | None:
        """Validated keyword arguments, or None after reporting an input error.

        An OpenAI request's body was validated by the gateway; it goes to its handler whole.
        """
        if job.method != PREDICT:
            if job.method not in self.predictor.openai:
                self._done(job, "failed", error=f"this model does not serve {job.method}")
                return None
            return {"request": job.input}
        try:
            raw = materialize(self.predictor, job.input, scratch)
            values = validated_inputs(self.predictor, raw)
        except pydantic.ValidationError as exc:
            errors = _validation_errors(exc)
            self._done(
                job,
                "failed",
                error=f"invalid input: {_describe_validation(errors)}",
                validation=errors,
            )
            return None
        except InputFileError as exc:
            field_name = str(exc).split(":", 1)[0]
            errors = [{"loc": ["input", field_name], "msg": str(exc), "type": "file"}]
            self._done(job, "failed", error=f"invalid input: {exc}", validation=errors)
            return None
        if self.predictor.call_with_input_dict:
            return {"model_input": values}
        return values

    def is_async(self, job: Job) -> bool:
        if job.method != PREDICT:
            return is_async_callable(self.predictor.openai[job.method])
        return self.predictor.is_async

    def call(self, job: Job, values: dict[str, Any]) -> Any:
        if job.method != PREDICT:
            return self.predictor.openai[job.method](values["request"])
        if self.predictor.call_with_input_dict:
            return self.predictor.predict(values["model_input"])
        return self.predictor.predict(**values)

    def _done(self, job: Job, status: str, **fields: Any) -> None:
        message = {
            "ev": protocol.EV_DONE,
            "id": job.id,
            "status": status,
            "metrics": job.scope.metrics,
            **fields,
        }
        self.send(message)

    def _log_traceback(self, job: Job, error: BaseException) -> None:
        token = scope.enter(job.scope)
        try:
            print(model_traceback(error, self.package_root), file=sys.stderr, end="")
        finally:
            scope.leave(token)

    def _finish(self, job: Job, started: float, output: Any, error: BaseException | None) -> None:
        job.scope.metrics["predict_time"] = round(time.perf_counter() - started, 6)
        self.drain_logs()
        if error is None:
            self._done(job, "succeeded", output=output)
        elif job.interrupt == "timeout":
            self._done(job, "failed", error=f"prediction timed out after {job.timeout:g} s")
        elif job.interrupt == "canceled":
            self._done(job, "canceled")
        elif isinstance(error, RequestError):
            # The engine could not serve the request as asked: the caller's to fix (400).
            where = ["body", error.param] if error.param else ["body"]
            errors = [{"loc": where, "msg": str(error), "type": "invalid_request_error"}]
            self._done(job, "failed", error=str(error), validation=errors)
        else:
            self._log_traceback(job, error)
            self._done(job, "failed", error=failure_message(error))

    # -- serial mode ------------------------------------------------------------------

    @contextlib.contextmanager
    def _running(self, job: Job) -> Iterator[tuple[Path, OutputEncoder]]:
        """A job's life in the worker: its scope, its place in `active`, its scratch files.

        Set `job.thread_id` or `job.task` before entering, so `interrupt` never sees an active
        job it cannot reach.
        """
        scratch = self._scratch(job)
        job.scope.on_metric = lambda name, value, mode: self.send(
            {"ev": protocol.EV_METRIC, "id": job.id, "name": name, "value": value, "mode": mode}
        )
        token = scope.enter(job.scope)
        with self._lock:
            self.active[job.id] = job
        try:
            yield scratch, OutputEncoder(self.outputs_dir / job.id)
        finally:
            with self._lock:
                self.active.pop(job.id, None)
            scope.leave(token)
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)

    def run_sync_job(self, job: Job) -> None:
        """Run one job on the calling (main) thread; signals may interrupt it."""
        job.thread_id = threading.get_ident()
        with self._running(job) as (scratch, encoder):
            timer = self._start_timer(job)
            started = time.perf_counter()
            try:
                values = self.prepare(job, scratch)
                if values is None:
                    return
                self.send({"ev": protocol.EV_STARTED, "id": job.id})
                output, error = None, None
                try:
                    output = self.call_user_code(job, values, encoder)
                except BaseException as exc:  # every failure is reported
                    error = exc
                self._finish(job, started, output, error)
            finally:
                if timer:
                    timer.cancel()

    def call_user_code(self, job: Job, values: dict[str, Any], encoder: OutputEncoder) -> Any:
        """The only frame in which a serial prediction may be interrupted (see on_signal)."""
        if job.interrupt:  # asked to stop before predict() even began
            raise CancelationException(job.interrupt)
        return self.encode_result(job, self.call(job, values), encoder)

    def _emit_item(self, job: Job, item: Any, encoder: OutputEncoder) -> Any:
        encoded = self._encode(job, item, encoder)
        self.send({"ev": protocol.EV_OUTPUT, "id": job.id, "value": encoded})
        return encoded

    @staticmethod
    def _encode(job: Job, value: Any, encoder: OutputEncoder) -> Any:
        # An OpenAI handler's objects are JSON already: no walk looking for files in them.
        return value if job.method != PREDICT else encoder.encode(value)

    def _collect(self, job: Job, items: list[Any]) -> list[Any] | None:
        """A streamed output's final value: the list of its items, as in Cog. An OpenAI
        stream's chunks went out one by one and are not sent again (a long answer or a batch
        of embeddings would be carried, and kept, twice)."""
        return items if job.method == PREDICT else None

    def _emit_all(self, job: Job, items: Iterator[Any], encoder: OutputEncoder) -> Any:
        """Send each item as it comes. The iterator is closed however this ends (canceled, a
        send failing): a generator suspended at a yield may hold a lock or a model's
        context, which must not wait for the garbage collector."""
        try:
            return self._collect(job, [self._emit_item(job, item, encoder) for item in items])
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    async def _emit_all_async(
        self, job: Job, items: AsyncIterator[Any], encoder: OutputEncoder
    ) -> Any:
        try:
            emitted = [self._emit_item(job, item, encoder) async for item in items]
            return self._collect(job, emitted)
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                await close()

    def encode_result(self, job: Job, result: Any, encoder: OutputEncoder) -> Any:
        """The encoded output of a synchronous call, streaming iterator items as they come."""
        if inspect.isawaitable(result) or isinstance(result, AsyncIterator):
            return asyncio.run(self.encode_result_async(job, result, encoder))
        if isinstance(result, Iterator):
            return self._emit_all(job, result, encoder)
        return self._encode(job, result, encoder)

    async def encode_result_async(self, job: Job, result: Any, encoder: OutputEncoder) -> Any:
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, AsyncIterator):
            return await self._emit_all_async(job, result, encoder)
        if isinstance(result, Iterator):
            return self._emit_all(job, result, encoder)
        return self._encode(job, result, encoder)

    def _start_timer(self, job: Job) -> threading.Timer | None:
        if not job.timeout:
            return None
        timer = threading.Timer(job.timeout, self.interrupt, args=(job.id, "timeout"))
        timer.daemon = True
        timer.start()
        return timer

    def interrupt(self, job_id: str, reason: str) -> bool:
        """Ask a running job to stop. Returns False when no such job is running."""
        with self._lock:
            job = self.active.get(job_id)
            if job is None or job.interrupt:
                return job is not None
            job.interrupt = reason
            if job.thread_id == threading.main_thread().ident:
                self._signal_until_stopped(job)
            elif job.thread_id is not None:
                # A synchronous predict() on a pool thread: raise in that thread (at its next
                # bytecode; a long C call finishes first, and the runtime's watchdog covers it).
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(job.thread_id), ctypes.py_object(CancelationException)
                )
            elif job.task is not None:  # an async predict(), or a job waiting for a thread
                loop = job.task.get_loop()
                loop.call_soon_threadsafe(job.task.cancel)
        return True

    def _signal_until_stopped(self, job: Job) -> None:
        """Signal the main thread, and again every 100 ms while the job still runs.

        One signal is not enough: if it lands between Python's signal check and the start of a
        blocking call (e.g. the sleep syscall), the call is not interrupted and the handler only
        runs after it returns. Repeating closes that window; stray signals are ignored.
        """
        if self.active.get(job.id) is not job:
            return
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
        retry = threading.Timer(SIGNAL_RETRY_SECONDS, self._signal_until_stopped, args=(job,))
        retry.daemon = True
        retry.start()

    def on_signal(self, signum: int, frame: Any) -> None:
        """SIGUSR1 handler: raise in the main thread if its job was asked to stop.

        It raises only when the signal interrupted code running inside `call_user_code`, whose
        caller catches everything; anywhere else (sending events, bookkeeping) raising would
        kill the worker, and `call_user_code` checks for a pending interrupt on entry anyway.
        Takes no lock: the main thread may hold one when the handler runs.
        """
        job = next(
            (j for j in list(self.active.values()) if j.thread_id == threading.get_ident()), None
        )
        if job is None or not job.interrupt:
            return
        while frame is not None:
            if frame.f_code is _USER_CODE:
                raise CancelationException(job.interrupt)
            frame = frame.f_back

    # -- concurrent mode --------------------------------------------------------------

    async def run_async_job(
        self, job: Job, slots: asyncio.Semaphore, pool: ThreadPoolExecutor
    ) -> None:
        try:
            await slots.acquire()
        except asyncio.CancelledError:  # canceled (or handed back) while waiting for a slot
            if job.interrupt != RETURNED:
                self._done(job, "canceled", error=None)
            return
        try:
            await self._run_with_slot(job, pool)
        finally:
            slots.release()

    async def _run_with_slot(self, job: Job, pool: ThreadPoolExecutor) -> None:
        job.task = asyncio.current_task()
        with self._running(job) as (scratch, encoder):
            started = time.perf_counter()
            values = self.prepare(job, scratch)
            if values is None:
                return
            self.send({"ev": protocol.EV_STARTED, "id": job.id})
            output, error = None, None
            try:
                if self.is_async(job):
                    # wait_for, not asyncio.timeout: model environments may run Python 3.10.
                    output = await asyncio.wait_for(
                        self.encode_result_async(job, self.call(job, values), encoder),
                        job.timeout,
                    )
                else:
                    # Timed by a timer that interrupts the thread itself: an asyncio timeout
                    # would only stop waiting, and report a result while the thread runs on.
                    timer = self._start_timer(job)
                    try:
                        output = await asyncio.get_running_loop().run_in_executor(
                            pool, self._threaded_call, job, values, encoder
                        )
                    finally:
                        if timer:
                            timer.cancel()
            except (TimeoutError, asyncio.TimeoutError) as exc:  # noqa: UP041 - two until 3.11
                job.interrupt = job.interrupt or "timeout"
                error = exc
            except BaseException as exc:  # every failure is reported
                error = exc
            self._finish(job, started, output, error)

    def _threaded_call(self, job: Job, values: dict[str, Any], encoder: OutputEncoder) -> Any:
        token = scope.enter(job.scope)
        with self._lock:
            job.thread_id = threading.get_ident()
        try:
            if job.interrupt:  # asked to stop before this thread took it
                raise CancelationException(job.interrupt)
            return self.encode_result(job, self.call(job, values), encoder)
        finally:
            with self._lock:
                job.thread_id = None
                # An interruption that arrived too late must not hit this thread's next job.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(threading.get_ident()), None
                )
            scope.leave(token)


_USER_CODE = Runner.call_user_code.__code__


class JobQueue:
    """FIFO of jobs for the serial mode, from which a waiting job can be withdrawn."""

    def __init__(self) -> None:
        self._items: collections.deque[Job | None] = collections.deque()
        self._ready = threading.Condition()

    def put(self, job: Job | None) -> None:
        with self._ready:
            self._items.append(job)
            self._ready.notify()

    def get(self) -> Job | None:
        with self._ready:
            while not self._items:
                self._ready.wait()
            return self._items.popleft()

    def drain(self) -> list[Job | None]:
        """Take everything queued (used when the concurrent mode takes over)."""
        with self._ready:
            items = list(self._items)
            self._items.clear()
            return items

    def withdraw(self, job_id: str) -> Job | None:
        with self._ready:
            for job in self._items:
                if job is not None and job.id == job_id:
                    self._items.remove(job)
                    return job
        return None


@contextlib.contextmanager
def interruptible(runner: Runner) -> Iterator[None]:
    previous = signal.signal(signal.SIGUSR1, runner.on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)
