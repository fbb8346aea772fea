"""`ember serve`: the platform and its HTTP gateway in one process, on one event loop."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from ember.api.app import create_app
from ember.control.platform import Platform
from ember.egress import ALLOW_ENV, EgressPolicy, origin_entry
from ember.runtime.base import Runtime
from ember.runtime.local import LocalRuntime


def make_runtime(kind: str, data_dir: Path, ray_address: str | None) -> Runtime:
    """Local processes, or a Ray cluster (imported only when asked for: Ray is optional)."""
    if kind == "local":
        return LocalRuntime(data_dir)
    from ember.runtime.ray_cluster import PLACE_TIMEOUT_SECONDS, RayRuntime

    # Where each node keeps environments and packages (the same path on every node), and how
    # long an upload waits for a node that can build and check it.
    return RayRuntime(
        data_dir,
        ray_address,
        os.environ.get("EMBER_RAY_NODE_DIR"),
        float(os.environ.get("EMBER_RAY_PLACE_TIMEOUT", PLACE_TIMEOUT_SECONDS)),
    )


def export_egress_policy(allow_egress: Sequence[str], public_url: str) -> None:
    """Put the egress allowlist in this process's environment, where the webhook sender and
    every replica (which inherit it) read it: the operator's entries plus Ember's own public
    URL, since replicas download uploaded files through signed links to it. Bad entries raise
    ValueError before anything starts."""
    policy = EgressPolicy((*allow_egress, origin_entry(public_url)))
    os.environ[ALLOW_ENV] = ",".join(policy.allow)


async def serve(
    host: str,
    port: int,
    data_dir: Path,
    database_url: str | None = None,
    public_url: str | None = None,
    announce: Callable[[str | None, str], None] = lambda token, url: None,
    deploy: Sequence[Path] = (),
    progress: Callable[[str], None] = lambda line: None,
    runtime: str = "local",
    ray_address: str | None = None,
    allow_egress: Sequence[str] = (),
) -> None:
    """Start the platform, tell `announce` the first admin token (if just made) and the URL,
    then serve until SIGINT/SIGTERM, which drains running predictions before exiting.

    `allow_egress`: loopback, private or link-local addresses, ranges or hosts that webhooks
    and input URLs may reach all the same (see ember.egress)."""
    url = public_url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    export_egress_policy(allow_egress, url)
    platform = Platform(
        data_dir,
        database_url,
        public_url=url,
        admin_token=os.environ.get("EMBER_ADMIN_TOKEN"),
        runtime=make_runtime(runtime, data_dir, ray_address),
    )
    app = create_app(platform, started=True)
    first_token = await platform.start()
    for folder in deploy:
        await platform.deploy_folder(folder, "ember", progress)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    announce(first_token, url)
    await server.serve()


def run(**options: Any) -> None:
    """Blocking form of `serve` for the command line (same keyword arguments)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # uvicorn picks uvloop only in Server.run(); serving from our own loop, ask for it here.
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(**options))
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it caught once it has drained and stopped: done.
        pass
    finally:
        loop.close()
