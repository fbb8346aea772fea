"""Requests per API token: a token bucket per token, fed with a clock.

A limit reads like `600/min` (also `/s`, `/h`): the bucket holds that many requests and
refills at that rate, so a client may burst up to the whole allowance and then goes at the
steady rate, as OpenAI's and LiteLLM's per-key limits behave. Pure and deterministic: the
gateway asks `take` with the clock's time and answers 429 with `Retry-After` when refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_UNITS |= {"h": 3600.0, "hour": 3600.0}
_LIMIT = re.compile(r"^\s*(?P<count>\d{1,9})\s*/\s*(?P<unit>[a-z]+)\s*$")


@dataclass(frozen=True)
class RateLimit:
    count: int  # requests ...
    per: float  # ... per this many seconds

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """`600/min`, `10/s`, `5000/h`; ValueError with the accepted forms otherwise."""
        match = _LIMIT.match(text.lower())
        if not match or match["unit"] not in _UNITS or int(match["count"]) < 1:
            raise ValueError(
                f"rate limit {text!r} must look like 600/min, 10/s or 5000/h "
                "(a positive number of requests per second, minute or hour)"
            )
        return cls(int(match["count"]), _UNITS[match["unit"]])

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}[self.per]
        return f"{self.count}/{unit}"

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.count / self.per


@dataclass
class _Bucket:
    limit: RateLimit
    level: float
    updated: float


class RateLimiter:
    """One bucket per key (a token id). Keys without a limit are never counted."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, limit: RateLimit | None, now: float) -> float:
        """Count one request; 0 if allowed, else the seconds until one would be."""
        if limit is None:
            self._buckets.pop(key, None)
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None or bucket.limit != limit:  # new, or its limit was changed
            bucket = self._buckets[key] = _Bucket(limit, float(limit.count), now)
        bucket.level = min(float(limit.count), bucket.level + (now - bucket.updated) * limit.rate)
        bucket.updated = now
        if bucket.level >= 1.0:
            bucket.level -= 1.0
            return 0.0
        return (1.0 - bucket.level) / limit.rate

    def forget(self, key: str) -> None:
        """Drop a revoked token's bucket."""
        self._buckets.pop(key, None)


def retry_after(seconds: float) -> str:
    """The `Retry-After` header's whole seconds (at least 1)."""
    return str(max(1, math.ceil(seconds)))
