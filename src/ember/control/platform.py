"""The control plane's facade: builds its rooms, wires them, starts and stops them.

Each room holds one job, and the HTTP layer calls the rooms through this object:

- `catalogue` (catalogue.py): models and versions; uploaded packages become versions.
- `deployments` (deployments.py): each deployment's runner, and which runner a request
  reaches (by deployment, model, version or OpenAI name).
- `intake` (intake.py): the one way a prediction gets in: validation, egress, budgets,
  the queue and durability, in that order; and cancellation.
- `book` (prediction_book.py): live and recent predictions, their persistence and listeners.
- `tokens` (tokens.py) and `accounts` (accounts.py): who calls, how often, and the secrets
  that sign their webhooks and Ember's links.
- `files` (files.py): uploaded inputs and output files.
- `budgets` (budget_guard.py), `ledger` (ledger.py), `insights` (insights.py): what is spent,
  the cost report, time series and advice; `prices` (prices.py): what a second costs.

A replica count is decided in `runner.py` (with the pure policies of `policies/`); a price
is applied in `policies/billing.py`; errors are the kinds of `errors.py`. After a crash,
`recovery.py` finishes what was interrupted.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ember.control.accounts import Accounts
from ember.control.budget_guard import BudgetGuard
from ember.control.catalogue import Catalogue
from ember.control.deployments import Deployments, RunnerWiring
from ember.control.files import Files
from ember.control.hardware import DEFAULT_HARDWARE
from ember.control.insights import Insights
from ember.control.intake import Intake
from ember.control.ledger import Ledger
from ember.control.metrics import Metrics
from ember.control.prediction_book import PredictionBook
from ember.control.predictions import utcnow
from ember.control.prices import PriceTable, SavedPrices, configured_overrides
from ember.control.readiness import TierKeeper, default_warm_host_memory
from ember.control.recovery import recover
from ember.control.sealing import Sealer
from ember.control.timeline import Sampler, Timeline
from ember.control.tokens import Tokens
from ember.egress import EgressPolicy
from ember.packages.archive import pack_folder
from ember.packages.loader import read_package
from ember.runtime.base import Runtime
from ember.runtime.local import LocalRuntime
from ember.store import models as records
from ember.store.db import connect, migrate, sqlite_url
from ember.store.repository import Store

logger = logging.getLogger("ember.control")

Progress = Callable[[str], None]


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
        data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = connect(database_url or sqlite_url(data_dir))
        self.store = store = Store(self.engine)  # the rooms' only way to the database
        self.runtime = runtime or LocalRuntime(data_dir)
        self.clock = clock  # what replica and prediction durations are measured with
        self.wall = wall  # what timestamps, budget periods and keep-warm windows are read from
        sealer = Sealer.for_data_dir(data_dir)
        # What webhooks and input URLs may reach (`ember serve --allow-egress` exports it).
        egress = EgressPolicy.from_env()

        self.accounts = Accounts(store, sealer)
        self.tokens = Tokens(store, clock, admin_token)
        self.prices = PriceTable(configured_overrides())
        self.saved_prices = SavedPrices(self.prices, store)
        self.catalogue = Catalogue(store, self.runtime, data_dir / "packages")
        self.book = PredictionBook(store, sealer, self.runtime.outputs_dir, wall)
        self.files = Files(
            store, data_dir / "files", self.runtime.outputs_dir, self.accounts.signer, public_url
        )
        self.timeline = Timeline()
        self.deployments = Deployments(
            store,
            self.runtime,
            self.catalogue,
            RunnerWiring(
                on_event=self.book.on_event,
                on_replica_event=self._on_replica_event,
                resolve_input=self.files.resolve_input,
                prices=self.prices,
                clock=clock,
                wall=wall,
            ),
        )
        self.ledger = Ledger(store, self.deployments.metered_runners, clock, wall)
        self.budgets = BudgetGuard(store, self.ledger.accounts_since, wall)
        self.tiers = TierKeeper(
            self.runtime,
            self.deployments.runners,
            warm_host_memory if warm_host_memory is not None else default_warm_host_memory(),
            clock,
        )
        self.deployments.on_change.append(self.tiers.wake)
        self.metrics = Metrics(self.deployments.statuses)
        self.sampler = Sampler(self.timeline, self.deployments.counts, lambda: wall().timestamp())
        self.book.listeners += [self.metrics.on_prediction, self.budgets.on_prediction]
        self.intake = Intake(
            self.catalogue,
            self.deployments,
            self.book,
            self.accounts,
            self.budgets,
            egress,
            sealer,
            self.files,
            wall,
        )
        self.insights = Insights(
            self.ledger, self.book, self.deployments, self.tokens, self.prices, self.timeline
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> str | None:
        """Migrate, load secrets, recover unfinished predictions, start deployments.

        Returns a newly created admin token the first time Ember starts (to print once).
        """
        await asyncio.to_thread(migrate, self.engine)
        await self.runtime.start()
        self.book.open()
        await self.accounts.load()
        first_token = await self.tokens.first_admin_token()
        await self.saved_prices.load()
        closed = await asyncio.to_thread(self.store.close_unfinished_usage)
        if closed:
            logger.warning("%d replica accounts closed at their last checkpoint", closed)
        await self.budgets.load()
        await self.deployments.load()
        await recover(self.book, self.deployments, self.accounts)
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
        await self.deployments.close()
        await self.ledger.stop()  # the replicas' final accounts are written by now
        await self.runtime.close()
        await self.book.close()
        self.engine.dispose()

    def _on_replica_event(self, deployment: str, kind: str, data: dict[str, Any]) -> None:
        self.metrics.on_replica_event(deployment, kind, data)
        self.timeline.on_replica_event(deployment, self.wall().timestamp(), kind, data)
        self.ledger.on_replica_event(deployment, kind, data)

    # -- what spans rooms -------------------------------------------------------------------

    async def deploy_folder(
        self, folder: Path, owner: str, progress: Progress = lambda line: None
    ) -> tuple[records.Deployment, records.Release]:
        """Deploy a local package folder as model and deployment `owner/<its name>`: the
        model is created if needed, the folder becomes a version, the deployment follows it."""
        name = read_package(folder).name
        model = await self.catalogue.find_model(owner, name)
        if model is None:
            model = await self.catalogue.create_model(owner, name)
        archive = await asyncio.to_thread(pack_folder, folder)
        try:
            version = await self.catalogue.create_version(model, archive, progress)
        finally:
            archive.unlink(missing_ok=True)
        if not await self.deployments.exists(owner, name):
            return await self.deployments.create(
                owner, name, f"{owner}/{name}", version.id, DEFAULT_HARDWARE, 0, 1, owner
            )
        return await self.deployments.update(owner, name, owner, version=version.id)

    async def delete_model(self, owner: str, name: str) -> None:
        """Delete a model no deployment uses, and stop its versions' runners."""
        for version_id in await self.catalogue.delete_model(owner, name):
            await self.deployments.retire(f"version:{version_id}")

    async def delete_deployment(self, owner: str, name: str) -> None:
        await self.deployments.delete(owner, name)
        self.timeline.forget(f"{owner}/{name}")
