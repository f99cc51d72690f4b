"""Serving the API: open the node (its lifespan), then run uvicorn until a signal.

``server.json`` in the state directory tells the CLI where the API listens;
it is written once the node is up and removed when it stops.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from prism.api import create_app
from prism.node.files import remove, write_atomic
from prism.node.settings import ensure_token
from prism.serve.lifespan import Prism, ServiceOptions

__all__ = ["ServeOptions", "serve_forever"]


@dataclass(frozen=True)
class ServeOptions:
    service: ServiceOptions
    host: str = "127.0.0.1"
    port: int = 7070
    #: where to announce the URL (default: the state directory itself)
    announce_dir: Path | None = None


async def serve_forever(
    options: ServeOptions, on_ready: Callable[[Prism, str], Awaitable[None]] | None = None
) -> None:
    """Run until SIGINT/SIGTERM; everything opened here is closed on the way out."""
    async with Prism.open(options.service) as prism:
        token = ensure_token(prism.paths)
        url = f"http://{options.host}:{options.port}"
        announce = (options.announce_dir or prism.paths.root) / "server.json"
        config = uvicorn.Config(
            create_app(prism.services, token),
            host=options.host,
            port=options.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        server = uvicorn.Server(config)
        info = {"url": url, "state_dir": str(prism.paths.root), "pid": os.getpid()}
        write_atomic(announce, json.dumps(info) + "\n", mode=0o600)
        try:
            if on_ready is None:
                await server.serve()
            else:
                await _serve_then(server, prism, url, on_ready)
        finally:
            remove(announce)


async def _serve_then(
    server: uvicorn.Server,
    prism: Prism,
    url: str,
    on_ready: Callable[[Prism, str], Awaitable[None]],
) -> None:
    import asyncio

    task = asyncio.create_task(server.serve())
    # uvicorn exposes readiness only as a flag, so poll it briefly.
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if server.started:
        try:
            await on_ready(prism, url)
        except BaseException:
            server.should_exit = True
            await task
            raise
    await task
