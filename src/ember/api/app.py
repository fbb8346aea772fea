"""The HTTP gateway: Replicate's v1 API on top of the control plane."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ember import __version__
from ember.api import dashboard, errors, guards, serialize
from ember.api.auth import principal
from ember.api.dashboard.session import DashboardSession
from ember.api.limits import BodyLimit
from ember.api.openapi import document_errors
from ember.api.routes import (
    account,
    cog_container,
    costs,
    deployments,
    files,
    models,
    openai,
    predictions,
    responses,
    tokens,
)
from ember.control.access import Principal
from ember.control.platform import Platform
from ember.control.predictions import PredictionState
from ember.control.webhooks import WebhookSender

logger = logging.getLogger("ember.api")

# Control-plane event → Replicate webhook event.
WEBHOOK_EVENTS = {"started": "start", "output": "output", "logs": "logs", "done": "completed"}


def webhook_listener(platform: Platform, sender: WebhookSender):  # type: ignore[no-untyped-def]
    def on_event(state: PredictionState, event: str) -> None:
        if state.webhook and event in WEBHOOK_EVENTS:
            sender.notify(
                state.id,
                state.webhook,
                state.webhook_events_filter,
                WEBHOOK_EVENTS[event],
                lambda: serialize.prediction(platform, state),
                account=state.owner,
            )

    return on_event


def metrics_response(platform: Platform) -> Response:
    """Prometheus metrics (text format): predictions, latencies, replicas, scaling."""
    return Response(generate_latest(platform.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def metrics_app(platform: Platform) -> Starlette:
    """`GET /metrics` alone and without a token, for a port that only the Prometheus scraper
    reaches (`ember serve --metrics-port`). Async, so that the scrape reads the platform's
    state on its event loop, not from a thread."""

    async def metrics(request: Request) -> Response:
        return metrics_response(platform)

    return Starlette(routes=[Route("/metrics", metrics)])


def create_app(platform: Platform, *, started: bool = False) -> FastAPI:
    """The ASGI app. Its lifespan starts the platform unless `started`, and stops it.

    Create it before starting the platform yourself, so webhooks hear what recovery does.
    """

    # Listening starts now, before the platform starts: its recovery already has news to send.
    sender = WebhookSender(
        lambda: platform.accounts.webhook_secret,
        secret_for=platform.accounts.webhook_secret_for,
    )
    platform.book.listeners.append(webhook_listener(platform, sender))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not started:
            await platform.start()
        try:
            yield
        finally:
            await platform.stop()
            await sender.aclose()

    app = FastAPI(
        title="Ember",
        version=__version__,
        description="Serverless inference on your own machines, with Replicate's v1 API and "
        "OpenAI's chat, completions and embeddings API.",
        lifespan=lifespan,
        docs_url=None,  # /docs is the dashboard's: Swagger UI from the package, under a CSP
        redoc_url=None,
    )
    app.state.platform = platform
    app.add_middleware(BodyLimit)
    # Added last, so it runs first: the body limit sees a dashboard session's token too.
    app.add_middleware(DashboardSession)
    errors.install(app)
    for module in (
        predictions,
        models,
        deployments,
        files,
        account,
        tokens,
        costs,
        openai,
        responses,
        cog_container,
    ):
        app.include_router(module.router)

    dashboard.install(app)
    document_errors(app)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        """Up, and whether replicas run sandboxed (the dashboard and `ember status` say so)."""
        return {"status": "ok", "sandbox": platform.runtime.sandbox_mode}

    @app.get("/metrics", include_in_schema=False)
    async def metrics(caller: Annotated[Principal, Depends(principal)]) -> Response:
        """Prometheus metrics, for admins only: they name every tenant's deployments and
        traffic. (`ember serve --metrics-port` serves them without a token on another port.)"""
        guards.admin(caller, "read metrics")
        return metrics_response(platform)

    return app
