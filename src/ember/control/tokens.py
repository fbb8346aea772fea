"""API tokens: who a request acts for, and how often it may ask.

Tokens are stored as SHA-256 hashes; what a token resolves to is cached in memory by hash
(never the token itself). Revocation is checked on every use, cached or not: a revoked token's
id joins a denylist, so a database lookup that was in flight while it was revoked cannot put
it back (it did, before: 4 in 100 races kept a revoked token working for good). The cache is
two bounded LRUs, known tokens and unknown ones, so a flood of made-up tokens churns only the
second and never evicts the tokens in use. Each token's rate limit (its own, or
`EMBER_RATE_LIMIT` for tokens without one, admin tokens excepted) is a token bucket counted on
every request, before any work is done for it.
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
from collections.abc import Callable
from typing import Any

from ember.control.access import Principal
from ember.control.accounts import DEFAULT_ACCOUNT
from ember.control.errors import RateLimited
from ember.control.policies.ratelimit import RateLimit, RateLimiter, retry_after
from ember.store import models as records
from ember.store.repository import Store, hash_token

CACHE_LIMIT = 10_000  # known tokens remembered (least recently used forgotten first)
UNKNOWN_LIMIT = 4_096  # tokens that matched nothing, remembered to spare the database


class Tokens:
    def __init__(
        self, store: Store, clock: Callable[[], float], admin_token: str | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.admin_token = admin_token  # EMBER_ADMIN_TOKEN: never stored
        self.rate_limiter = RateLimiter()
        # For tokens without a limit of their own, except admin tokens (EMBER_RATE_LIMIT).
        self.default_rate_limit = (
            RateLimit.parse(os.environ["EMBER_RATE_LIMIT"])
            if os.environ.get("EMBER_RATE_LIMIT")
            else None
        )
        # By the token's SHA-256 (never the token itself), and each token's rate limit.
        self._principals: collections.OrderedDict[str, Principal] = collections.OrderedDict()
        self._unknown: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._revoked: set[str] = set()  # ids of tokens revoked while this server runs
        self._limits: dict[str, RateLimit | None] = {}

    async def first_admin_token(self) -> str | None:
        """A new admin token the first time Ember starts (to print once), else None."""
        if await asyncio.to_thread(self.store.count_tokens) or self.admin_token:
            return None
        _, token = await asyncio.to_thread(self.store.create_token, "admin", DEFAULT_ACCOUNT)
        return token

    async def authenticate(self, token: str) -> Principal | None:
        if self.admin_token and secrets.compare_digest(token, self.admin_token):
            return Principal(owner=DEFAULT_ACCOUNT, scope="admin")
        digest = hash_token(token)
        cached = self._principals.get(digest)
        if cached is not None:
            if cached.token_id in self._revoked:
                del self._principals[digest]
                return None
            self._principals.move_to_end(digest)
            return cached
        if digest in self._unknown:
            self._unknown.move_to_end(digest)
            return None
        record = await asyncio.to_thread(self.store.token_by_secret, token)
        # Checked after the lookup: the token may have been revoked while it ran.
        if record is None or record.id in self._revoked:
            _remember(self._unknown, digest, None, UNKNOWN_LIMIT)
            return None
        principal = Principal(record.owner, record.scope, record.id)
        self._limits[record.id] = self._limit_of(record)
        _remember(self._principals, digest, principal, CACHE_LIMIT)
        return principal

    def _limit_of(self, record: records.Token) -> RateLimit | None:
        if record.rate_limit:
            return RateLimit.parse(record.rate_limit)
        return None if record.scope == "admin" else self.default_rate_limit

    def count_request(self, principal: Principal) -> None:
        """Count one request of the token; RateLimited if it is over its limit."""
        limit = self._limits.get(principal.token_id) if principal.token_id else None
        wait = self.rate_limiter.take(principal.key(), limit, self.clock())
        if wait > 0:
            seconds = retry_after(wait)
            raise RateLimited(
                f"this token may make {limit} requests; try again in {seconds} s "
                "(an admin can raise its limit: `ember token create --rate-limit`)",
                int(seconds),
            )

    async def create(
        self, name: str, owner: str, scope: str = "admin", rate_limit: str | None = None
    ) -> tuple[str, str]:
        """(its id, for budgets and reports; the token itself, shown once)."""
        record, token = await asyncio.to_thread(
            self.store.create_token, name, owner, scope, rate_limit=rate_limit
        )
        return record.id, token

    async def all(self) -> list[records.Token]:
        return list(await asyncio.to_thread(self.store.tokens))

    async def names(self) -> dict[str, str]:
        """Each token's name by its id (reports show names, budgets check ids)."""
        return await asyncio.to_thread(self.store.token_names)

    async def revoke(self, token_id: str) -> bool:
        """Delete a token; requests that present it fail from now on (the cache forgets it)."""
        if not await asyncio.to_thread(self.store.delete_token, token_id):
            return False
        self._revoked.add(token_id)
        for digest, found in list(self._principals.items()):
            if found.token_id == token_id:
                del self._principals[digest]
        self._limits.pop(token_id, None)
        self.rate_limiter.forget(token_id)
        return True


def _remember(cache: collections.OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    """Put `key` in a bounded LRU, forgetting the least recently used beyond `limit`."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
