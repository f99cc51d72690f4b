"""Serving the API: open the node (its lifespan), then run uvicorn until a signal.

``server.json`` in the state directory tells the CLI where the API listens;
it is written once the node is up and removed when it stops.

With ``tls_cert`` and ``tls_key`` the API is served over HTTPS only, and every
answer carries ``Strict-Transport-Security``. Without TLS the API binds only to
a loopback address, unless ``insecure_bind`` says a person chose otherwise:
the bearer token would cross the network in the clear.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from prism.api import create_app
from prism.api.guard import ApiLimits
from prism.api.ratelimit import RateLimit, parse_rate
from prism.errors import InvalidInput
from prism.node.files import remove, write_atomic
from prism.node.settings import ensure_token
from prism.serve import logs
from prism.serve.lifespan import Prism, ServiceOptions

__all__ = ["DEFAULT_RATE", "ServeOptions", "check_listen", "parse_rate", "serve_forever"]

#: changes a second per token, and the burst allowed on top
DEFAULT_RATE = RateLimit(rate=20.0, burst=40)


@dataclass(frozen=True)
class ServeOptions:
    service: ServiceOptions
    host: str = "127.0.0.1"
    port: int = 7070
    #: where to announce the URL (default: the state directory itself)
    announce_dir: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: serve plain HTTP on a non-loopback address anyway
    insecure_bind: bool = False
    #: None: no limit on changes per second
    rate: RateLimit | None = DEFAULT_RATE
    limits: ApiLimits = field(default_factory=ApiLimits)
    #: seconds an idle keep-alive connection stays open
    keep_alive: float = 5.0

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_listen(options: ServeOptions) -> None:
    """Refuse a listen address or TLS files that would not be safe or would not work."""
    if (options.tls_cert is None) != (options.tls_key is None):
        raise InvalidInput("--tls-cert and --tls-key go together", hint="give both, or neither")
    if options.tls_cert is not None and options.tls_key is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                options.tls_cert, options.tls_key
            )
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInput(
                f"cannot serve TLS with {options.tls_cert} and {options.tls_key}: {exc}",
                hint="the certificate and key must be PEM files that belong together",
            ) from exc
    elif not _is_loopback(options.host) and not options.insecure_bind:
        raise InvalidInput(
            f"refusing to serve the API without TLS on {options.host}: the bearer token"
            " would cross the network in the clear",
            hint="give --tls-cert and --tls-key, bind to 127.0.0.1, or pass --insecure-bind"
            " if something else encrypts the traffic",
        )


async def serve_forever(
    options: ServeOptions, on_ready: Callable[[Prism, str], Awaitable[None]] | None = None
) -> None:
    """Run until SIGINT/SIGTERM; everything opened here is closed on the way out."""
    check_listen(options)
    logs.redact(options.service.store.password)
    async with Prism.open(options.service) as prism:
        token = ensure_token(prism.paths)
        logs.redact(token)
        scheme = "https" if options.tls else "http"
        url = f"{scheme}://{options.host}:{options.port}"
        announce = (options.announce_dir or prism.paths.root) / "server.json"
        limits = options.limits
        if options.tls and not limits.hsts:
            limits = dataclasses.replace(limits, hsts=True)
        config = uvicorn.Config(
            create_app(prism.services, token, limits=limits, rate=options.rate),
            host=options.host,
            port=options.port,
            log_level="warning",
            log_config=None,
            lifespan="off",
            access_log=False,
            http="h11",
            # A backstop: the API's guard answers 431 from 16 KiB of headers on.
            h11_max_incomplete_event_size=64 * 1024,
            timeout_keep_alive=int(options.keep_alive),
            # the dashboard's event streams never end by themselves: stopping waits this long
            timeout_graceful_shutdown=3,
            ssl_certfile=str(options.tls_cert) if options.tls_cert else None,
            ssl_keyfile=str(options.tls_key) if options.tls_key else None,
            server_header=False,
        )
        server = _Server(config)
        info = {"url": url, "state_dir": str(prism.paths.root), "pid": os.getpid()}
        write_atomic(announce, json.dumps(info) + "\n", mode=0o600)
        try:
            if on_ready is None:
                await server.serve()
            else:
                await _serve_then(server, prism, url, on_ready)
        finally:
            remove(announce)


class _Server(uvicorn.Server):
    """uvicorn's server, except that the signal that stopped it is not raised again.

    uvicorn re-raises SIGINT or SIGTERM once it has shut down, so that the process
    ends as the signal says. For SIGTERM that ends the process then and there,
    before Prism's own shutdown (stopping HAProxy with ``--stop-haproxy``, closing
    the store, removing ``server.json``), which runs after :meth:`serve` returns.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()


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
