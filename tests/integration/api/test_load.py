"""Load and soak, shortened for CI (issue 9): bench/load.py's phases, with its own functions,
against one real `ember serve`. 1,000 predictions at once held at zero replicas, 2,000 queued
behind a busy replica (twice), then a 20 s soak at 50 predictions/s; about 45 s on 2 cores.
The full run, its figures and what each phase measures: bench/README.md.

Bounds are generous where the machine's noise could move a figure (RSS in whole arenas, fds
as replicas come and go) and absent where only noise would (latency).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.support.paths import BENCH

sys.path.insert(0, str(BENCH))

import load

CONCURRENT = 1000
QUEUED = 2000
PLAN = load.Plan(
    concurrent=CONCURRENT,
    queued=QUEUED,
    queue_rounds=2,
    soak=20,
    rate=50,
    warmup=3,
    sample_every=1,
    max_instances=4,
)
# 1,000 soak predictions: a leak of 2 KiB each (about one prediction's state) is 2 MiB.
SOAK_RSS_GROWTH_MIB = 2.0


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[load.Results]:
    """The shortened run, once: each test below checks one phase of it."""
    load.raise_fd_limit(2 * CONCURRENT + 1024)
    server = load.LoadServer(tmp_path_factory.mktemp("load"))
    try:
        yield load.run_phases(server, PLAN, say=lambda line: None)
    finally:
        server.close()


def test_burst_at_zero_replicas_is_held_and_completes(results: load.Results) -> None:
    burst = results.burst
    assert burst is not None
    outcomes = burst.outcomes
    assert not outcomes.non2xx and not outcomes.errors, (outcomes.non2xx, outcomes.errors)
    # Every request waited at once, with no replica ready: 1,000 open connections at the server.
    assert burst.held == CONCURRENT
    assert burst.fds_peak >= CONCURRENT
    assert outcomes.succeeded == CONCURRENT and outcomes.lost == 0
    assert len(outcomes.latencies) == CONCURRENT  # each answered with its own output
    assert 1 <= burst.replicas_started <= PLAN.max_instances


def test_deep_queue_is_bounded_in_memory_and_completes(results: load.Results) -> None:
    assert len(results.queues) == PLAN.queue_rounds
    for queue in results.queues:
        outcomes = queue.outcomes
        assert not outcomes.non2xx and not outcomes.errors, (outcomes.non2xx, outcomes.errors)
        assert queue.queued == QUEUED
        assert queue.overflow_429 == load.OVERFLOW  # beyond queue_limit: refused, not held
        assert outcomes.succeeded == len(outcomes.accepted) == QUEUED + load.BLOCKERS
        assert outcomes.lost == 0
        # Measured: 0.3-3.4 KiB per queued prediction.
        assert queue.rss_per_queued <= load.QUEUED_BYTES_BOUND, queue.summary()


def test_soak_grows_neither_memory_nor_file_descriptors(results: load.Results) -> None:
    soak = results.soak
    assert soak is not None
    outcomes = soak.outcomes
    assert not outcomes.non2xx and not outcomes.errors, (outcomes.non2xx, outcomes.errors)
    assert outcomes.sent >= PLAN.rate * (PLAN.warmup + PLAN.soak) * 0.9
    assert outcomes.succeeded == outcomes.sent and outcomes.lost == 0
    # The server's own fds: client connections come and go with the load.
    assert soak.fds(first=False) <= soak.fds(first=True) + load.SOAK_FDS_SLACK, soak.samples
    assert soak.fds_growth <= load.SOAK_FDS_SLACK, soak.samples
    growth = soak.rss_mib(first=False) - soak.rss_mib(first=True)
    assert growth <= SOAK_RSS_GROWTH_MIB, soak.samples
