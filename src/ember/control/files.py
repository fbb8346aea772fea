"""Files: what clients upload as prediction inputs, and what predictions wrote as outputs.

An uploaded file is linked to by its API URL; a replica cannot present a token, so such
links are swapped for signed download URLs before an input reaches it. Output files are
read through signed links too (anyone holding the link, until it expires).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ember.control.errors import NotFound
from ember.control.predictions import PredictionState
from ember.control.signing import UrlSigner
from ember.packages.archive import sha256_file
from ember.store import models as records
from ember.store.repository import Store


class Files:
    def __init__(
        self, store: Store, files_dir: Path, outputs_dir: Path, signer: UrlSigner, public_url: str
    ) -> None:
        self.store = store
        self.files_dir = files_dir
        self.outputs_dir = outputs_dir
        self.signer = signer
        self.public_url = public_url

    # -- uploads ----------------------------------------------------------------------------

    async def add(
        self, owner: str, source: Path, name: str, content_type: str, metadata: dict[str, Any]
    ) -> records.File:
        """Keep an uploaded file (moved from `source`) for use as a prediction input."""
        file_id = secrets.token_hex(12)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        target = self.files_dir / file_id
        digest = await asyncio.to_thread(sha256_file, source)
        await asyncio.to_thread(shutil.move, source, target)
        return await asyncio.to_thread(
            self.store.add_file,
            id=file_id,
            owner=owner,
            name=safe_file_name(name),
            content_type=content_type,
            size=target.stat().st_size,
            sha256=digest,
            path=str(target),
            file_metadata=metadata,
        )

    async def get(self, file_id: str) -> records.File:
        record = await asyncio.to_thread(self.store.file, file_id)
        if record is None:
            raise NotFound(f"File {file_id} not found")
        return record

    async def of_owner(self, owner: str) -> list[records.File]:
        return list(await asyncio.to_thread(self.store.files, owner))

    async def delete(self, file_id: str) -> None:
        record = await self.get(file_id)
        await asyncio.to_thread(self.store.delete_file, file_id)
        Path(record.path).unlink(missing_ok=True)

    def resolve_input(self, value: Any) -> Any:
        """Turn links to files uploaded to Ember into signed URLs a replica can download.
        Every string is looked at, not only file inputs (a model may echo a string back);
        `linked_files` lets intake check, before this runs, that the caller may read each."""
        if isinstance(value, dict):
            return {k: self.resolve_input(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve_input(v) for v in value]
        file_id = self._linked_id(value)
        if file_id is not None:
            return self.public_url + self.signer.sign(f"/v1/files/{file_id}/download")
        return value

    def linked_files(
        self, value: Any, where: tuple[str | int, ...] = ()
    ) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """(location, file id) of each link to an uploaded file in an input, as
        `resolve_input` will sign them."""
        if isinstance(value, dict):
            for key, item in value.items():
                yield from self.linked_files(item, (*where, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from self.linked_files(item, (*where, index))
        else:
            file_id = self._linked_id(value)
            if file_id is not None:
                yield where, file_id

    def _linked_id(self, value: Any) -> str | None:
        prefix = f"{self.public_url}/v1/files/"
        if isinstance(value, str) and value.startswith(prefix):
            return value[len(prefix) :].split("/", 1)[0].split("?", 1)[0]
        return None

    # -- outputs ----------------------------------------------------------------------------

    def output_dir(self, state: PredictionState) -> Path:
        """Where the prediction's output files are."""
        return state.files_dir or self.outputs_dir / state.id

    def output_file(self, prediction_id: str, name: str) -> Path | None:
        path = self.outputs_dir / prediction_id / name
        if os.path.basename(name) != name or not path.is_file():
            return None
        return path

    def stream_url(self, prediction_id: str) -> str:
        """A prediction's event stream as a signed link. Replicate's stream URLs are
        capability URLs (unguessable, expiring, for one prediction): its JavaScript client
        opens them without the token, so a bearer-only stream would answer it 401."""
        return self.public_url + self.signer.sign(f"/v1/predictions/{prediction_id}/stream")

    def output_url(self, prediction_id: str, name: str) -> str:
        """A signed link to one output file."""
        return self.public_url + self.signer.sign(f"/v1/outputs/{prediction_id}/{name}")


def safe_file_name(name: str) -> str:
    """A client's file name made harmless to keep and to hand to a replica: no folders (either
    slash), no control characters, not `.` or `..`, at most 255 bytes (keeping the suffix)."""
    name = re.sub(r"[\x00-\x1f\x7f]", "", name.replace("\\", "/")).rsplit("/", 1)[-1].strip()
    if name in ("", ".", ".."):
        return "file"
    stem, dot, suffix = name.rpartition(".")
    if not dot or len(suffix.encode()) > 16:
        stem, dot, suffix = name, "", ""
    while len((stem + dot + suffix).encode()) > 255:
        stem = stem[:-1]
    return stem + dot + suffix
