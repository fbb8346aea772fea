"""The control plane: models, versions, deployments and predictions, on top of a store and a
runtime.

The HTTP layer calls only this. A prediction's life: `create_prediction` validates it and hands
it to the runner of its deployment (or of its version, for version-addressed predictions); the
group-commit writer persists each state change; listeners (webhooks, in the HTTP layer) hear
every event. After a crash, `recover` re-queues predictions that had not started and fails,
with a reason, those that were running.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ember.control import timeseries
from ember.control.access import Principal
from ember.control.advisor import Advice, Traffic, advise
from ember.control.budget_guard import BudgetGuard
from ember.control.hardware import DEFAULT_HARDWARE, HARDWARE
from ember.control.ledger import Ledger
from ember.control.metrics import Metrics
from ember.control.policies.keepalive import IdleHistory
from ember.control.policies.ratelimit import RateLimit, RateLimiter
from ember.control.predictions import PredictionState, new_prediction_id, utcnow
from ember.control.prices import Price, PriceTable, configured_overrides
from ember.control.readiness import TierKeeper, default_warm_host_memory
from ember.control.replay import ReplayParams, Request
from ember.control.reports import (
    CostRow,
    Grouping,
    PredictionCharge,
    ReplicaAccount,
    summarize,
)
from ember.control.runner import DeploymentRunner
from ember.control.scaling import ScalingSettings
from ember.control.sealing import Sealer
from ember.control.signing import UrlSigner
from ember.control.timeline import Sampler, Timeline
from ember.control.validation import InputValidator
from ember.control.webhooks import new_signing_secret
from ember.egress import EgressPolicy, EgressRefused
from ember.packages.archive import write_archive
from ember.packages.loader import read_package
from ember.packages.spec import PackageSpec
from ember.runtime.base import PREDICT, ReplicaState, ReplicaUnavailable, Runtime, Tier
from ember.runtime.local import LocalRuntime
from ember.store import models as records
from ember.store.db import aware, connect, migrate, sqlite_url
from ember.store.repository import Store, hash_token
from ember.store.writer import GroupCommitWriter

logger = logging.getLogger("ember.control")

Listener = Callable[[PredictionState, str], None]
Progress = Callable[[str], None]
RECENT_LIMIT = 2000
DEFAULT_ACCOUNT = "ember"  # the first admin token's, whose secret predates per-account ones
CANCEL_SETTLE_SECONDS = 1.0
# What an uploaded package may unpack to (EMBER_MAX_PACKAGE_BYTES overrides the size).
MAX_PACKAGE_BYTES = 20 * 2**30
MAX_PACKAGE_FILES = 100_000
RESTART_REASON = (
    "Ember restarted while this prediction was running; its replica was lost and the "
    "prediction cannot be resumed: it had produced output, or used its prediction_retries. "
    "Run it again."
)


class NotFound(LookupError):
    """No such model, version, deployment, prediction or file (HTTP 404)."""


class Conflict(Exception):
    """The request clashes with what exists (HTTP 409)."""


class InvalidRequest(ValueError):
    """The request is well-formed JSON but asks for something impossible (HTTP 422)."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


@dataclass
class Target:
    """Where a prediction runs: a deployment's runner, or a version's own runner."""

    runner: DeploymentRunner
    model: str
    version: records.Version
    deployment: str | None


class Platform:
    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        public_url: str = "http://127.0.0.1:8000",
        admin_token: str | None = None,
        warm_host_memory: int | None = None,
        runtime: Runtime | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self.data_dir = data_dir
        self.public_url = public_url.rstrip("/")
        self.admin_token = admin_token
        data_dir.mkdir(parents=True, exist_ok=True)
        self.packages_dir = data_dir / "packages"
        self.files_dir = data_dir / "files"
        self.engine = connect(database_url or sqlite_url(data_dir))
        self.store = Store(self.engine)
        self.runtime = runtime or LocalRuntime(data_dir)
        self.clock = clock  # what replica and prediction durations are measured with
        self.prices = PriceTable(configured_overrides())
        self._set_prices: dict[str, dict[str, Any]] = {}  # through the API, saved
        self.ledger = Ledger(self.store, self._metered_runners, clock, wall)
        self.budgets = BudgetGuard(self.store, self._accounts_since, wall)
        self.tiers = TierKeeper(
            self.runtime,
            lambda: [t.runner for t in self.targets.values()],
            warm_host_memory if warm_host_memory is not None else default_warm_host_memory(),
            clock,
        )
        self.writer: GroupCommitWriter | None = None
        self.metrics = Metrics(self._statuses)
        self.timeline = Timeline()
        self.sampler = Sampler(
            self.timeline,
            lambda: [(key, target.runner.counts()) for key, target in self.targets.items()],
            lambda: wall().timestamp(),
        )
        self.listeners: list[Listener] = [self.metrics.on_prediction, self.budgets.on_prediction]
        self.targets: dict[str, Target] = {}
        self.live: dict[str, PredictionState] = {}
        self.recent: collections.OrderedDict[str, PredictionState] = collections.OrderedDict()
        self.signer = UrlSigner(b"")
        self.webhook_secret = ""  # the default account's ("ember"); others: _webhook_secrets
        self._webhook_secrets: dict[str, str] = {}
        self.sealer = Sealer.for_data_dir(data_dir)
        # What webhooks and input URLs may reach (`ember serve --allow-egress` exports it).
        self.egress = EgressPolicy.from_env()
        self.rate_limiter = RateLimiter()
        # For tokens without a limit of their own, except admin tokens (EMBER_RATE_LIMIT).
        self.default_rate_limit = (
            RateLimit.parse(os.environ["EMBER_RATE_LIMIT"])
            if os.environ.get("EMBER_RATE_LIMIT")
            else None
        )
        self._validators: dict[str, InputValidator] = {}
        # By the token's SHA-256 (never the token itself), and each token's rate limit.
        self._principals: dict[str, Principal | None] = {}
        self._limits: dict[str, RateLimit | None] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired_runners: set[DeploymentRunner] = set()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> str | None:
        """Migrate, load secrets, recover unfinished predictions, start deployments.

        Returns a newly created admin token the first time Ember starts (to print once).
        """
        await asyncio.to_thread(migrate, self.engine)
        await self.runtime.start()
        self.writer = GroupCommitWriter(self.store)
        key = await asyncio.to_thread(
            self._secret_setting, "url_signing_key", lambda: secrets.token_hex(32)
        )
        self.signer = UrlSigner(bytes.fromhex(key))
        self.webhook_secret = await asyncio.to_thread(
            self._secret_setting, "webhook_secret", new_signing_secret
        )
        first_token = None
        if await asyncio.to_thread(self.store.count_tokens) == 0 and not self.admin_token:
            _, first_token = await asyncio.to_thread(
                self.store.create_token, "admin", DEFAULT_ACCOUNT
            )
        saved = await asyncio.to_thread(self.store.setting, "prices")
        if saved:  # set through the API: over the defaults and the EMBER_PRICES file
            self._set_prices = json.loads(saved)
            for sku, fields in self._set_prices.items():
                self.prices.set(sku, **fields)
        closed = await asyncio.to_thread(self.store.close_unfinished_usage)
        if closed:
            logger.warning("%d replica accounts closed at their last checkpoint", closed)
        await self.budgets.load()
        await self._load_deployments()
        await self.recover()
        self.tiers.start()
        self.ledger.start()
        self.sampler.start()
        return first_token

    async def stop(self) -> None:
        """Drain running predictions, stop replicas, flush the database.

        Predictions still waiting in a queue stay `starting` in the database and are picked up
        again at the next start.
        """
        await self.tiers.stop()
        await self.sampler.stop()
        await asyncio.gather(*(t.runner.close(drain=True) for t in self.targets.values()))
        for key, target in self.targets.items():
            if target.deployment is not None:  # what each deployment learned of its traffic
                history = json.dumps(target.runner.history.to_dict())
                await asyncio.to_thread(self.store.set_setting, _history_key(key), history)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.ledger.stop()  # the replicas' final accounts are written by now
        await self.runtime.close()
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)
        self.engine.dispose()

    # -- authentication ---------------------------------------------------------------------

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

    def account_webhook_secret(self, owner: str) -> str:
        """For the webhook sender: the secret `load_webhook_secret` loaded (the prediction's
        creation did), else the default one."""
        if owner == DEFAULT_ACCOUNT:
            return self.webhook_secret
        return self._webhook_secrets.get(owner, self.webhook_secret)

    async def authenticate(self, token: str) -> Principal | None:
        if self.admin_token and secrets.compare_digest(token, self.admin_token):
            return Principal(owner=DEFAULT_ACCOUNT, scope="admin")
        digest = hash_token(token)
        if digest in self._principals:
            return self._principals[digest]
        record = await asyncio.to_thread(self.store.token_by_secret, token)
        if len(self._principals) > 10_000:
            self._principals.clear()
        principal = None
        if record is not None:
            principal = Principal(record.owner, record.scope, record.id)
            self._limits[record.id] = self._limit_of(record)
        self._principals[digest] = principal
        return principal

    def _limit_of(self, record: records.Token) -> RateLimit | None:
        if record.rate_limit:
            return RateLimit.parse(record.rate_limit)
        return None if record.scope == "admin" else self.default_rate_limit

    def rate_limited(self, principal: Principal) -> tuple[RateLimit | None, float]:
        """(the token's limit, seconds until it may make a request: 0 when it may now);
        counts this request."""
        limit = self._limits.get(principal.token_id) if principal.token_id else None
        return limit, self.rate_limiter.take(principal.key(), limit, self.clock())

    async def create_token(
        self, name: str, owner: str, scope: str = "admin", rate_limit: str | None = None
    ) -> tuple[str, str]:
        """(its id, for budgets and reports; the token itself, shown once)."""
        record, token = await asyncio.to_thread(
            self.store.create_token, name, owner, scope, rate_limit=rate_limit
        )
        return record.id, token

    async def tokens(self) -> list[records.Token]:
        return await asyncio.to_thread(self.store.tokens)

    async def revoke_token(self, token_id: str) -> bool:
        """Delete a token; requests that present it fail from now on (the cache forgets it)."""
        if not await asyncio.to_thread(self.store.delete_token, token_id):
            return False
        for digest, found in list(self._principals.items()):
            if found is not None and found.token_id == token_id:
                del self._principals[digest]
        self._limits.pop(token_id, None)
        self.rate_limiter.forget(token_id)
        return True

    # -- models and versions ----------------------------------------------------------------

    async def model(self, owner: str, name: str) -> records.Model:
        model = await asyncio.to_thread(self.store.model, owner, name)
        if model is None:
            raise NotFound(f"Model {owner}/{name} not found")
        return model

    async def models(self) -> list[records.Model]:
        return list(await asyncio.to_thread(self.store.models))

    async def create_model(self, owner: str, name: str, **fields: Any) -> records.Model:
        _check_name(owner, "owner")
        _check_name(name, "name")
        if fields.get("hardware", DEFAULT_HARDWARE) not in HARDWARE:
            raise InvalidRequest(f"unknown hardware {fields['hardware']!r}: see GET /v1/hardware")
        if await asyncio.to_thread(self.store.model, owner, name) is not None:
            raise Conflict(f"Model {owner}/{name} already exists")
        return await asyncio.to_thread(self.store.create_model, owner=owner, name=name, **fields)

    async def delete_model(self, owner: str, name: str) -> None:
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
        for version in await asyncio.to_thread(self.store.versions, model.id):
            await self._retire_runner(f"version:{version.id}")
        await asyncio.to_thread(self.store.delete_model, model.id)

    async def versions(self, model: records.Model) -> list[records.Version]:
        return list(await asyncio.to_thread(self.store.versions, model.id))

    async def version(self, version_id: str, model: records.Model | None = None) -> records.Version:
        version = await asyncio.to_thread(self.store.version, version_id)
        if version is None or (model is not None and version.model_id != model.id):
            raise NotFound(f"Version {version_id} not found")
        return version

    async def create_version(
        self, model: records.Model, archive: Path, progress: Progress = lambda line: None
    ) -> records.Version:
        """Unpack an uploaded package, build its environment, start it once to learn its schema.

        The version id is a hash of the model's name and the archive, so uploading the same
        package to the same model again returns the existing version, and the same package
        uploaded to two models makes two versions.
        """
        archive_digest = await asyncio.to_thread(_sha256_file, archive)
        version_id = hashlib.sha256(
            f"{model.owner}/{model.name}\n{archive_digest}".encode()
        ).hexdigest()
        existing = await asyncio.to_thread(self.store.version, version_id)
        if existing is not None:
            progress("this package is already version " + version_id[:12])
            return existing
        target = self.packages_dir / version_id
        await asyncio.to_thread(_unpack, archive, target)
        spec = read_package(target)
        if spec.engine is not None:
            progress(f"package: {spec.format}, engine {spec.engine.name} ({spec.engine.model})")
        else:
            progress(f"package: {spec.format} predictor {spec.predictor}")
        try:
            environment = await self.runtime.prepare(spec, progress)
        except ReplicaUnavailable as exc:  # e.g. no node of the cluster has its GPU type
            raise InvalidRequest(f"cannot run this package: {exc}") from exc
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
                raise InvalidRequest(
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

    async def deploy_folder(
        self, folder: Path, owner: str, progress: Progress = lambda line: None
    ) -> tuple[records.Deployment, records.Release]:
        """Deploy a local package folder as model and deployment `owner/<its name>`: the
        model is created if needed, the folder becomes a version, the deployment follows it."""
        spec = read_package(folder)
        name = spec.name
        model = await asyncio.to_thread(self.store.model, owner, name)
        if model is None:
            model = await self.create_model(owner, name)
        archive = Path(await asyncio.to_thread(_pack, folder))
        try:
            version = await self.create_version(model, archive, progress)
        finally:
            archive.unlink(missing_ok=True)
        if await asyncio.to_thread(self.store.deployment, owner, name) is None:
            return await self.create_deployment(
                owner, name, f"{owner}/{name}", version.id, DEFAULT_HARDWARE, 0, 1, owner
            )
        return await self.update_deployment(owner, name, owner, version=version.id)

    def validator(self, version: records.Version) -> InputValidator:
        validator = self._validators.get(version.id)
        if validator is None:
            validator = self._validators[version.id] = InputValidator(version.openapi_schema)
        return validator

    # -- deployments ------------------------------------------------------------------------

    async def deployment(self, owner: str, name: str) -> tuple[records.Deployment, records.Release]:
        deployment = await asyncio.to_thread(self.store.deployment, owner, name)
        if deployment is None:
            raise NotFound(f"Deployment {owner}/{name} not found")
        return deployment, await asyncio.to_thread(self.store.current_release, deployment)

    async def deployments(self) -> list[tuple[records.Deployment, records.Release]]:
        result = []
        for deployment in await asyncio.to_thread(self.store.deployments):
            release = await asyncio.to_thread(self.store.current_release, deployment)
            result.append((deployment, release))
        return result

    async def create_deployment(
        self,
        owner: str,
        name: str,
        model_ref: str,
        version_id: str,
        hardware: str,
        min_instances: int,
        max_instances: int,
        created_by: str,
        scaling: dict[str, Any] | None = None,
    ) -> tuple[records.Deployment, records.Release]:
        _check_name(owner, "owner")
        _check_name(name, "name")
        if await asyncio.to_thread(self.store.deployment, owner, name) is not None:
            raise Conflict(f"Deployment {owner}/{name} already exists")
        model, version = await self._model_version(model_ref, version_id)
        settings = scaling_settings(hardware, min_instances, max_instances, scaling or {})
        deployment, release = await asyncio.to_thread(
            self.store.create_deployment,
            owner,
            name,
            model_id=model.id,
            version_id=version.id,
            hardware=hardware,
            min_instances=settings.min_instances,
            max_instances=settings.max_instances,
            scaling=_extra_settings(settings),
            created_by=created_by,
        )
        self._install_runner(deployment, release, model, version)
        return deployment, release

    async def update_deployment(
        self, owner: str, name: str, created_by: str, **changes: Any
    ) -> tuple[records.Deployment, records.Release]:
        """PATCH: version, hardware or any scaling setting; a new release. Scaling changes
        apply live; a new version gets new replicas while the old ones drain."""
        deployment, current = await self.deployment(owner, name)
        changes = {k: v for k, v in changes.items() if v is not None}
        scaling = {**(current.scaling or {}), **changes.pop("scaling", {})}
        if "version" in changes:
            model = await asyncio.to_thread(self.store.model_by_id, current.model_id)
            assert model is not None
            version = await self.version(changes.pop("version"), model)
            changes["version_id"] = version.id
        settings = scaling_settings(
            changes.get("hardware", current.hardware),
            changes.get("min_instances", current.min_instances),
            changes.get("max_instances", current.max_instances),
            scaling,
        )
        changes["scaling"] = _extra_settings(settings)
        release = await asyncio.to_thread(
            self.store.add_release, deployment, created_by=created_by, **changes
        )
        if release.version_id != current.version_id:
            version = await self.version(release.version_id)
            model = await asyncio.to_thread(self.store.model_by_id, release.model_id)
            assert model is not None
            self._install_runner(deployment, release, model, version)
        else:
            runner = self.targets[f"{owner}/{name}"].runner
            runner.hardware = release.hardware  # replicas started from now on run on it
            runner.update_settings(settings)
        self.tiers.wake()
        return deployment, release

    async def delete_deployment(self, owner: str, name: str) -> None:
        deployment, _ = await self.deployment(owner, name)
        await asyncio.to_thread(self.store.delete_deployment, deployment.id)
        await self._retire_runner(f"{owner}/{name}")
        self.timeline.forget(f"{owner}/{name}")

    def _install_runner(
        self,
        deployment: records.Deployment,
        release: records.Release,
        model: records.Model,
        version: records.Version,
    ) -> DeploymentRunner:
        """A runner for the release's version; a previous runner drains in the background."""
        key = f"{deployment.owner}/{deployment.name}"
        old = self.targets.pop(key, None)
        runner = self._new_runner(key, version, release.hardware, release_settings(release))
        if old is not None:
            runner.queue.extend(old.runner.queue)
            old.runner.queue.clear()
            runner.history = old.runner.history  # same deployment, same traffic
            self._retire(old.runner)
        self.targets[key] = Target(runner, f"{model.owner}/{model.name}", version, key)
        runner.start()
        runner.wake()  # queued predictions moved over, or min_instances: act now
        self.tiers.wake()
        return runner

    def _new_runner(
        self,
        key: str,
        version: records.Version,
        hardware: str,
        settings: ScalingSettings | None = None,
    ) -> DeploymentRunner:
        spec = PackageSpec.model_validate(version.spec)
        return DeploymentRunner(
            key,
            spec,
            self.runtime,
            self._on_event,
            self.resolve_input,
            settings,
            clock=self.clock,
            on_replica_event=self._on_replica_event,
            hardware=hardware,
            rate=lambda sku: self.prices.get(sku).per_second,
        )

    async def costs(self, by: Grouping, since: datetime.datetime | None = None) -> list[CostRow]:
        """The cost report: replicas that lived since `since` (live ones up to now) and the
        predictions finished since then, grouped `by`."""
        accounts = await self._accounts_since(since)
        if since is not None:
            now = self.ledger.wall()
            accounts = [a.within(since, now) for a in accounts]
        charges = {
            row.id: PredictionCharge(
                row.id,
                row.deployment or f"version:{row.version_id}",
                row.token_id or "(admin)",
                row.status,
                aware(row.created_at),
                row.metrics or {},
            )
            for row in await asyncio.to_thread(self.store.finished_predictions_since, since)
        }
        for state in list(self.recent.values()):  # finished, perhaps not yet flushed
            if state.terminal and (since is None or state.created_at >= since):
                charges[state.id] = PredictionCharge(
                    state.id,
                    state.deployment or f"version:{state.version_id}",
                    state.token_id or "(admin)",
                    state.status,
                    state.created_at,
                    state.metrics,
                )
        if by == "token":  # people read token names, not ids
            names = await asyncio.to_thread(self.store.token_names)
            for charge in charges.values():
                if charge.token in names:
                    charge.token = f"{names[charge.token]} ({charge.token})"
        hardware_of = {a.deployment: a.hardware for a in accounts}
        return summarize(accounts, charges.values(), by, hardware_of)

    async def timeseries(
        self, owner: str, name: str, since: datetime.datetime, step: int | None = None
    ) -> dict[str, Any]:
        """The deployment's requests, latency, queue, replicas, starts and cost from `since`
        until now, in buckets of `step` seconds (chosen from the span when not given)."""
        await self.deployment(owner, name)  # 404 with what exists if it does not
        key = f"{owner}/{name}"
        now = self.ledger.wall()
        start, end = since.timestamp(), now.timestamp()
        step = step or timeseries.choose_step(end - start)
        rows = await asyncio.to_thread(self.store.finished_predictions_since, since, key)
        finished = [
            timeseries.FinishedPrediction(
                aware(row.completed_at).timestamp(),
                row.status,
                (row.metrics or {}).get("total_time"),
                float((row.metrics or {}).get("cost") or 0.0),
            )
            for row in rows
        ]
        accounts = await self._accounts_since(since, key)
        return timeseries.build(
            start,
            end,
            step,
            finished,
            accounts,
            self.timeline.samples_between(key, start, end),
            self.timeline.starts_between(key, start, end),
        )

    async def advice(self, owner: str, name: str, days: float = 7.0) -> Advice:
        """Replay the deployment's last `days` of finished predictions under its settings and
        the advisor's candidates (in a thread: a week of busy traffic takes seconds)."""
        deployment, release = await self.deployment(owner, name)
        runner = self.target_for_deployment(owner, name).runner
        now = self.ledger.wall()
        since = max(now - datetime.timedelta(days=days), aware(deployment.created_at))
        rows = await asyncio.to_thread(self.store.finished_predictions_since, since)
        requests, tokens_in, tokens_out = [], 0, 0
        for row in rows:
            if row.deployment != f"{owner}/{name}" or row.started_at is None:
                continue
            metrics = row.metrics or {}
            service = metrics.get("predict_time")
            if service is None and row.completed_at is not None:
                service = (row.completed_at - row.started_at).total_seconds()
            arrival = (aware(row.created_at) - since).total_seconds()
            requests.append(Request(max(0.0, arrival), max(0.0, float(service or 0.0))))
            tokens_in += int(metrics.get("input_token_count") or 0)
            tokens_out += int(metrics.get("output_token_count") or 0)
        traffic = Traffic(requests, (now - since).total_seconds(), since, tokens_in, tokens_out)
        measured = runner.start_times
        host = measured.get(Tier.WARM_HOST.value)
        params = ReplayParams(
            cold_start=measured.get(Tier.COLD.value) or measured.get(Tier.DISK.value) or 10.0,
            host_start=host if host is not None else 1.0,
            warm_start=host if host is not None else 0.3,
            max_instances=runner.settings.max_instances,
        )
        price = self.prices.get(release.hardware)
        warm_host = runner.cold_start.tier == Tier.WARM_HOST
        return await asyncio.to_thread(
            advise, f"{owner}/{name}", traffic, runner.settings, price, params, warm_host
        )

    async def _accounts_since(
        self, since: datetime.datetime | None, deployment: str | None = None
    ) -> list[ReplicaAccount]:
        """Replica accounts of the ledger since then (of one deployment, if given); live ones
        brought up to now."""
        stored = await asyncio.to_thread(self.store.replica_usage_since, since, deployment)
        accounts = {r.id: _account(r.__dict__) for r in stored}
        for row in self.ledger.live_rows():  # fresher than their last checkpoint
            if deployment is None or row["deployment"] == deployment:
                accounts[row["id"]] = _account(row)
        return list(accounts.values())

    def _metered_runners(self) -> list[DeploymentRunner]:
        """Runners whose replicas are billed now: current ones and replaced ones draining."""
        return [*(t.runner for t in self.targets.values()), *self._retired_runners]

    def _statuses(self) -> list[tuple[str, dict[str, Any]]]:
        return [(key, target.runner.status()) for key, target in self.targets.items()]

    def _on_replica_event(self, deployment: str, kind: str, data: dict[str, Any]) -> None:
        self.metrics.on_replica_event(deployment, kind, data)
        self.timeline.on_replica_event(deployment, self.ledger.wall().timestamp(), kind, data)
        self.ledger.on_replica_event(deployment, kind, data)

    async def set_price(self, sku: str, **fields: Any) -> Price:
        """Change a SKU's price (PriceError if invalid); replicas started from now on pay it."""
        price = self.prices.set(sku, **fields)
        self._set_prices.setdefault(sku, {}).update(fields)
        saved = json.dumps(self._set_prices)
        await asyncio.to_thread(self.store.set_setting, "prices", saved)
        return price

    def _retire(self, runner: DeploymentRunner) -> None:
        """Drain a replaced runner in the background; its predictions stay cancellable."""
        self._retired_runners.add(runner)
        task = asyncio.create_task(runner.close(drain=True))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        task.add_done_callback(lambda _: self._retired_runners.discard(runner))

    async def _retire_runner(self, key: str) -> None:
        target = self.targets.pop(key, None)
        if target is not None:
            for state in list(target.runner.queue):
                target.runner.cancel(state)
            await target.runner.close(drain=False)
            self.tiers.wake()

    async def _load_deployments(self) -> None:
        for deployment, release in await self.deployments():
            version = await self.version(release.version_id)
            model = await asyncio.to_thread(self.store.model_by_id, release.model_id)
            assert model is not None
            runner = self._install_runner(deployment, release, model, version)
            saved = await asyncio.to_thread(self.store.setting, _history_key(runner.name))
            if saved is not None:
                try:
                    runner.history = IdleHistory.from_dict(json.loads(saved))
                except (ValueError, TypeError):
                    logger.warning("%s: ignoring an unreadable idle history", runner.name)

    async def _model_version(
        self, model_ref: str, version_id: str | None
    ) -> tuple[records.Model, records.Version]:
        owner, _, name = model_ref.partition("/")
        if not name:
            raise InvalidRequest(f"model {model_ref!r} must look like owner/name")
        model = await self.model(owner, name)
        if version_id is None:
            if model.latest_version_id is None:
                raise InvalidRequest(f"Model {model_ref} has no versions yet: deploy a package")
            version_id = model.latest_version_id
        return model, await self.version(version_id, model)

    # -- predictions ------------------------------------------------------------------------

    async def target_for_model(self, owner: str, name: str, own: bool = True) -> Target:
        """A model's predictions run on its deployment of the same name, if any, else on
        its latest version. Another owner's predictions on a public model (`own=False`)
        run on the version: that deployment, and its bill, are the model owner's."""
        target = self.targets.get(f"{owner}/{name}") if own else None
        if target is not None:
            return target
        model, version = await self._model_version(f"{owner}/{name}", None)
        return self._version_target(model, version)

    def target_for_deployment(self, owner: str, name: str) -> Target:
        target = self.targets.get(f"{owner}/{name}")
        if target is None:
            raise NotFound(f"Deployment {owner}/{name} not found")
        return target

    async def version_model(self, version_id: str) -> records.Model:
        """The model a version belongs to (NotFound if there is no such version)."""
        version = await self.version(version_id)
        model = await asyncio.to_thread(self.store.model_by_id, version.model_id)
        if model is None:
            raise NotFound(f"Version {version_id} not found")
        return model

    async def target_for_version(self, reference: str) -> Target:
        """`version_id` or `owner/name:version_id`."""
        model_ref, _, version_id = reference.rpartition(":")
        target = self.targets.get(f"version:{version_id}")
        if target is None:
            version = await self.version(version_id)
            model = await asyncio.to_thread(self.store.model_by_id, version.model_id)
            assert model is not None
            target = self._version_target(model, version)
        if model_ref and model_ref != target.model:
            raise NotFound(f"Version {version_id} does not belong to {model_ref}")
        return target

    def _version_target(self, model: records.Model, version: records.Version) -> Target:
        key = f"version:{version.id}"
        target = self.targets.get(key)
        if target is None:
            runner = self._new_runner(key, version, model.hardware)
            target = self.targets[key] = Target(
                runner, f"{model.owner}/{model.name}", version, None
            )
            self.tiers.wake()
        return target

    def openai_models(self, owner: str | None = None) -> dict[str, Target]:
        """Every name the OpenAI API's `model` field accepts → its deployment: `owner/name`,
        and the bare name and the package's aliases where no other deployment claims them
        (a shared one would route by whichever was deployed last: ask by owner/name).
        With `owner`, only that owner's deployments (what its tokens may call)."""
        names: dict[str, Target] = {}
        claims: dict[str, dict[str, Target]] = {}
        for key, target in self.targets.items():
            if target.deployment is None or not serves_openai(target.version):
                continue
            if owner is not None and key.partition("/")[0] != owner:
                continue
            names[key] = target
            for other in (key.partition("/")[2], *target.runner.spec.aliases):
                claims.setdefault(other, {})[key] = target
        for name, claimants in claims.items():
            if len(claimants) == 1 and name not in names:
                names[name] = next(iter(claimants.values()))
        return names

    def target_for_openai(self, model: str, route: str, owner: str | None = None) -> Target:
        """The deployment an OpenAI request's `model` names (among `owner`'s, if given);
        NotFound in OpenAI's words, or InvalidRequest when it does not serve that route."""
        target = self.openai_models(owner).get(model)
        if target is None:
            raise NotFound(f"The model `{model}` does not exist or you do not have access to it.")
        routes = serves_openai(target.version)
        if route not in routes:
            raise InvalidRequest(
                f"The model `{model}` does not serve {route}; it serves: {', '.join(routes)}"
            )
        return target

    def new_openai_request(
        self, target: Target, route: str, body: dict[str, Any], owner: str, **fields: Any
    ) -> PredictionState:
        """A prediction carrying an OpenAI request body to the predictor's own handler (the
        gateway has validated the body)."""
        return self.new_prediction(
            target, body, owner, streams_output=bool(body.get("stream")), method=route, **fields
        )

    def new_prediction(
        self, target: Target, input: dict[str, Any], owner: str, **fields: Any
    ) -> PredictionState:
        """Validate and describe a prediction (not yet accepted: see `accept`). Inputs are
        checked against the version's schema, except an OpenAI request's body (`method`)."""
        if fields.get("method", PREDICT) == PREDICT:
            validator = self.validator(target.version)
            details = validator.errors(input)
            if details:
                raise InvalidRequest("Input validation failed", details)
            schema = target.version.openapi_schema["components"]["schemas"]["Output"]
            fields["streams_output"] = schema.get("x-cog-array-type") == "iterator"
            if validator.secret_fields:
                fields["secret_fields"] = validator.secret_fields
                fields["stored_input"] = self.sealer.seal_fields(input, validator.secret_fields)
        return PredictionState(
            id=new_prediction_id(),
            owner=owner,
            model=target.model,
            version_id=target.version.id,
            input=input,
            deployment=target.deployment,
            **fields,
        )

    async def check_egress(self, target: Target, state: PredictionState) -> None:
        """Refuse now (InvalidRequest, per field) input URLs that name an address replicas may
        not reach, rather than fail the prediction once a replica has started for it. Links
        to Ember's own files are allowed (its public URL is in the policy)."""
        if state.method != PREDICT:
            return
        details = []
        for where, url in self.validator(target.version).file_urls(state.input):
            try:
                await self.egress.check_url(url)
            except EgressRefused as exc:
                details.append({"loc": where, "msg": str(exc), "type": "egress"})
        if details:
            raise InvalidRequest("Input validation failed", details)

    def accept(self, target: Target, state: PredictionState) -> None:
        """Queue the prediction (QueueFull beyond the queue limit). Nothing is written yet:
        see `acknowledge`."""
        target.runner.submit(state)
        self.live[state.id] = state

    async def acknowledge(self, state: PredictionState) -> None:
        """Make the prediction durable before a client is told it exists.

        From then on its state changes are written too. A `Prefer: wait` prediction answered
        with its result is only ever written once, when it ends: until the answer goes out
        nobody has been promised anything, so a crash before then loses nothing acknowledged.
        """
        assert self.writer is not None
        state.acknowledged = True
        await self.writer.durable(state.id, state.row)

    def _persist(self, state: PredictionState) -> None:
        assert self.writer is not None
        self.writer.mark(state.id, state.row)

    def _on_event(self, state: PredictionState, event: str) -> None:
        if event == "done" or (event == "started" and state.acknowledged):
            self._persist(state)
        if event == "done":
            self.live.pop(state.id, None)
            self.recent[state.id] = state
            while len(self.recent) > RECENT_LIMIT:
                self.recent.popitem(last=False)
        for listener in self.listeners:
            try:
                listener(state, event)
            except Exception:
                logger.exception("prediction listener failed")

    async def prediction(self, prediction_id: str) -> PredictionState:
        state = self.live.get(prediction_id) or self.recent.get(prediction_id)
        if state is not None:
            return state
        row = await asyncio.to_thread(self.store.prediction, prediction_id)
        if row is None:
            raise NotFound(f"Prediction {prediction_id} not found")
        return self._from_row(row)

    def _from_row(self, row: records.Prediction) -> PredictionState:
        """A stored prediction with its sealed `Secret` inputs opened (and still marked)."""
        state = PredictionState.from_row(row, self.runtime.outputs_dir / row.id)
        clear, sealed = self.sealer.unseal_fields(row.input or {})
        if sealed:
            state.input, state.secret_fields, state.stored_input = clear, sealed, row.input
        return state

    async def predictions_page(
        self, limit: int, before: tuple[Any, str] | None, **filters: str | None
    ) -> list[PredictionState]:
        """Newest first; `filters`: status, model, deployment (see Store.predictions_page)."""
        rows = await asyncio.to_thread(self.store.predictions_page, limit, before, **filters)
        return [self.live.get(row.id) or self._from_row(row) for row in rows]

    async def cancel(self, prediction_id: str) -> PredictionState:
        state = await self.prediction(prediction_id)
        if state.terminal:
            return state
        self.stop_prediction(state)
        # A prediction waiting inside a replica, or one that stops promptly, is canceled a
        # round trip later: answer with that outcome rather than the state before it.
        await self.wait(state, CANCEL_SETTLE_SECONDS)
        return state

    def stop_prediction(self, state: PredictionState) -> None:
        """Ask for a live prediction to be canceled, without waiting for it (callable from
        cleanup code that must not await, e.g. when a streaming client has gone)."""
        runners = [t.runner for t in self.targets.values()] + list(self._retired_runners)
        for runner in runners:
            if runner.cancel(state):
                break

    async def wait(self, state: PredictionState, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the prediction to end; True if it did."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await state.done.wait()
        return state.terminal

    def output_file(self, prediction_id: str, name: str) -> Path | None:
        path = self.runtime.outputs_dir / prediction_id / name
        if os.path.basename(name) != name or not path.is_file():
            return None
        return path

    def resolve_input(self, value: Any) -> Any:
        """Turn links to files uploaded to Ember into signed URLs a replica can download."""
        if isinstance(value, dict):
            return {k: self.resolve_input(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve_input(v) for v in value]
        prefix = f"{self.public_url}/v1/files/"
        if isinstance(value, str) and value.startswith(prefix):
            file_id = value[len(prefix) :].split("/", 1)[0].split("?", 1)[0]
            return self.public_url + self.signer.sign(f"/v1/files/{file_id}/download")
        return value

    # -- uploaded files ---------------------------------------------------------------------

    async def add_file(
        self, owner: str, source: Path, name: str, content_type: str, metadata: dict[str, Any]
    ) -> records.File:
        """Keep an uploaded file (moved from `source`) for use as a prediction input."""
        file_id = secrets.token_hex(12)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        target = self.files_dir / file_id
        digest = await asyncio.to_thread(_sha256_file, source)
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

    async def file(self, file_id: str) -> records.File:
        record = await asyncio.to_thread(self.store.file, file_id)
        if record is None:
            raise NotFound(f"File {file_id} not found")
        return record

    async def files(self, owner: str) -> list[records.File]:
        return list(await asyncio.to_thread(self.store.files, owner))

    async def delete_file(self, file_id: str) -> None:
        record = await self.file(file_id)
        await asyncio.to_thread(self.store.delete_file, file_id)
        Path(record.path).unlink(missing_ok=True)

    # -- recovery ---------------------------------------------------------------------------

    async def recover(self) -> None:
        """Finish what a crash interrupted, in the order predictions were accepted: re-queue
        waiting ones; run again running ones that had produced no output (as a replica's
        crash would, up to the deployment's `prediction_retries`); fail the rest, saying why."""
        for row in await asyncio.to_thread(self.store.unfinished_predictions):
            state = self._from_row(row)
            if state.webhook:  # what signs the calls it still owes
                await self.load_webhook_secret(state.owner)
            try:
                target = self.targets.get(state.deployment or "") or await self.target_for_version(
                    state.version_id
                )
            except NotFound as exc:
                state.finish("failed", error=f"{exc}: it was removed while Ember was down")
                self._persist(state)
                continue
            if row.status == "processing":
                allowed = target.runner.settings.prediction_retries
                if state.output not in (None, []) or state.retries >= allowed:
                    state.finish("failed", error=RESTART_REASON)
                    self._persist(state)
                    self._on_event(state, "done")
                    continue
                state.run_again("Ember restarted while this prediction was running", allowed)
                self._persist(state)
            self.live[state.id] = state
            target.runner.submit(state, force=True)


def serves_openai(version: records.Version) -> list[str]:
    """The OpenAI routes a version's predictor serves itself (read from its schema)."""
    return list((version.openapi_schema or {}).get("info", {}).get("x-ember-openai", []))


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


def _check_name(value: str, what: str) -> None:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,99}", value or ""):
        raise InvalidRequest(f"{what} {value!r} must be lowercase letters, digits, '.', '_' or '-'")


def _account(row: dict[str, Any]) -> ReplicaAccount:
    return ReplicaAccount(
        id=row["id"],
        deployment=row["deployment"],
        hardware=row["hardware"],
        requested_at=aware(row["requested_at"]),
        starting_seconds=row["starting_seconds"],
        busy_seconds=row["busy_seconds"],
        idle_seconds=row["idle_seconds"],
        draining_seconds=row["draining_seconds"],
        rate=row["rate"],
        cost=row["cost"],
        stopped_at=aware(row["stopped_at"]) if row["stopped_at"] else None,
    )


def _history_key(deployment: str) -> str:
    return f"idle_history:{deployment}"


def scaling_settings(
    hardware: str, min_instances: int, max_instances: int, extra: dict[str, Any]
) -> ScalingSettings:
    """A release's scaling settings, validated, or InvalidRequest saying what is wrong."""
    if hardware not in HARDWARE:
        raise InvalidRequest(f"unknown hardware {hardware!r}: see GET /v1/hardware")
    try:
        return ScalingSettings(min_instances=min_instances, max_instances=max_instances, **extra)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'scaling'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise InvalidRequest(f"invalid scaling settings: {problems}") from None


def release_settings(release: records.Release) -> ScalingSettings:
    return ScalingSettings(
        min_instances=release.min_instances,
        max_instances=release.max_instances,
        **(release.scaling or {}),
    )


def _extra_settings(settings: ScalingSettings) -> dict[str, Any]:
    """What the release stores beside its min/max columns (only values set explicitly)."""
    return settings.model_dump(exclude={"min_instances", "max_instances"}, exclude_unset=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _pack(folder: Path) -> str:
    """A package folder as a .tar.gz in a temporary file; returns its path."""
    handle, path = tempfile.mkstemp(prefix="ember-package-", suffix=".tar.gz")
    with os.fdopen(handle, "wb") as target:
        write_archive(folder, target)
    return path


def _check_archive(archive: Path) -> None:
    """InvalidRequest if the archive unpacks to more than MAX_PACKAGE_BYTES or
    MAX_PACKAGE_FILES; reads only its headers."""
    limit = int(os.environ.get("EMBER_MAX_PACKAGE_BYTES", MAX_PACKAGE_BYTES))
    total = count = 0
    try:
        with tarfile.open(archive, "r:*") as bundle:
            for member in bundle:
                parts = Path(member.name).parts
                if member.name.startswith(("/", "\\")) or ".." in parts:
                    raise InvalidRequest(
                        f"the package archive cannot be unpacked: {member.name!r} points "
                        "outside the package; pack the folder itself (`ember deploy` does)"
                    )
                total += max(member.size, 0)
                count += 1
                if total > limit or count > MAX_PACKAGE_FILES:
                    raise InvalidRequest(
                        f"the package unpacks to more than {limit / 2**30:g} GiB or "
                        f"{MAX_PACKAGE_FILES:,} files: leave weights out of it (ship them in a "
                        "PyPI package or fetch them in setup), or raise EMBER_MAX_PACKAGE_BYTES"
                    )
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidRequest(f"the package archive cannot be unpacked: {exc}") from exc


def _unpack(archive: Path, target: Path) -> None:
    """Extract a .tar.gz package safely: no absolute paths, no `..`, no links or devices that
    lead outside (tarfile's `data` filter), and within the size and file-count limits (a small
    archive can unpack to terabytes)."""
    _check_archive(archive)
    if target.exists():
        shutil.rmtree(target)
    staging = target.with_name(target.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*") as bundle:
            bundle.extractall(staging, filter="data")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InvalidRequest(f"the package archive cannot be unpacked: {exc}") from exc
    staging.rename(target)
