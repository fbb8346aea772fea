"""A predictor's own healthcheck (Cog's `healthcheck()`, Truss's `is_healthy()`), run beside
whatever predictions are running.

Why a thread and a deadline: the check is asked for while predict() may hold the main thread
(or the event loop's slots), and a check that hangs must read as unhealthy rather than hang
the caller. Cog's rules, so a model behaves the same on either platform: 5 seconds, a sync
check runs in a thread of its own, an async one on the predictor's event loop where it has one;
only `False` or an exception is unhealthy (any other value, `None` included, is healthy); the
messages are coglet's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Callable
from typing import Any

TIMEOUT_SECONDS = 5.0
_TIMEOUTS = (TimeoutError, concurrent.futures.TimeoutError, asyncio.TimeoutError)


def run_healthcheck(
    check: Callable[[], Any],
    loop: asyncio.AbstractEventLoop | None,
    timeout: float = TIMEOUT_SECONDS,
) -> str | None:
    """Run `check` within `timeout` seconds: None when healthy, else why not."""
    try:
        if inspect.iscoroutinefunction(check):
            result = _await(check(), loop, timeout)
        else:
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="healthcheck")
            try:
                result = pool.submit(check).result(timeout)
            finally:
                pool.shutdown(wait=False)  # a check still running is left to finish alone
            if inspect.isawaitable(result):
                result = _await(result, loop, timeout)
    except _TIMEOUTS:
        return f"Healthcheck failed: user-defined healthcheck timed out after {timeout:.1f} seconds"
    except BaseException as exc:  # the model's own exception is its answer
        return f"Healthcheck failed: {type(exc).__name__}: {exc}"
    if result is False:
        return "Healthcheck failed: user-defined healthcheck returned False"
    return None


def _await(awaitable: Any, loop: asyncio.AbstractEventLoop | None, timeout: float) -> Any:
    """On the predictor's loop where it runs one (its state may be bound to it), else on a
    loop of this thread's own."""
    bounded = asyncio.wait_for(awaitable, timeout)
    if loop is not None and loop.is_running():
        return asyncio.run_coroutine_threadsafe(bounded, loop).result(timeout + 1.0)
    return asyncio.run(bounded)
