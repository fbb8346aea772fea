"""The deployments registry: each deployment's runner, and where a request runs.

A deployment follows one release at a time (version, hardware, scaling settings); every
change is a new release. A scaling change applies to the live runner; a new version gets a
new runner that takes the queue over while the old one drains in the background (its
predictions stay cancellable). A prediction addressed to a version rather than a deployment
runs on that version's own runner, made on first use.

Resolving a request to a runner happens here and nowhere else: by deployment, by model (its
deployment of the same name, else its latest version), by version, and by the names
OpenAI's `model` field accepts (owner/name, and unclaimed bare names and aliases).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ember.control.catalogue import Catalogue, check_name, serves_openai
from ember.control.errors import Conflict, InvalidRequest, NotFound
from ember.control.health_watch import interval_from_env
from ember.control.policies.keepalive import IdleHistory
from ember.control.predictions import PredictionState, utcnow
from ember.control.prices import PriceTable
from ember.control.runner import DeploymentRunner, OnEvent, OnReplicaEvent, ResolveInput
from ember.control.scaling import ScalingSettings, extra_settings, release_settings, validated
from ember.packages.spec import PackageSpec
from ember.runtime.base import Runtime
from ember.store import models as records
from ember.store.repository import Store

logger = logging.getLogger("ember.control")


@dataclass
class Target:
    """Where a prediction runs: a deployment's runner, or a version's own runner."""

    runner: DeploymentRunner
    model: str
    version: records.Version
    deployment: str | None


@dataclass
class RunnerWiring:
    """What every runner is given: where its events go, how it resolves inputs, its clocks
    and the price of its hardware."""

    on_event: OnEvent
    on_replica_event: OnReplicaEvent
    resolve_input: ResolveInput
    prices: PriceTable
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime.datetime] = utcnow
    # How often each ready replica's model is asked whether it is well (0: never).
    healthcheck_seconds: float = field(default_factory=interval_from_env)


class Deployments:
    def __init__(
        self, store: Store, runtime: Runtime, catalogue: Catalogue, wiring: RunnerWiring
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.catalogue = catalogue
        self.wiring = wiring
        self.targets: dict[str, Target] = {}
        # Told when runners come or go, or settings change (the tier keeper re-plans).
        self.on_change: list[Callable[[], None]] = []
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired_runners: set[DeploymentRunner] = set()

    # -- what runs --------------------------------------------------------------------------

    def runners(self) -> list[DeploymentRunner]:
        return [t.runner for t in self.targets.values()]

    def metered_runners(self) -> list[DeploymentRunner]:
        """Runners whose replicas are billed now: current ones and replaced ones draining."""
        return [*self.runners(), *self._retired_runners]

    def statuses(self) -> list[tuple[str, dict[str, Any]]]:
        return [(key, target.runner.status()) for key, target in self.targets.items()]

    def counts(self) -> list[tuple[str, dict[str, Any]]]:
        return [(key, target.runner.counts()) for key, target in self.targets.items()]

    def stop_prediction(self, state: PredictionState) -> None:
        """Ask whichever runner holds a live prediction to cancel it (draining ones too)."""
        for runner in self.metered_runners():
            if runner.cancel(state):
                break

    # -- the records ------------------------------------------------------------------------

    async def get(self, owner: str, name: str) -> tuple[records.Deployment, records.Release]:
        deployment = await asyncio.to_thread(self.store.deployment, owner, name)
        if deployment is None:
            raise NotFound(f"Deployment {owner}/{name} not found")
        return deployment, await asyncio.to_thread(self.store.current_release, deployment)

    async def exists(self, owner: str, name: str) -> bool:
        return await asyncio.to_thread(self.store.deployment, owner, name) is not None

    async def all(self) -> list[tuple[records.Deployment, records.Release]]:
        result = []
        for deployment in await asyncio.to_thread(self.store.deployments):
            release = await asyncio.to_thread(self.store.current_release, deployment)
            result.append((deployment, release))
        return result

    async def create(
        self,
        owner: str,
        name: str,
        model_ref: str,
        version_id: str | None,
        hardware: str,
        min_instances: int,
        max_instances: int,
        created_by: str,
        scaling: dict[str, Any] | None = None,
    ) -> tuple[records.Deployment, records.Release]:
        check_name(owner, "owner")
        check_name(name, "name")
        if await self.exists(owner, name):
            raise Conflict(f"Deployment {owner}/{name} already exists")
        model, version = await self.catalogue.model_version(model_ref, version_id)
        settings = validated(hardware, min_instances, max_instances, scaling or {})
        deployment, release = await asyncio.to_thread(
            self.store.create_deployment,
            owner,
            name,
            model_id=model.id,
            version_id=version.id,
            hardware=hardware,
            min_instances=settings.min_instances,
            max_instances=settings.max_instances,
            scaling=extra_settings(settings),
            created_by=created_by,
        )
        self._install_runner(deployment, release, model, version)
        return deployment, release

    async def update(
        self, owner: str, name: str, created_by: str, **changes: Any
    ) -> tuple[records.Deployment, records.Release]:
        """PATCH: version, hardware or any scaling setting; a new release. Scaling changes
        apply live; a new version gets new replicas while the old ones drain."""
        deployment, current = await self.get(owner, name)
        changes = {k: v for k, v in changes.items() if v is not None}
        scaling = {**(current.scaling or {}), **changes.pop("scaling", {})}
        if "version" in changes:
            model = await self.catalogue.model_of(current.model_id)
            version = await self.catalogue.version(changes.pop("version"), model)
            changes["version_id"] = version.id
        settings = validated(
            changes.get("hardware", current.hardware),
            changes.get("min_instances", current.min_instances),
            changes.get("max_instances", current.max_instances),
            scaling,
        )
        changes["scaling"] = extra_settings(settings)
        release = await asyncio.to_thread(
            self.store.add_release, deployment, created_by=created_by, **changes
        )
        if release.version_id != current.version_id:
            version = await self.catalogue.version(release.version_id)
            model = await self.catalogue.model_of(release.model_id)
            self._install_runner(deployment, release, model, version)
        else:
            runner = self.targets[f"{owner}/{name}"].runner
            runner.hardware = release.hardware  # replicas started from now on run on it
            runner.update_settings(settings)
        self._changed()
        return deployment, release

    async def delete(self, owner: str, name: str) -> None:
        deployment, _ = await self.get(owner, name)
        await asyncio.to_thread(self.store.delete_deployment, deployment.id)
        await self.retire(f"{owner}/{name}")

    # -- runners ----------------------------------------------------------------------------

    async def load(self) -> None:
        """A runner for every deployment in the database, with the traffic it learned."""
        for deployment, release in await self.all():
            version = await self.catalogue.version(release.version_id)
            model = await self.catalogue.model_of(release.model_id)
            runner = self._install_runner(deployment, release, model, version)
            saved = await asyncio.to_thread(self.store.setting, _history_key(runner.name))
            if saved is not None:
                try:
                    runner.history = IdleHistory.from_dict(json.loads(saved))
                except (ValueError, TypeError):
                    logger.warning("%s: ignoring an unreadable idle history", runner.name)

    async def close(self) -> None:
        """Drain every runner; keep what each deployment learned of its traffic."""
        await asyncio.gather(*(t.runner.close(drain=True) for t in self.targets.values()))
        for key, target in self.targets.items():
            if target.deployment is not None:
                history = json.dumps(target.runner.history.to_dict())
                await asyncio.to_thread(self.store.set_setting, _history_key(key), history)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

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
            self._drain_in_background(old.runner)
        self.targets[key] = Target(runner, f"{model.owner}/{model.name}", version, key)
        runner.start()
        runner.wake()  # queued predictions moved over, or min_instances: act now
        self._changed()
        return runner

    def _new_runner(
        self,
        key: str,
        version: records.Version,
        hardware: str,
        settings: ScalingSettings | None = None,
    ) -> DeploymentRunner:
        wiring = self.wiring
        return DeploymentRunner(
            key,
            PackageSpec.model_validate(version.spec),
            self.runtime,
            wiring.on_event,
            wiring.resolve_input,
            settings,
            clock=wiring.clock,
            wall=wiring.wall,
            on_replica_event=wiring.on_replica_event,
            hardware=hardware,
            rate=lambda sku: wiring.prices.get(sku).per_second,
            healthcheck_seconds=wiring.healthcheck_seconds,
        )

    def _drain_in_background(self, runner: DeploymentRunner) -> None:
        """Drain a replaced runner; its predictions stay cancellable meanwhile."""
        self._retired_runners.add(runner)
        task = asyncio.create_task(runner.close(drain=True))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        task.add_done_callback(lambda _: self._retired_runners.discard(runner))

    async def retire(self, key: str) -> None:
        """Stop a runner now (its deployment or version is gone), canceling what it queued."""
        target = self.targets.pop(key, None)
        if target is not None:
            for state in list(target.runner.queue):
                target.runner.cancel(state)
            await target.runner.close(drain=False)
            self._changed()

    def _changed(self) -> None:
        for listener in self.on_change:
            listener()

    # -- where a request runs ---------------------------------------------------------------

    def for_deployment(self, owner: str, name: str) -> Target:
        target = self.targets.get(f"{owner}/{name}")
        if target is None:
            raise NotFound(f"Deployment {owner}/{name} not found")
        return target

    async def for_model(self, owner: str, name: str, own: bool = True) -> Target:
        """A model's predictions run on its deployment of the same name, if any, else on
        its latest version. Another owner's predictions on a public model (`own=False`)
        run on the version: that deployment, and its bill, are the model owner's."""
        target = self.targets.get(f"{owner}/{name}") if own else None
        if target is not None:
            return target
        model, version = await self.catalogue.model_version(f"{owner}/{name}", None)
        return self._version_target(model, version)

    def known_version(self, version_id: str) -> Target | None:
        """The version's runner if one was made already (no lookup)."""
        return self.targets.get(f"version:{version_id}")

    async def for_version(self, reference: str) -> Target:
        """`version_id` or `owner/name:version_id`."""
        model_ref, _, version_id = reference.rpartition(":")
        target = self.known_version(version_id)
        if target is None:
            version = await self.catalogue.version(version_id)
            model = await self.catalogue.model_of(version.model_id)
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
            self._changed()
        return target

    def openai_models(self, owner: str | None = None, home: str | None = None) -> dict[str, Target]:
        """Every name the OpenAI API's `model` field accepts → its deployment: `owner/name`,
        and the bare name and the package's aliases where no other deployment claims them
        (a shared one would route by whichever was deployed last: ask by owner/name).
        With `owner`, only that owner's deployments (what its tokens may call). A bare name
        or alias that one deployment of `home` (the caller's own account) claims is the
        caller's, whoever else claims it: otherwise a tenant could take an admin's bare name
        away by deploying one of the same name."""
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
            if name in names:
                continue
            own = [t for key, t in claimants.items() if key.partition("/")[0] == home]
            if len(own) == 1:
                names[name] = own[0]
            elif len(claimants) == 1:
                names[name] = next(iter(claimants.values()))
        return names

    def for_openai(
        self, model: str, route: str, owner: str | None = None, home: str | None = None
    ) -> Target:
        """The deployment an OpenAI request's `model` names (among `owner`'s, if given;
        bare names first within `home`'s); NotFound in OpenAI's words, or InvalidRequest
        when it does not serve that route."""
        target = self.openai_models(owner, home).get(model)
        if target is None:
            raise NotFound(f"The model `{model}` does not exist or you do not have access to it.")
        routes = serves_openai(target.version)
        if route not in routes:
            raise InvalidRequest(
                f"The model `{model}` does not serve {route}; it serves: {', '.join(routes)}"
            )
        return target


def _history_key(deployment: str) -> str:
    return f"idle_history:{deployment}"
