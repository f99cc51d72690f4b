"""``prism agent``: the lifespan of one fleet node (its store, HAProxy and agent)."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from prism.agent.node import Agent, AgentOptions
from prism.core.fleet import check_node_name
from prism.dataplane.local import LocalDataPlane
from prism.errors import InvalidInput
from prism.haproxy.binary import find_haproxy
from prism.names import ADDRESS
from prism.node.paths import StatePaths
from prism.node.settings import node_settings
from prism.store.url import StoreOptions, open_store

__all__ = ["NodeOptions", "run_agent"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeOptions:
    """Everything ``prism agent`` is told on its command line."""

    store: StoreOptions
    node: str
    state_dir: Path
    listen_address: str | None = None
    haproxy: str | None = None
    admin_port: int | None = None
    stop_haproxy_on_exit: bool = False
    #: log one request in this many to this agent (0: none; None: as last time, else 1)
    request_log_sample: int | None = None
    heartbeat: float = 1.0
    lease_ttl: float = 3.0
    reconcile_interval: float = 5.0


async def run_agent(options: NodeOptions) -> None:
    """Run one node's agent until cancelled; HAProxy keeps serving after it stops
    (unless ``stop_haproxy_on_exit``)."""
    check_node_name(options.node)
    if not options.store.fleet:
        raise InvalidInput(
            "prism agent needs the fleet's store", hint="--store etcd://HOST:PORT/PREFIX"
        )
    if options.listen_address is not None and ADDRESS.fullmatch(options.listen_address) is None:
        raise InvalidInput(f"invalid --listen-address {options.listen_address[:80]!r}")
    paths = StatePaths.at(options.state_dir)
    paths.check_socket_paths()
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    binary = find_haproxy(options.haproxy)
    settings = node_settings(
        paths,
        options.admin_port,
        listen_address=options.listen_address,
        request_log_sample=options.request_log_sample,
    )
    plane = LocalDataPlane.for_node(paths, settings, binary)
    store = await open_store(options.store, paths.database)
    agent = Agent(
        store,
        plane,
        AgentOptions(
            node=options.node,
            address=options.listen_address or "127.0.0.1",
            heartbeat=options.heartbeat,
            lease_ttl=options.lease_ttl,
            reconcile_interval=options.reconcile_interval,
        ),
    )
    stopping = _stop_on_signals()
    try:
        await agent.run()
    except asyncio.CancelledError:
        if not stopping.is_set():
            raise  # cancelled by someone else: not ours to swallow
    finally:
        try:
            await agent.close()
            await store.close()
            if options.stop_haproxy_on_exit:
                await plane.supervisor.stop()
            else:
                await plane.supervisor.detach()
        finally:
            await plane.close_sockets()


def _stop_on_signals() -> asyncio.Event:
    """SIGTERM and SIGINT cancel the agent, so its lease is revoked and (with
    --stop-haproxy) HAProxy stopped on the way out; the event says it was them."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        if task is not None:
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    return stopping
