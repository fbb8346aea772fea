"""Token authentication against a real store (SQLite): revocation holds whatever is in flight,
and the cache cannot be flushed by made-up tokens (issue 18, item 2)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from ember.control.tokens import UNKNOWN_LIMIT, Tokens
from ember.store.db import connect, migrate, sqlite_url
from ember.store.repository import Store


class HeldLookups(Store):
    """The real store, whose token lookups wait (in their worker thread, after reading the
    database) until the test lets them return: a lookup in flight, made deterministic."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.hold = threading.Event()
        self.hold.set()
        self.lookups = 0

    def token_by_secret(self, token: str) -> Any:
        found = super().token_by_secret(token)
        self.lookups += 1
        self.hold.wait(10)
        return found


def _tokens(tmp_path: Path) -> tuple[Tokens, HeldLookups]:
    engine = connect(sqlite_url(tmp_path))
    migrate(engine)
    store = HeldLookups(engine)
    return Tokens(store, time.monotonic), store


def test_a_token_revoked_while_its_lookup_runs_stays_revoked(tmp_path: Path) -> None:
    async def go() -> None:
        tokens, store = _tokens(tmp_path)
        token_id, token = await tokens.create("victim", "alice", "deploy")
        store.hold.clear()
        in_flight = asyncio.ensure_future(tokens.authenticate(token))  # reads the token...
        while store.lookups == 0:
            await asyncio.sleep(0.01)
        assert await tokens.revoke(token_id)  # ...which is revoked meanwhile
        store.hold.set()
        assert await in_flight is None
        for _ in range(3):  # and never comes back from the cache
            assert await tokens.authenticate(token) is None

    asyncio.run(go())


def test_made_up_tokens_cannot_flush_the_cache_of_real_ones(tmp_path: Path) -> None:
    async def go() -> None:
        tokens, store = _tokens(tmp_path)
        _, token = await tokens.create("busy", "alice", "predict")
        assert (await tokens.authenticate(token)) is not None
        before = store.lookups
        for number in range(UNKNOWN_LIMIT + 100):
            assert await tokens.authenticate(f"r8_made_up_{number}") is None
        assert (await tokens.authenticate(token)) is not None
        assert store.lookups == before + UNKNOWN_LIMIT + 100  # the real one was still cached

    asyncio.run(go())
