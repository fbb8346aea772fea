"""The catalogue: models and their versions.

A version is an uploaded package, unpacked (safely: `packages/archive.py`), its environment
built and a replica started once to read its schema. Its id is a hash of the model's name
and the archive, so uploading the same package to the same model again returns the existing
version, and the same package uploaded to two models makes two versions.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ember.control.errors import Conflict, InvalidRequest, NotFound, PackageError
from ember.control.hardware import DEFAULT_HARDWARE, HARDWARE
from ember.control.validation import InputValidator
from ember.packages.archive import ArchiveError, sha256_file, unpack
from ember.packages.environment import EnvironmentBuildError, MissingSystemPackages
from ember.packages.loader import read_package
from ember.packages.spec import PackageError as UnreadablePackage
from ember.runtime.base import ReplicaState, ReplicaUnavailable, Runtime
from ember.store import models as records
from ember.store.repository import Store

Progress = Callable[[str], None]


class Catalogue:
    def __init__(self, store: Store, runtime: Runtime, packages_dir: Path) -> None:
        self.store = store
        self.runtime = runtime
        self.packages_dir = packages_dir
        self._validators: dict[str, InputValidator] = {}

    # -- models -----------------------------------------------------------------------------

    async def model(self, owner: str, name: str) -> records.Model:
        model = await asyncio.to_thread(self.store.model, owner, name)
        if model is None:
            raise NotFound(f"Model {owner}/{name} not found")
        return model

    async def find_model(self, owner: str, name: str) -> records.Model | None:
        return await asyncio.to_thread(self.store.model, owner, name)

    async def models(self) -> list[records.Model]:
        return list(await asyncio.to_thread(self.store.models))

    async def create_model(self, owner: str, name: str, **fields: Any) -> records.Model:
        check_name(owner, "owner")
        check_name(name, "name")
        if fields.get("hardware", DEFAULT_HARDWARE) not in HARDWARE:
            raise InvalidRequest(f"unknown hardware {fields['hardware']!r}: see GET /v1/hardware")
        if await asyncio.to_thread(self.store.model, owner, name) is not None:
            raise Conflict(f"Model {owner}/{name} already exists")
        return await asyncio.to_thread(self.store.create_model, owner=owner, name=name, **fields)

    async def delete_model(self, owner: str, name: str) -> list[str]:
        """Delete a model no deployment uses (Conflict if one does); returns the ids of the
        versions it had, whose runners must go too."""
        model = await self.model(owner, name)
        for deployment in await asyncio.to_thread(self.store.deployments):
            release = await asyncio.to_thread(self.store.current_release, deployment)
            if release.model_id == model.id:
                used_by = (  # another account's names stay its own
                    f"deployment {deployment.owner}/{deployment.name}"
                    if deployment.owner == owner
                    else "a deployment of another account"
                )
                raise Conflict(
                    f"Model {owner}/{name} is used by {used_by}: delete the deployment first"
                )
        versions = [v.id for v in await self.versions(model)]
        await asyncio.to_thread(self.store.delete_model, model.id)
        return versions

    # -- versions ---------------------------------------------------------------------------

    async def versions(self, model: records.Model) -> list[records.Version]:
        return list(await asyncio.to_thread(self.store.versions, model.id))

    async def version(self, version_id: str, model: records.Model | None = None) -> records.Version:
        version = await asyncio.to_thread(self.store.version, version_id)
        if version is None or (model is not None and version.model_id != model.id):
            raise NotFound(f"Version {version_id} not found")
        return version

    async def version_model(self, version_id: str) -> records.Model:
        """The model a version belongs to (NotFound if there is no such version)."""
        version = await self.version(version_id)
        return await self.model_of(version.model_id, f"Version {version_id} not found")

    async def model_of(self, model_id: str, missing: str = "Model not found") -> records.Model:
        model = await asyncio.to_thread(self.store.model_by_id, model_id)
        if model is None:
            raise NotFound(missing)
        return model

    async def model_version(
        self, model_ref: str, version_id: str | None
    ) -> tuple[records.Model, records.Version]:
        """`owner/name` and one of its versions (its latest when `version_id` is None)."""
        owner, _, name = model_ref.partition("/")
        if not name:
            raise InvalidRequest(f"model {model_ref!r} must look like owner/name")
        model = await self.model(owner, name)
        if version_id is None:
            if model.latest_version_id is None:
                raise InvalidRequest(f"Model {model_ref} has no versions yet: deploy a package")
            version_id = model.latest_version_id
        return model, await self.version(version_id, model)

    def validator(self, version: records.Version) -> InputValidator:
        """The version's input validator, made once (its schema never changes)."""
        validator = self._validators.get(version.id)
        if validator is None:
            validator = self._validators[version.id] = InputValidator(version.openapi_schema)
        return validator

    async def create_version(
        self, model: records.Model, archive: Path, progress: Progress = lambda line: None
    ) -> records.Version:
        """Unpack an uploaded package, build its environment, start it once to learn its
        schema; PackageError saying why when any step fails."""
        try:
            return await self._create_version(model, archive, progress)
        except (ArchiveError, UnreadablePackage, MissingSystemPackages) as exc:
            raise PackageError(self._without_server_paths(str(exc))) from exc
        except EnvironmentBuildError as exc:
            raise PackageError(self._without_server_paths(f"{exc}\n{exc.log_tail}")) from exc

    def _without_server_paths(self, message: str) -> str:
        """A package's error as its uploader may see it: the folder it was unpacked in is
        "the package", not a path that tells a tenant where the operator keeps Ember's data."""
        unpacked = re.escape(str(self.packages_dir)) + r"/[0-9a-f]+"
        return re.sub(unpacked, "the package", message).replace(str(self.packages_dir), "")

    async def _create_version(
        self, model: records.Model, archive: Path, progress: Progress
    ) -> records.Version:
        archive_digest = await asyncio.to_thread(sha256_file, archive)
        version_id = hashlib.sha256(
            f"{model.owner}/{model.name}\n{archive_digest}".encode()
        ).hexdigest()
        existing = await asyncio.to_thread(self.store.version, version_id)
        if existing is not None:
            progress("this package is already version " + version_id[:12])
            return existing
        target = self.packages_dir / version_id
        await asyncio.to_thread(unpack, archive, target)
        try:
            return await self._build_version(model, version_id, target, progress)
        except BaseException:  # a rejected upload leaves nothing behind; a version keeps it
            await asyncio.to_thread(shutil.rmtree, target, ignore_errors=True)
            raise

    async def _build_version(
        self, model: records.Model, version_id: str, target: Path, progress: Progress
    ) -> records.Version:
        """The package unpacked at `target` read, its environment built, a replica started
        once to check its setup and read its schema, and the version stored."""
        spec = read_package(target)
        if spec.engine is not None:
            progress(f"package: {spec.format}, engine {spec.engine.name} ({spec.engine.model})")
        else:
            progress(f"package: {spec.format} predictor {spec.predictor}")
        try:
            environment = await self.runtime.prepare(spec, progress)
        except ReplicaUnavailable as exc:  # e.g. no node of the cluster has its GPU type
            raise PackageError(f"cannot run this package: {exc}") from exc
        progress(
            "environment ready"
            + ("" if environment.shared_with_ember else f" ({environment.key[:12]})")
        )
        progress("starting a replica to check setup and read the schema")
        replica = await self.runtime.start_replica(spec)

        def setup_output(text: str) -> None:  # e.g. an engine's load progress, as it comes
            for line in text.splitlines():
                if line.strip():
                    progress(line)

        replica.on_setup_log = setup_output
        try:
            state = await replica.wait_started()
            if state != ReplicaState.READY or replica.schema is None:
                logs = replica.setup_logs.strip()
                raise PackageError(
                    f"setup failed:\n{replica.setup_error}"
                    + (f"\nsetup logs:\n{logs}" if logs else "")
                )
            schema = replica.schema
        finally:
            await replica.stop()
        progress("setup succeeded")
        return await asyncio.to_thread(
            self.store.add_version,
            model,
            id=version_id,
            package_dir=str(target),
            spec=spec.model_dump(mode="json"),
            openapi_schema=schema,
            cog_version=f"ember-{spec.format}",
        )


def check_name(value: str, what: str) -> None:
    """InvalidRequest unless `value` is a safe owner or model name."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,99}", value or ""):
        raise InvalidRequest(f"{what} {value!r} must be lowercase letters, digits, '.', '_' or '-'")


def serves_openai(version: records.Version) -> list[str]:
    """The OpenAI routes a version's predictor serves itself (read from its schema)."""
    return list((version.openapi_schema or {}).get("info", {}).get("x-ember-openai", []))
