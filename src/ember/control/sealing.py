"""Secrets at rest: what Ember must keep but nobody may read from its database or its answers.

- The webhook signing secret and the URL-signing key are stored encrypted (they must be read
  back to sign, so hashing them, as API tokens are, would not do).
- A model's `Secret` inputs (an API key a predictor calls out with) are stored encrypted, so a
  prediction interrupted by a restart can still run, and are redacted wherever a prediction
  is shown: API answers, webhooks, the dashboard, and its logs if the model prints them.

Encryption is Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`). The key is
`EMBER_SECRET_KEY` when set (from a secret manager, shared by every server of one database),
else `secret.key` in the data dir, made on first start and readable only by its owner: a
copied database or a backup of it then holds no secret in clear.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

KEY_ENV = "EMBER_SECRET_KEY"
KEY_FILE = "secret.key"
SEALED = "$ember_sealed"  # how a stored input marks an encrypted value: {SEALED: token}
REDACTED = "**********"  # what Cog prints for a Secret, and what Ember shows for one
_FERNET_PREFIX = "gAAAAA"  # every Fernet token starts so (version byte and timestamp)


class SealError(RuntimeError):
    """A stored secret cannot be read with this key."""


class Sealer:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise SealError(
                f"{KEY_ENV} is not a Fernet key (32 url-safe base64-encoded bytes); make one "
                'with `python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"`'
            ) from exc

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> Sealer:
        """The key from the environment, else the data dir's key file (made if missing)."""
        if os.environ.get(KEY_ENV):
            return cls(os.environ[KEY_ENV].encode())
        path = data_dir / KEY_FILE
        if not path.exists():
            key = Fernet.generate_key()
            # Created readable by its owner only, in one step: never briefly world-readable.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(key)
        return cls(path.read_bytes().strip())

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def unseal(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SealError(
                f"a stored secret cannot be decrypted with this key: {KEY_ENV} (or "
                f"{KEY_FILE} in the data dir) is not the one it was stored with"
            ) from None

    def read_setting(self, stored: str) -> tuple[str, bool]:
        """(the clear value, whether it was stored in clear by an older Ember and should be
        sealed now)."""
        if stored.startswith(_FERNET_PREFIX):
            return self.unseal(stored), False
        return stored, True

    def seal_fields(self, values: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
        """`values` with the named fields encrypted, as a prediction's input is stored."""
        sealed = dict(values)
        for name in fields:
            if name in sealed and sealed[name] is not None:
                sealed[name] = {SEALED: self.seal(json.dumps(sealed[name]))}
        return sealed

    def unseal_fields(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
        """(the input in clear, the names of the fields that were sealed)."""
        clear = dict(values)
        names = []
        for name, value in values.items():
            if isinstance(value, dict) and set(value) == {SEALED}:
                clear[name] = json.loads(self.unseal(value[SEALED]))
                names.append(name)
        return clear, frozenset(names)


def secret_fields(openapi_schema: Mapping[str, Any]) -> frozenset[str]:
    """The inputs a version declares as `Secret` (Cog marks them `x-cog-secret`)."""
    schemas = openapi_schema.get("components", {}).get("schemas", {})
    properties = schemas.get("Input", {}).get("properties", {})
    return frozenset(name for name, spec in properties.items() if _is_secret(spec))


def _is_secret(spec: Any) -> bool:
    if not isinstance(spec, dict):
        return False
    return bool(
        spec.get("x-cog-secret") or (spec.get("format") == "password" and spec.get("writeOnly"))
    )


def redact(values: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """`values` with the named fields shown as Cog shows a Secret."""
    shown = dict(values)
    for name in fields:
        if shown.get(name) is not None:
            shown[name] = REDACTED
    return shown


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of a secret value replaced (e.g. a model that logs its key).

    Values shorter than 4 characters are left: replacing them would garble ordinary text and
    hide nothing worth hiding."""
    for secret in secrets:
        if len(secret) >= 4 and secret in text:
            text = text.replace(secret, REDACTED)
    return text
