"""Signed URLs: let a replica download an uploaded file, or anyone holding the link read an
output file, without a token and only until the link expires."""

from __future__ import annotations

import hashlib
import hmac
import time


class UrlSigner:
    def __init__(self, key: bytes = b"") -> None:
        self._key = key

    def use_key(self, key: bytes) -> None:
        """The key, once loaded from the database at start (links signed before then die)."""
        self._key = key

    def _mac(self, path: str, expires: int) -> str:
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, path: str, ttl: float = 24 * 3600) -> str:
        """`path` with `expires` and `signature` query parameters."""
        expires = int(time.time() + ttl)
        return f"{path}?expires={expires}&signature={self._mac(path, expires)}"

    def verify(self, path: str, expires: str | None, signature: str | None) -> bool:
        if not expires or not signature or not expires.isdigit():
            return False
        if int(expires) < time.time():
            return False
        return hmac.compare_digest(self._mac(path, int(expires)), signature)
