"""Helper processes for the fleet benchmark (:mod:`bench.fleet`).

``python -m bench.fleet_sim nodes --store URL --first K --count M --stats OUT``
    runs M *light nodes* (``sim-K`` ... ``sim-{K+M-1}``) in one process. Each
    is Prism's own agent (:class:`prism.agent.node.Agent`) with its own
    :class:`~prism.store.etcd.EtcdStore` (its own gRPC channel to etcd), its
    own lease, its six watches (``spec/``, ``routing/``, ``pins/``,
    ``desired``, ``fleet/commit``, ``fleet/poll``), its heartbeat and lease
    keepalive, and its reports (a :class:`~prism.core.fleet.NodeReport` under
    ``fleet/nodes/<name>``, bound to the lease), exactly as a real agent
    speaks to the store. Only HAProxy is missing: the data plane below
    *stages* every change of routing or pins (a real node's ``prepare map``),
    switches on the commit marker, applies a spec change at once (a reload),
    and reads back every server of the applied spec as exactly ``UP`` with a
    passed check. ``applied.json`` is kept in memory: a real node fsyncs it on
    its own disk, in parallel with every other node, where a thousand light
    nodes would queue on this machine's one disk. Prints ``ready M`` once
    every node has resynced and reported; on SIGTERM revokes every lease and
    writes a JSON summary (sessions started, warnings) to OUT.

``python -m bench.fleet_sim watch HOST PORT KEY OUT [--prefix]``
    the fan-out baseline: one raw aetcd watch of KEY; for every event writes
    ``<value> <CLOCK_MONOTONIC receive time>`` to OUT. Prints ``ready``. With
    ``--prefix``, every key under KEY, with node reports' poll/staged/applied:
    the timeline of each change, phase by phase.

``python -m bench.fleet_sim probe HOST PORT OUT [--conns 2]``
    :mod:`bench.probe` against HOST (a fleet node's own 127.0.0.x address)
    instead of 127.0.0.1; the same output format, read with
    :class:`bench.probe.ProbeLog`.

Every one of these runs in its own process, started and stopped by PID by
:mod:`bench.fleet`; none binds a port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from prism.agent.node import Agent, AgentOptions
from prism.core.fleet import NodeReport
from prism.core.model import backend_name
from prism.core.state import DesiredState
from prism.dataplane.base import PlaneInfo
from prism.errors import Conflict
from prism.haproxy.parsers import ServerConn, StatRow
from prism.node.applier import ApplyReport
from prism.store.etcd import EtcdStore

__all__ = ["LightAgent", "LightPlane", "main"]

_RESPONSES = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other", "rtime")
_START_BATCH = 20  # nodes connecting at once: a thousand at once is a thundering herd


# -- a data plane without HAProxy -------------------------------------------------


class _Applier:
    """Stands in for :class:`prism.node.applier.Applier`: stages map changes, reloads
    spec changes, never fails."""

    last_error: str | None = None

    def __init__(self) -> None:
        self.current: DesiredState | None = None
        self._staged: DesiredState | None = None

    @property
    def staged_revision(self) -> int | None:
        return self._staged.revision if self._staged is not None else None

    async def apply(self, state: DesiredState, *, stage: bool = False) -> ApplyReport:
        current = self.current
        self._staged = None
        same_spec = current is not None and (
            current.spec is state.spec or current.spec == state.spec
        )
        maps_differ = current is None or (
            current.routing != state.routing or current.pins != state.pins
        )
        if stage and same_spec and maps_differ:
            self._staged = state  # prepare map + add map @ver: invisible to traffic
            return ApplyReport(state.revision, "staged")
        self.current = state
        mode = "none" if same_spec and not maps_differ else "reload" if not same_spec else "runtime"
        return ApplyReport(state.revision, mode)

    async def commit_staged(self, revision: int) -> ApplyReport:
        staged = self._staged
        if staged is None or staged.revision != revision:
            raise Conflict(f"no change of revision {revision} is staged here")
        self._staged = None
        self.current = staged
        return ApplyReport(revision, "runtime")


class _Runtime:
    """``show stat`` and ``show servers conn`` as a healthy HAProxy would answer them
    for the applied spec: every server exactly UP after a passed check."""

    def __init__(self, applier: _Applier) -> None:
        self.applier = applier
        self._rows: tuple[object, list[StatRow]] | None = None

    async def show_stat(self) -> list[StatRow]:
        state = self.applier.current
        if state is None:
            return []
        if self._rows is None or self._rows[0] is not state.spec:
            self._rows = (state.spec, _stat_rows(state))
        return self._rows[1]

    async def show_servers_conn(self) -> list[ServerConn]:
        return []


def _stat_rows(state: DesiredState) -> list[StatRow]:
    zero = dict.fromkeys(_RESPONSES, "0")
    rows = []
    for app in state.spec.apps:
        for color in app.colors:
            backend = backend_name(app.name, color.name)
            rows.append(StatRow(backend, "BACKEND", 1, "UP", 1, 0, 0, 0, 0, 0, 0, "", "", zero))
            rows += [
                StatRow(
                    backend,
                    server.name,
                    2,
                    "UP",
                    1,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    "L7OK",
                    f"{server.host}:{server.port}",
                    zero,
                )
                for server in color.servers
            ]
    return rows


class _Supervisor:
    running = True
    pid = 0
    restarts = 0


class _Balancer:
    """No HAProxy, so no server to weigh: the agent's balancer has nothing to do."""

    node = ""
    audit: Any = None

    async def run(self, state: Any) -> None:
        await asyncio.Event().wait()  # until the agent cancels it

    def annotate(self, readings: Any) -> Any:
        return readings


class _Settings:
    maxconn = 9_000
    admin_port = 0

    def __init__(self) -> None:
        self.smoke_key = secrets.token_hex(16)


class _Paths:
    def __init__(self, root: Path) -> None:
        self.root = root


class LightPlane:
    """What :class:`~prism.agent.node.Agent` uses of a
    :class:`~prism.dataplane.local.LocalDataPlane`, with no HAProxy behind it."""

    def __init__(self, root: Path, version: str) -> None:
        self.applier = _Applier()
        self.runtime = _Runtime(self.applier)
        self.supervisor = _Supervisor()
        self.balancer = _Balancer()
        self.settings = _Settings()
        self.paths = _Paths(root)
        self.version = version
        #: no HAProxy, so no request log to receive
        self.requests = None

    async def start(self, state: DesiredState) -> None:
        """HAProxy would start from disk here; a light node has nothing to start."""

    async def reconcile(self, state: DesiredState) -> None:
        """Nothing drifts without an HAProxy."""

    async def info(self) -> PlaneInfo:
        return PlaneInfo(
            healthy=True,
            applied_revision=self.applier.current.revision if self.applier.current else 0,
            last_error=None,
            detail={
                "running": True,
                "pid": 0,
                "version": self.version,
                "restarts": 0,
                "admin_url": "http://127.0.0.1:0/stats",
                "metrics_url": "http://127.0.0.1:0/metrics",
            },
        )


_READINGS = ("haproxy", "servers", "counters", "in_use", "smoke")
_SCALARS = tuple(f.name for f in dataclasses.fields(NodeReport) if f.name not in _READINGS)
_encoded: dict[tuple[Any, ...], dict[str, Any]] = {}
_exact_only: list[str] = []  # set once a shortcut encoding ever differed: use the exact one


class _LightReport(NodeReport):
    """A :class:`NodeReport` whose JSON is byte for byte ``NodeReport.to_json``'s, with
    the readings (servers, counters, ...) encoded once while they stay the same.

    ``NodeReport.to_json`` goes through ``dataclasses.asdict`` (a recursive deep copy)
    on every heartbeat, the largest CPU cost of a light node; a real node pays it on
    its own CPU. Every time readings are encoded anew the whole text is compared
    with ``NodeReport.to_json``'s; if it ever differs (the report changed shape),
    every later report is encoded by ``NodeReport.to_json`` itself.
    """

    def to_json(self) -> str:
        if _exact_only:
            return NodeReport.to_json(self)
        key = (
            self.node,
            self.servers,
            tuple(sorted(self.counters.items())),
            tuple(sorted(self.in_use.items())),
            tuple(sorted(self.haproxy.items())),
            self.smoke,
        )
        readings = _encoded.get(key)
        data = {name: getattr(self, name) for name in _SCALARS}
        if readings is not None:
            return json.dumps(data | readings, sort_keys=True, separators=(",", ":"))
        exact = NodeReport.to_json(self)
        full = json.loads(exact)
        readings = {name: full[name] for name in _READINGS}
        text = json.dumps(data | readings, sort_keys=True, separators=(",", ":"))
        if text != exact:
            _exact_only.append(f"shortcut encoding differs: {text[:200]} != {exact[:200]}")
            logging.getLogger(__name__).warning("light report: %s", _exact_only[0])
            return exact
        if len(_encoded) > 10_000:
            _encoded.clear()
        _encoded[key] = readings
        return text


class LightAgent(Agent):
    """Prism's agent on a :class:`LightPlane`, keeping ``applied.json`` in memory and
    encoding its unchanged readings once (:class:`_LightReport`)."""

    sessions = 0
    published = 0

    async def _publish(self) -> None:
        await super()._publish()
        self.published += 1

    async def _report(self) -> NodeReport:
        report = await super()._report()
        return _LightReport(**vars(report))

    def _load_applied(self) -> DesiredState | None:
        return None

    def _applied(self, state: DesiredState) -> None:
        self.applied = state
        self._error = None

    async def _session(self) -> None:
        self.sessions += 1
        await super()._session()


# -- many light nodes in one process ------------------------------------------------


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(record.getMessage()[:300])


async def _nodes(args: argparse.Namespace) -> dict[str, Any]:
    """Run the light nodes until SIGTERM; return the summary for ``--stats``."""
    warnings = _Count()
    logging.getLogger().addHandler(warnings)
    logging.getLogger().setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    stores: list[EtcdStore] = []
    agents: list[LightAgent] = []
    tasks: list[asyncio.Task[None]] = []
    root = Path(args.stats).parent
    began = time.monotonic()

    async def one(index: int) -> None:
        store = await EtcdStore.open(args.store)
        stores.append(store)
        name = f"sim-{index}"
        options = AgentOptions(
            node=name,
            address=f"127.1.{index // 250}.{index % 250 + 1}",
            heartbeat=args.heartbeat,
            lease_ttl=args.lease_ttl,
        )
        agent = LightAgent(store, LightPlane(root, args.version), options)  # type: ignore[arg-type]
        agents.append(agent)
        tasks.append(asyncio.create_task(agent.run(), name=name))

    summary: dict[str, Any] = {}
    try:
        indexes = list(range(args.first, args.first + args.count))
        for at in range(0, len(indexes), _START_BATCH):
            await asyncio.gather(*(one(i) for i in indexes[at : at + _START_BATCH]))
            if stop.is_set():
                break
        # Until every agent has reported once, which no event announces: poll.
        while not stop.is_set() and not all(a.published for a in agents):
            dead = [t for t in tasks if t.done()]
            if dead:
                failed = dead[0].exception() if not dead[0].cancelled() else None
                print(f"failed {dead[0].get_name()}: {failed!r}", flush=True)
                raise SystemExit(1)
            await asyncio.sleep(0.05)
        print(f"ready {len(agents)} {time.monotonic() - began:.3f}", flush=True)
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20):
                await asyncio.gather(*(a.close() for a in agents), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*(s.close() for s in stores), return_exceptions=True)
        summary.update(
            nodes=len(agents),
            sessions=sum(a.sessions for a in agents),
            warnings=warnings.count,
            first_warnings=warnings.first,
        )
    return summary


# -- the fan-out baseline ---------------------------------------------------------


async def _watch(host: str, port: int, key: str, out: TextIO, *, prefix: bool = False) -> None:
    """Write every event of ``key`` (or every key under it, with ``prefix``) to ``out``.

    One key: ``<value> <receive time>``. A prefix: ``<receive time> <key>
    <mod_revision> <poll>,<staged>,<applied>`` (the last field only for node
    reports, ``-`` otherwise): the timeline of a fleet change.
    """
    import aetcd

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    client = aetcd.Client(host=host, port=port, timeout=10)
    await client.connect()
    if prefix:
        watch = await client.watch_prefix(key.encode())
    else:
        watch = await client.watch(key.encode())
    print("ready", flush=True)

    async def follow() -> None:
        async for event in watch:
            now = time.monotonic()
            if not prefix:
                out.write(f"{event.kv.value.decode()} {now:.6f}\n")
            else:
                name = event.kv.key.decode()
                extra = "-"
                if "fleet/nodes/" in name and event.kv.value:
                    report = json.loads(event.kv.value)
                    extra = f"{report['poll']},{report['staged']},{report['applied']}"
                out.write(f"{now:.6f} {name} {event.kv.mod_revision} {extra}\n")
            out.flush()

    follower = asyncio.create_task(follow())
    await stop.wait()
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await follower
    with contextlib.suppress(Exception):
        await client.close()


# -- a probe of one node's own address ------------------------------------------------


async def _probe(host: str, port: int, conns: int, max_seconds: float) -> list[str]:
    """:func:`bench.probe.probe` against ``host``: the lines to write, summary included."""
    from bench.probe import probe

    lines, total, errors, started = await probe(port, conns, max_seconds, host=host)
    return [*lines, f"S {total} {errors} {started:.6f} {time.monotonic():.6f}"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_sim")
    sub = parser.add_subparsers(dest="what", required=True)
    nodes = sub.add_parser("nodes", help="light nodes: Prism's agent without HAProxy")
    nodes.add_argument("--store", required=True)
    nodes.add_argument("--first", type=int, default=1)
    nodes.add_argument("--count", type=int, required=True)
    nodes.add_argument("--heartbeat", type=float, default=1.0)
    nodes.add_argument("--lease-ttl", type=float, default=3.0)
    nodes.add_argument("--version", default="2.8")
    nodes.add_argument("--stats", required=True)
    watch = sub.add_parser("watch", help="one raw etcd watcher (the fan-out baseline)")
    watch.add_argument("host")
    watch.add_argument("port", type=int)
    watch.add_argument("key")
    watch.add_argument("out")
    watch.add_argument("--prefix", action="store_true", help="every key under KEY")
    probe = sub.add_parser("probe", help="bench.probe against a node's own address")
    probe.add_argument("host")
    probe.add_argument("port", type=int)
    probe.add_argument("out")
    probe.add_argument("--conns", type=int, default=2)
    probe.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args(argv)
    if args.what == "nodes":
        Path(args.stats).write_text(json.dumps(asyncio.run(_nodes(args))))
    elif args.what == "watch":
        with open(args.out, "w") as out:
            asyncio.run(_watch(args.host, args.port, args.key, out, prefix=args.prefix))
    else:
        if not args.host.startswith("127.0.0."):
            sys.exit("probes go to 127.0.0.x only")
        lines = asyncio.run(_probe(args.host, args.port, args.conns, args.max_seconds))
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
