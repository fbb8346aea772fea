"""Each account's secrets: the key that signs Ember's URLs and every account's webhook
signing secret, kept sealed in the settings table.

Each account signs its webhooks with its own secret, so one tenant cannot forge calls to
another's receivers. The default account's ("ember", the first admin token's) predates
per-account secrets and keeps the one it had.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from ember.control.sealing import Sealer
from ember.control.signing import UrlSigner
from ember.control.webhooks import new_signing_secret
from ember.store.repository import Store

DEFAULT_ACCOUNT = "ember"


class Accounts:
    def __init__(self, store: Store, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer
        self.signer = UrlSigner()  # its key is loaded by `load`
        self.webhook_secret = ""  # the default account's; others: _webhook_secrets
        self._webhook_secrets: dict[str, str] = {}

    async def load(self) -> None:
        """The URL-signing key and the default account's webhook secret (made the first
        time Ember starts)."""
        key = await asyncio.to_thread(
            self._secret_setting, "url_signing_key", lambda: secrets.token_hex(32)
        )
        self.signer.use_key(bytes.fromhex(key))
        self.webhook_secret = await asyncio.to_thread(
            self._secret_setting, "webhook_secret", new_signing_secret
        )

    def _secret_setting(self, key: str, make: Callable[[], str]) -> str:
        """A setting kept sealed (made with `make()` the first time); one an older Ember
        stored in clear is sealed now."""
        stored = self.store.setting_or_create(key, lambda: self.sealer.seal(make()))
        value, in_clear = self.sealer.read_setting(stored)
        if in_clear:
            self.store.set_setting(key, self.sealer.seal(value))
        return value

    async def load_webhook_secret(self, owner: str) -> str:
        """The account's webhook signing secret, made (and kept sealed) the first time."""
        if owner == DEFAULT_ACCOUNT:
            return self.webhook_secret
        if owner not in self._webhook_secrets:
            self._webhook_secrets[owner] = await asyncio.to_thread(
                self._secret_setting, f"webhook_secret:{owner}", new_signing_secret
            )
        return self._webhook_secrets[owner]

    def webhook_secret_for(self, owner: str) -> str:
        """For the webhook sender: the secret `load_webhook_secret` loaded (the prediction's
        intake did), else the default one."""
        if owner == DEFAULT_ACCOUNT:
            return self.webhook_secret
        return self._webhook_secrets.get(owner, self.webhook_secret)
