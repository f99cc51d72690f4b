"""7. Fleet: one change, verified on every node, in lockstep, at several fleet sizes.

Real fleets (:class:`~prism.testing.fleet.LocalFleet`): one etcd, N ``prism
agent`` nodes each supervising its own HAProxy on 127.0.0.2, 127.0.0.3, ...
(one app ``shop`` bound to ``0.0.0.0:PORT``, so every node listens on its own
address; three colors on demo backends), one ``prism serve --store etcd://``.
Every agent runs with the production heartbeat (1 s) and lease (3 s).

What is measured, each figure next to a baseline taken in the same run:

1. **Call → verified on all N nodes**: the round trip of ``PUT
   /apps/shop/weights``, which answers only once every live node has staged
   the new map, the commit marker went out, and every node has switched and
   read it back. Baseline: a raw etcd put → received by N watcher processes
   (plain aetcd watches on one key; :mod:`bench.fleet_sim`), on the same etcd
   while the fleet idles.
2. **Lockstep skew**: a probe on every node's listener timestamps the first
   response of the new color; skew = last node's - first node's, over
   blue 100 <-> green 100 flips. References: the spread of one watch fan-out
   to as many watchers (first to last receiver of the same put: the protocol's
   floor, since the commit marker is one such fan-out), and the flip's own
   round trip.
3. **Zero loss**: ``hey`` on every node's listener while cutovers (``POST
   /apps/shop/release``) and weight moves run; non-2xx per node. Baseline:
   the same operations on hand-written HAProxies (same binary, backends,
   addresses), each change written to a map file and applied by reloading
   every node through its master socket, paced to last as long.
4. **Memory**: RSS of one agent, its HAProxy, the control plane and etcd at
   the largest real fleet.
5. **Past this machine**: light nodes (:mod:`bench.fleet_sim`: Prism's own
   agent code, each with its own etcd connection, lease, watches and
   heartbeat, without HAProxy) against one etcd and a real control plane;
   convergence per change and CPU seconds per change of etcd and the control
   plane, next to the real fleet's figures; a size "fits" when every node
   joined, every change converged and no agent had to resync.

Every move is also split into phases (poll, answers, routing commit, staged,
commit marker, applied) from one more watcher timestamping every Prism key's
etcd events, and the section ends with what limits fleet size and how the
protocol would shard, from these figures. ``--quick``: 2 real nodes, 3 moves,
20 light nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    BenchContext,
    HAProxy,
    HeyResult,
    Section,
    children_of,
    free_port,
    haproxy_globals,
    parse_hey,
    pct,
    ratio,
    rss_kib,
    run_haproxy,
    table,
    temp_dir,
    wait_servers_up,
)
from bench.probe import ProbeLog, _read_line
from prism.core.fleet import NodeReport
from prism.errors import PrismError
from prism.testing.etcd import EtcdServer, start_etcd
from prism.testing.fleet import LocalFleet
from prism.testing.processes import Backend, BackendSpec, ManagedProcess, backends

NAME = "fleet"
TITLE = "7. Fleet: N nodes in step"
COLORS = ("blue", "green", "red")
ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT = 1.0  # the agent's default --heartbeat
LEASE_TTL = 3.0  # the agent's default --lease-ttl
NODES_PER_SIM_PROCESS = 100
SIM_PROCESSES = 4  # at most: a few event loops for two cores
FANOUT_KEY = "/bench/fanout"
_METRICS = {
    "revisions": "etcd_debugging_mvcc_current_revision",
    "txns": "etcd_mvcc_txn_total",
    "puts": "etcd_mvcc_put_total",
    "ranges": "etcd_mvcc_range_total",
    "events": "etcd_debugging_mvcc_events_total",
    "keys": "etcd_debugging_mvcc_keys_total",
    "watchers": "etcd_debugging_mvcc_watcher_total",
    "slow_watchers": "etcd_debugging_mvcc_slow_watcher_total",
    "proposals": "etcd_server_proposals_committed_total",
    "renewals": "etcd_debugging_lease_renewed_total",
    "rx_bytes": "etcd_network_client_grpc_received_bytes_total",
    "tx_bytes": "etcd_network_client_grpc_sent_bytes_total",
    "db_bytes": "etcd_mvcc_db_total_size_in_bytes",
}


# -- small pieces ---------------------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of these processes (all their threads), from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def etcd_metrics(etcd: EtcdServer) -> dict[str, float]:
    """The etcd counters and gauges of :data:`_METRICS`, read from its ``/metrics``."""
    text = urllib.request.urlopen(f"http://{etcd.endpoint}/metrics", timeout=10).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        for short, metric in _METRICS.items():
            if name == metric:
                values[short] = float(value)
    return values


def report_text(etcd: EtcdServer, node: str) -> str:
    """One node's report (``fleet/nodes/<node>``) as stored in etcd ("" if absent)."""

    async def read() -> str:
        import aetcd

        client = aetcd.Client(host=etcd.host, port=etcd.client_port, timeout=10)
        await client.connect()
        try:
            got = await client.get(f"/prism/kvfleet/nodes/{node}".encode())
            return got.value.decode() if got is not None else ""
        finally:
            await client.close()

    return asyncio.run(read())


def codec_us(text: str, rounds: int = 2000) -> tuple[float, float]:
    """µs per ``NodeReport.from_json`` and per ``to_json`` of this report: what the
    control plane pays per report it mirrors, and a node per report it puts."""
    if not text:
        return float("nan"), float("nan")
    began = time.perf_counter()
    for _ in range(rounds):
        report = NodeReport.from_json(text)
    decode = (time.perf_counter() - began) / rounds * 1e6
    began = time.perf_counter()
    for _ in range(rounds):
        report.to_json()
    return decode, (time.perf_counter() - began) / rounds * 1e6


def fleet_spec(port: int, servers: Mapping[str, Backend]) -> dict[str, Any]:
    """One app on every node's own address (``0.0.0.0`` + each agent's --listen-address)."""
    return {
        "apps": [
            {
                "name": "shop",
                "bind": f"0.0.0.0:{port}",
                "stable": "blue",
                "check": {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2},
                "drain_timeout_ms": "3s",
                "retries": 3,
                "pins": [{"name": "tenant", "source": "header", "key": "X-Tenant"}],
                "colors": [
                    {
                        "name": color,
                        "version": b.version,
                        "servers": [{"name": "s1", "host": "127.0.0.1", "port": b.port}],
                    }
                    for color, b in servers.items()
                ],
            }
        ]
    }


def weight_plan(count: int, seed: int) -> list[dict[str, int]]:
    """``count`` weight vectors over the three colors (steps of 5), each unlike the last."""
    rng = random.Random(seed)
    plan: list[dict[str, int]] = []
    while len(plan) < count:
        cuts = sorted(rng.sample(range(0, 101, 5), 2))
        shares = (cuts[0], cuts[1] - cuts[0], 100 - cuts[1])
        weights = {c: w for c, w in zip(COLORS, shares, strict=True) if w}
        if not plan or plan[-1] != weights:
            plan.append(weights)
    return plan


class Api:
    """One keep-alive client to a control plane; gate refusals (409) are retried."""

    def __init__(self, fleet: LocalFleet) -> None:
        self.http = fleet.client()
        self.refused = 0
        self.failures: list[str] = []

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, body: Any = None) -> tuple[float, Any]:
        """(ms of the successful attempt, its JSON); RuntimeError on anything but 2xx/409."""
        for _ in range(100):
            began = time.perf_counter()
            reply = self.http.request(method, path, json=body)
            took = (time.perf_counter() - began) * 1000
            if reply.status_code == 409:
                self.refused += 1
                time.sleep(0.1)
                continue
            if not reply.is_success:
                raise RuntimeError(f"{method} {path}: HTTP {reply.status_code}: {reply.text[:600]}")
            return took, reply.json()
        raise RuntimeError(f"{method} {path} kept being refused")

    def weights(self, weights: Mapping[str, int]) -> float:
        took, _ = self.call("PUT", "/apps/shop/weights", {"weights": weights, "reason": "bench"})
        return took

    def release(self, to: str) -> float:
        took, record = self.call("POST", "/apps/shop/release", {"to": to, "reason": "bench"})
        if record.get("phase") != "completed":
            why = "; ".join(
                f"{step.get('name')}: {step.get('message')}"
                for step in record.get("steps", [])
                if not step.get("ok")
            )
            raise RuntimeError(f"release to {to} ended {record.get('phase')}: {why[:500]}")
        return took

    def active(self) -> dict[str, int]:
        _, status = self.call("GET", "/apps/shop")
        return dict(status["weights"])


def wait_fleet_up(api: Api, nodes: int, timeout: float = 60) -> None:
    """Until every server of every color is exactly UP on ``nodes`` live nodes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        _, last = api.call("GET", "/apps/shop")
        statuses = [
            node["status"]
            for color in last["colors"]
            for server in color["servers"]
            for node in server.get("nodes", {}).values()
        ]
        if len(statuses) == len(COLORS) * nodes and all(s == "UP" for s in statuses):
            return
        time.sleep(0.1)
    raise RuntimeError(f"shop not UP on {nodes} nodes in time: {str(last)[:1500]}")


def wait_live(api: Api, count: int, timeout: float) -> None:
    """Poll ``GET /nodes`` until ``count`` nodes are live (an error answer is retried,
    unlike ``LocalFleet.wait_live``, which breaks on one)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            reply = api.http.get("/nodes")
        except httpx.HTTPError as exc:
            last = str(exc)
        else:
            rows = reply.json() if reply.is_success else None
            if isinstance(rows, list):
                live = sum(1 for r in rows if r.get("state") == "live")
                if live >= count:
                    return
                last = f"{live} of {count} live"
            else:
                last = f"HTTP {reply.status_code}: {reply.text[:300]}"
        time.sleep(0.25)
    raise RuntimeError(f"not {count} nodes live within {timeout:.0f} s: {last}")


def haproxy_pids(fleet: LocalFleet) -> list[int]:
    """Every node's HAProxy master and workers."""
    pids = []
    for index in range(len(fleet.agents)):
        pid = fleet.haproxy_pid(index)
        if pid is not None:
            pids += [pid, *children_of(pid)]
    return pids


def agent_pids(fleet: LocalFleet) -> list[int]:
    return [n.process.pid for n in fleet.agents if n.process is not None]


# -- measuring changes ------------------------------------------------------------------


@dataclass
class Changes:
    """A run of changes: each round trip, and CPU and etcd work while they ran.

    ``cpu`` is CPU seconds per change of each process group over the whole run
    (so it includes their idle work meanwhile: heartbeats, lease refreshes);
    ``idle`` is each group's CPU seconds per second in a quiet window just
    before. ``etcd`` holds etcd's counters per change (gauges: at the end).
    """

    ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    idle: dict[str, float] = field(default_factory=dict)
    etcd: dict[str, float] = field(default_factory=dict)
    etcd_idle: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    refused: int = 0
    #: (monotonic start, end) of each successful move
    calls: list[tuple[float, float]] = field(default_factory=list)
    #: phase -> ms per move, from the etcd timeline (:func:`phases`)
    phases: dict[str, list[float]] = field(default_factory=dict)

    def marginal(self, group: str) -> float:
        """CPU seconds per change above what the group spends idle in as much time."""
        if not self.ms:
            return float("nan")
        return self.cpu[group] - self.idle[group] * self.seconds / len(self.ms)


def measure_changes(
    api: Api,
    etcd: EtcdServer,
    groups: Mapping[str, Sequence[int]],
    plan: Sequence[Mapping[str, int]],
    *,
    work: Path,
    nodes: int,
    idle_seconds: float,
    settle_seconds: float = 2.0,
    budget: float = float("inf"),
) -> Changes:
    """A pause, an idle window, then every weight move of ``plan`` (for ``budget`` s at
    most), with a :func:`timeline` of etcd events to split each move into phases."""
    result = Changes()
    pids = dict(groups)
    with timeline(etcd, work) as path:
        time.sleep(settle_seconds)  # let joins and the last apply's reports die down
        m0, c0, t0 = (
            etcd_metrics(etcd),
            {g: cpu_seconds(p) for g, p in pids.items()},
            time.monotonic(),
        )
        time.sleep(idle_seconds)
        m1, c1, t1 = (
            etcd_metrics(etcd),
            {g: cpu_seconds(p) for g, p in pids.items()},
            time.monotonic(),
        )
        refused = api.refused
        for weights in plan:
            if time.monotonic() - t1 > budget:
                break
            began = time.monotonic()
            try:
                result.ms.append(api.weights(weights))
                result.calls.append((began, time.monotonic()))
            except (RuntimeError, httpx.HTTPError) as exc:
                result.failures.append(str(exc)[:400])
            time.sleep(0.05)
        m2, c2, t2 = (
            etcd_metrics(etcd),
            {g: cpu_seconds(p) for g, p in pids.items()},
            time.monotonic(),
        )
        time.sleep(0.3)  # the timeline's last events
    result.idle = {g: (c1[g] - c0[g]) / (t1 - t0) for g in pids}
    result.etcd_idle = {k: (m1[k] - m0.get(k, 0)) / (t1 - t0) for k in m1}
    result.seconds = t2 - t1
    done = max(len(result.ms) + len(result.failures), 1)
    result.cpu = {g: (c2[g] - c1[g]) / done for g in pids}
    gauges = {"keys", "watchers", "db_bytes"}
    result.etcd = {k: m2[k] if k in gauges else (m2[k] - m1.get(k, 0)) / done for k in m2}
    result.refused = api.refused - refused
    result.phases = phases(path, result.calls, nodes)
    return result


# -- where a change's time goes ----------------------------------------------------------

PHASES = (
    "call → poll written",
    "poll → every node answered",
    "→ routing committed",
    "→ every node staged",
    "→ commit marker written",
    "→ every node applied",
    "→ API answered",
)
#: per move: first to last node reporting the commit applied (not a phase)
APPLIED_SPREAD = "applied spread"


@contextlib.contextmanager
def timeline(etcd: EtcdServer, work: Path) -> Iterator[Path]:
    """A watcher process on every Prism key, writing when each event arrived (and each
    node report's poll/staged/applied) to the yielded file; read it after the block."""
    out = work / "timeline.txt"
    command = [sys.executable, "-m", "bench.fleet_sim", "watch", etcd.host]
    command += [str(etcd.client_port), "/prism/kv", str(out), "--prefix"]
    process = ManagedProcess(
        command,
        name="fleet-timeline",
        pipe_stdout=True,
        cwd=ROOT,
    )
    try:
        if _read_line(process, 30) != "ready":
            raise RuntimeError(f"timeline watcher did not start: {process.stderr_text()}")
        yield out
    finally:
        process.stop(timeout=5)
        process.close()


def phases(path: Path, calls: Sequence[tuple[float, float]], nodes: int) -> dict[str, list[float]]:
    """Split each move into :data:`PHASES` (ms), from the etcd events around it.

    The poll the move's gate wrote, the last node answering it, the routing commit
    (the ``desired`` key, revision R), the last node reporting R staged, the commit
    marker, the last node reporting R applied, and the API's answer. All times are
    when one more watcher (this timeline's) received the event. Also, under
    :data:`APPLIED_SPREAD`, the first to last node reporting R applied.
    """
    events: list[tuple[float, str, int, tuple[int, int, int] | None]] = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            at, key, revision, extra = line.split(" ", 3)
            fields = None
            if extra != "-":
                polled, staged_at, applied_at = (int(x) for x in extra.split(","))
                fields = (polled, staged_at, applied_at)
            events.append((float(at), key, int(revision), fields))
    out: dict[str, list[float]] = {p: [] for p in PHASES}

    def first(after: float, until: float, suffix: str) -> tuple[float, int] | None:
        for at, key, revision, _ in events:
            if after <= at <= until and key.endswith(suffix):
                return at, revision
        return None

    def each_node(
        after: float, until: float, at_least: int, columns: Sequence[int]
    ) -> list[float] | None:
        """When each node first reported one of ``columns`` (poll, staged, applied) >=
        ``at_least``; None unless every node did."""
        seen: dict[str, float] = {}
        for at, key, _, fields in events:
            if not (after <= at <= until) or fields is None or key in seen:
                continue
            if any(fields[c] >= at_least for c in columns):
                seen[key] = at
        return sorted(seen.values()) if len(seen) >= nodes else None

    def last_node(
        after: float, until: float, at_least: int, columns: Sequence[int]
    ) -> float | None:
        times = each_node(after, until, at_least, columns)
        return times[-1] if times else None

    for index, (began, ended) in enumerate(calls):
        until = calls[index + 1][0] if index + 1 < len(calls) else ended + 1.0
        poll = first(began, until, "kvfleet/poll")
        if poll is None:
            continue
        answered = last_node(poll[0], until, poll[1], (0,))
        desired = first(poll[0], until, "kvdesired")
        if answered is None or desired is None:
            continue
        r = desired[1]
        staged = last_node(desired[0], until, r, (1, 2))
        marker = first(desired[0], until, "kvfleet/commit")
        if staged is None or marker is None:
            continue
        switched = each_node(marker[0], until, r, (2,))
        if switched is None:
            continue
        applied = switched[-1]
        out.setdefault(APPLIED_SPREAD, []).append((applied - switched[0]) * 1000)
        marks = [began, poll[0], answered, desired[0], staged, marker[0], applied, ended]
        for name, (a, b) in zip(PHASES, itertools.pairwise(marks), strict=True):
            out[name].append((b - a) * 1000)
    return out


# -- the fan-out baseline ---------------------------------------------------------------


@dataclass
class FanOut:
    """Raw etcd put → every watcher received: latency to the last one, and the spread
    between the first and the last receiver of the same put."""

    watchers: int
    latency_ms: list[float] = field(default_factory=list)
    spread_ms: list[float] = field(default_factory=list)
    missed: int = 0


def fanout(etcd: EtcdServer, watchers: int, puts: int, work: Path) -> FanOut:
    """Start ``watchers`` watcher processes on one key, put ``puts`` values, collect."""
    outs = [work / f"watch-{i}.txt" for i in range(watchers)]
    processes: list[ManagedProcess] = []
    began: dict[str, float] = {}
    try:
        for out in outs:
            process = ManagedProcess(
                [
                    sys.executable,
                    "-m",
                    "bench.fleet_sim",
                    "watch",
                    etcd.host,
                    str(etcd.client_port),
                    FANOUT_KEY,
                    str(out),
                ],
                name="fanout-watcher",
                pipe_stdout=True,
                cwd=ROOT,
            )
            processes.append(process)
        for process in processes:
            if _read_line(process, 30) != "ready":
                raise RuntimeError(f"watcher did not start: {process.stderr_text()}")
        asyncio.run(_put_all(etcd, outs, puts, began))
    finally:
        for process in processes:
            process.stop(timeout=5)
            process.close()
    received: dict[str, list[float]] = {}
    for out in outs:
        for line in out.read_text().splitlines():
            value, _, at = line.partition(" ")
            received.setdefault(value, []).append(float(at))
    result = FanOut(watchers)
    for value, start in began.items():
        times = received.get(value, [])
        if len(times) < watchers:
            result.missed += 1
            continue
        result.latency_ms.append((max(times) - start) * 1000)
        result.spread_ms.append((max(times) - min(times)) * 1000)
    return result


async def _put_all(
    etcd: EtcdServer, outs: Sequence[Path], puts: int, began: dict[str, float]
) -> None:
    import aetcd

    client = aetcd.Client(host=etcd.host, port=etcd.client_port, timeout=10)
    await client.connect()
    try:
        # Warm up until every watcher has seen a put: then each watch is surely open.
        deadline = time.monotonic() + 20
        while True:
            await client.put(FANOUT_KEY.encode(), b"warm")
            await asyncio.sleep(0.2)
            if all(o.exists() and "warm" in o.read_text() for o in outs):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("fan-out watchers never saw the warm-up put")
        rng = random.Random(7)
        for i in range(puts):
            value = f"p{i}"
            began[value] = time.monotonic()
            await client.put(FANOUT_KEY.encode(), value.encode())
            await asyncio.sleep(0.15 + rng.random() * 0.1)
        await asyncio.sleep(0.5)
    finally:
        await client.close()


# -- lockstep skew ---------------------------------------------------------------------


@contextlib.contextmanager
def node_probe(host: str, port: int, work: Path, conns: int = 2) -> Iterator[ProbeLog]:
    """:func:`bench.probe.run_probe` against a node's own address (127.0.0.x)."""
    out = work / f"probe-{host}-{port}.txt"
    process = ManagedProcess(
        [
            sys.executable,
            "-m",
            "bench.fleet_sim",
            "probe",
            host,
            str(port),
            str(out),
            "--conns",
            str(conns),
        ],
        name="fleet-probe",
        pipe_stdout=True,
        cwd=ROOT,
    )
    log = ProbeLog()
    try:
        line = _read_line(process, 15)
        if line != "ready":
            raise RuntimeError(f"probe of {host} did not start: {line!r} {process.stderr_text()}")
        yield log
    finally:
        process.stop(timeout=10)
        process.close()
    for raw in out.read_text().splitlines():
        parts = raw.split()
        if parts and parts[0] == "T":
            log.times.append(float(parts[1]))
            log.colors.append(parts[2])
        elif parts and parts[0] == "S":
            log.requests, log.errors = int(parts[1]), int(parts[2])
            log.seconds = float(parts[4]) - float(parts[3])


def fsync_ms(work: Path, writes: int = 30) -> list[float]:
    """ms per ``write_atomic`` of a small map file here (temp file, fsync, rename, fsync of
    the directory): what each node does between seeing the commit marker and ``commit
    map``. Nodes sharing this machine share its disk, so these queue."""
    from prism.node.files import write_atomic

    target = work / "fsync-probe.map"
    times = []
    for i in range(writes):
        began = time.perf_counter()
        write_atomic(target, "".join(f"{b}:{b} blue\n" for b in range(i % 3, 100, 3)))
        times.append((time.perf_counter() - began) * 1000)
    return times


@dataclass
class Skew:
    """Per flip: last node's first new-color response - first node's (``skew_ms``),
    call start → last node switched (``visible_ms``), and the call's round trip;
    ``fsync_ms`` is one map file's atomic write on this disk (:func:`fsync_ms`)."""

    nodes: int
    skew_ms: list[float] = field(default_factory=list)
    visible_ms: list[float] = field(default_factory=list)
    round_trip_ms: list[float] = field(default_factory=list)
    missed: int = 0
    probe_rates: list[float] = field(default_factory=list)
    probe_errors: int = 0
    fsync_ms: list[float] = field(default_factory=list)
    applied_spread_ms: list[float] = field(default_factory=list)


def measure_skew(fleet: LocalFleet, api: Api, port: int, flips: int, work: Path) -> Skew:
    """Flip blue 100 <-> green 100 ``flips`` times with a probe on every node."""
    calls: list[tuple[float, str]] = []
    result = Skew(len(fleet.agents))
    if api.active() != {"blue": 100}:
        api.weights({"blue": 100})
    assert isinstance(fleet.etcd, EtcdServer)
    spans: list[tuple[float, float]] = []
    with contextlib.ExitStack() as stack:
        events = stack.enter_context(timeline(fleet.etcd, work))
        probes = [stack.enter_context(node_probe(n.address, port, work)) for n in fleet.agents]
        time.sleep(0.5)
        for i in range(flips):
            target = "green" if i % 2 == 0 else "blue"
            began = time.monotonic()
            try:
                result.round_trip_ms.append(api.weights({target: 100}))
            except (RuntimeError, httpx.HTTPError):
                result.missed += 1
                continue
            calls.append((began, target))
            spans.append((began, time.monotonic()))
            time.sleep(0.3)
    for began, target in calls:
        seen = [p.first(target, began) for p in probes]
        if any(s is None for s in seen):
            result.missed += 1
            continue
        times = [s for s in seen if s is not None]
        result.skew_ms.append((max(times) - min(times)) * 1000)
        result.visible_ms.append((max(times) - began) * 1000)
    result.probe_rates = [p.rate for p in probes]
    result.probe_errors = sum(p.errors for p in probes)
    result.fsync_ms = fsync_ms(work)
    result.applied_spread_ms = phases(events, spans, result.nodes).get(APPLIED_SPREAD, [])
    return result


# -- zero loss under a storm ---------------------------------------------------------------


@contextlib.contextmanager
def node_hey(host: str, port: int, concurrency: int) -> Iterator[Callable[[], HeyResult]]:
    """:func:`bench.common.start_hey` against a node's own address (127.0.0.x)."""
    if not host.startswith("127.0.0."):
        raise ValueError("load goes to 127.0.0.x only")
    out = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    popen = subprocess.Popen(
        ["hey", "-z", "600s", "-c", str(concurrency), f"http://{host}:{port}/"],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stopped: list[HeyResult] = []

    def stop() -> HeyResult:
        if not stopped:
            if popen.poll() is None:
                popen.send_signal(signal.SIGINT)
            try:
                popen.wait(60)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(10)
            out.seek(0)
            stopped.append(parse_hey(out.read().decode(errors="replace")))
        return stopped[0]

    try:
        yield stop
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(10)
        out.close()


def storm_ops(cutovers: int, moves: int, seed: int = 3) -> list[tuple[str, Any]]:
    """Cutovers (a target color, never the one already at 100) and weight moves, shuffled."""
    rng = random.Random(seed)
    ops: list[tuple[str, Any]] = [("weights", w) for w in weight_plan(moves, seed)]
    ops += [("release", None)] * cutovers
    rng.shuffle(ops)
    return ops


def _release_target(index: int, active: Mapping[str, int]) -> str:
    choices = [c for c in COLORS if dict(active) != {c: 100}]
    return choices[index % len(choices)]


@dataclass
class StormRun:
    """hey's report per node, and how long the operations took."""

    per_node: list[tuple[str, HeyResult]] = field(default_factory=list)
    seconds: float = 0.0
    op_ms: dict[str, list[float]] = field(default_factory=dict)
    reloads: int = 0
    concurrency: int = 0
    #: operations Prism refused or failed (each listed in the report)
    op_failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(h.total for _, h in self.per_node)

    @property
    def failed(self) -> int:
        return sum(h.non_2xx for _, h in self.per_node)


def prism_storm(
    fleet: LocalFleet,
    api: Api,
    port: int,
    ops: Sequence[tuple[str, Any]],
    concurrency: int,
    pause: float = 1.0,
) -> StormRun:
    """The storm through Prism's API, with hey on every node."""
    run = StormRun(concurrency=concurrency)
    hosts = [n.address for n in fleet.agents]
    with contextlib.ExitStack() as stack:
        stops = [stack.enter_context(node_hey(h, port, concurrency)) for h in hosts]
        time.sleep(pause)
        began = time.monotonic()
        active = api.active()
        for index, (kind, weights) in enumerate(ops):
            try:
                if kind == "release":
                    to = _release_target(index, active)
                    run.op_ms.setdefault("cutover", []).append(api.release(to))
                else:
                    run.op_ms.setdefault("weights", []).append(api.weights(weights))
            except (RuntimeError, httpx.HTTPError) as exc:
                run.op_failures.append(str(exc)[:300])
            active = api.active()
        run.seconds = time.monotonic() - began
        time.sleep(pause)
        run.per_node = [(h, stop()) for h, stop in zip(hosts, stops, strict=True)]
    return run


def naive_config(root: Path, address: str, port: int, servers: Mapping[str, Backend]) -> str:
    """A hand-written node: ``rand(100)`` → ``map_int`` → a backend per color."""
    lines = [
        haproxy_globals(root),
        "frontend app",
        f"    bind {address}:{port}",
        "    http-request set-var(txn.bucket) rand(100)",
        f"    use_backend %[var(txn.bucket),map_int({root}/weights.map)]",
        "    default_backend blue",
    ]
    for color, backend in servers.items():
        lines += [
            f"backend {color}",
            "    balance roundrobin",
            "    option httpchk",
            "    http-check send meth GET uri /healthz",
            "    retries 3",
            f"    server s1 127.0.0.1:{backend.port} check inter 200ms rise 2 fall 2",
        ]
    return "\n".join(lines) + "\n"


def _map_text(weights: Mapping[str, int]) -> str:
    out, low = [], 0
    for color in COLORS:
        share = weights.get(color, 0)
        if share:
            out.append(f"{low}:{low + share - 1} {color}\n")
            low += share
    return "".join(out)


def naive_storm(
    ctx: BenchContext,
    work: Path,
    nodes: int,
    servers: Mapping[str, Backend],
    ops: Sequence[tuple[str, Any]],
    concurrency: int,
    pace_seconds: float,
    pause: float = 1.0,
) -> StormRun:
    """The same operations on ``nodes`` hand-written HAProxies: each change is written to
    every node's map file, then every node is reloaded through its master socket, one
    after the other; paced over ``pace_seconds``."""
    port = free_port()
    run = StormRun(concurrency=concurrency)
    hosts = [f"127.0.0.{i + 2}" for i in range(nodes)]
    with contextlib.ExitStack() as stack:
        proxies: list[HAProxy] = []
        for host in hosts:
            root = work / f"naive-{host}"
            root.mkdir()
            (root / "weights.map").write_text("0:99 blue\n")
            config = naive_config(root, host, port, servers)
            proxies.append(stack.enter_context(run_haproxy(ctx, root, config)))
        for proxy in proxies:
            wait_servers_up(proxy, list(COLORS))
        stops = [stack.enter_context(node_hey(h, port, concurrency)) for h in hosts]
        time.sleep(pause)
        began = time.monotonic()
        gap = pace_seconds / max(len(ops), 1)
        active: dict[str, int] = {"blue": 100}
        for index, (kind, weights) in enumerate(ops):
            target = {_release_target(index, active): 100} if kind == "release" else dict(weights)
            started = time.perf_counter()
            for proxy in proxies:
                (proxy.root / "weights.map").write_text(_map_text(target))
                proxy.reload()
                run.reloads += 1
            label = "cutover" if kind == "release" else "weights"
            run.op_ms.setdefault(label, []).append((time.perf_counter() - started) * 1000)
            active = target
            wait = began + gap * (index + 1) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        run.seconds = time.monotonic() - began
        time.sleep(pause)
        run.per_node = [(h, stop()) for h, stop in zip(hosts, stops, strict=True)]
    return run


# -- light nodes --------------------------------------------------------------------------


@dataclass
class SimRun:
    """One fleet of light nodes: how it started and what its changes cost."""

    nodes: int
    processes: int
    heartbeat: float = HEARTBEAT
    started_s: float = float("nan")
    changes: Changes | None = None
    report_bytes: int = 0
    sim_rss_kib: int = 0
    sessions: int = 0
    warnings: int = 0
    first_warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def restarts(self) -> int:
        """Agent sessions begun again (a lease lost, a watch or a read failed): each is a
        full resync of that node."""
        return max(self.sessions - self.nodes, 0)

    @property
    def fits(self) -> bool:
        """Every node joined, every change converged, no node had to resync."""
        c = self.changes
        return self.error is None and c is not None and not c.failures and not self.restarts


def sim_run(
    ctx: BenchContext,
    work: Path,
    nodes: int,
    servers: Mapping[str, Backend],
    changes: int,
    budget: float,
    heartbeat: float = HEARTBEAT,
) -> SimRun:
    """etcd, then ``nodes`` light nodes in a few processes, then a real control plane
    that applies the spec to them all; then the changes.

    The control plane starts after the nodes have joined: a leader that sees nodes
    join audits each one (``record()``), and at hundreds of joins those audits
    contend with the reports (see the section's notes). ``heartbeat`` is the nodes'
    ``--heartbeat``; their lease is three times as long, as by default.
    """
    processes = max(1, min(SIM_PROCESSES, math.ceil(nodes / NODES_PER_SIM_PROCESS)))
    result = SimRun(nodes, processes, heartbeat)
    base = work / f"sim-{nodes}-{heartbeat:g}"
    base.mkdir()
    fleet = LocalFleet(base, nodes=0, converge_timeout=60)
    sims: list[ManagedProcess] = []
    stats = [base / f"sim-{i}.json" for i in range(processes)]
    startup = max(30.0, min(90.0, budget / 2))
    try:
        etcd = fleet.etcd = start_etcd(base / "etcd")
        began = time.monotonic()
        per = math.ceil(nodes / processes)
        for i in range(processes):
            first, count = 1 + i * per, min(per, nodes - i * per)
            command = [sys.executable, "-m", "bench.fleet_sim", "nodes", "--store"]
            command += [fleet.store_url, "--first", str(first), "--count", str(count)]
            command += ["--heartbeat", str(heartbeat), "--lease-ttl", str(3 * heartbeat)]
            command += ["--stats", str(stats[i])]
            sims.append(ManagedProcess(command, name=f"fleet-sim-{i}", pipe_stdout=True, cwd=ROOT))
        for sim in sims:
            line = _read_line(sim, max(startup - (time.monotonic() - began), 1.0))
            if not line.startswith("ready"):
                raise RuntimeError(
                    f"light nodes not all joined within {startup:.0f} s: {sim.stderr_text(400)!r}"
                )
        fleet.start_plane(0)
        api = Api(fleet)
        try:
            spec = fleet_spec(free_port(), servers)
            api.call("PUT", "/config", {"spec": spec, "reason": "bench"})
            wait_live(api, nodes, max(startup - (time.monotonic() - began), 10.0))
            result.started_s = time.monotonic() - began
            ctx.log(f"  fleet: {nodes} light nodes live after {result.started_s:.1f} s")
            groups = {
                "etcd": [etcd.pid or 0],
                "control plane": [fleet.control[0].process.pid],
                "nodes": [s.pid for s in sims],
            }
            result.changes = measure_changes(
                api,
                etcd,
                groups,
                weight_plan(changes, seed=nodes),
                work=base,
                nodes=nodes,
                idle_seconds=ctx.size(5.0, 0.5),
                settle_seconds=ctx.size(3.0, 0.3),
                budget=budget,
            )
            result.report_bytes = len(report_text(etcd, "sim-1"))
            result.sim_rss_kib = sum(rss_kib(s.pid) for s in sims)
        finally:
            api.close()
    except (PrismError, RuntimeError, AssertionError, httpx.HTTPError, OSError) as exc:
        result.error = str(exc).splitlines()[0][:600] if str(exc) else type(exc).__name__
        ctx.log(f"  fleet: {nodes} light nodes: {result.error}")
    finally:
        for sim in sims:
            sim.stop(timeout=40)
            sim.close()
        fleet.close()
    for path in stats:
        with contextlib.suppress(OSError, ValueError, KeyError):
            summary = json.loads(path.read_text())
            result.sessions += summary["sessions"]
            result.warnings += summary["warnings"]
            result.first_warnings += summary["first_warnings"]
    return result


# -- the section ----------------------------------------------------------------------------


@dataclass
class RealRun:
    """One real fleet of N nodes."""

    nodes: int
    changes: Changes
    fanout: FanOut
    report_bytes: int = 0
    #: µs to decode (``NodeReport.from_json``) and encode (``to_json``) one real report
    codec: tuple[float, float] = (float("nan"), float("nan"))


@dataclass
class Rss:
    agent: int
    haproxy: int
    plane: int
    etcd: int
    nodes: int


def run(ctx: BenchContext) -> Section:
    """Real fleets of 1, 5 and 20 nodes (quick: 2), then light fleets."""
    sizes = (2,) if ctx.quick else (1, 5, 20)
    moves = ctx.size(30, 3)
    lockstep_n = ctx.size(5, 2)
    flips = ctx.size(20, 3)
    cutovers, storm_moves = ctx.size(20, 2), ctx.size(20, 2)
    concurrency = ctx.size(20, 5)
    # (light nodes, heartbeat s): the default heartbeat up to 1,000, then 1,000 at a
    # slower one, to see whether heartbeat load is what stops it.
    sim_plan = [(20, HEARTBEAT)]
    sim_changes = {20: 3}
    if not ctx.quick:
        sim_plan += [(200, HEARTBEAT), (500, HEARTBEAT), (1000, HEARTBEAT), (1000, 5.0)]
        sim_changes = {20: 20, 200: 15, 500: 10, 1000: 10}
    sim_budget = ctx.size(150.0, 30.0)
    specs = [BackendSpec(c, f"v{i + 1}") for i, c in enumerate(COLORS)]
    load_before = os.getloadavg()[0]
    real: dict[int, RealRun] = {}
    skew: Skew | None = None
    storm: StormRun | None = None
    naive: StormRun | None = None
    rss: Rss | None = None
    sims: list[SimRun] = []
    with backends(specs) as running, temp_dir(ctx.tmp, "fleet-") as work:
        servers = {b.color: b for b in running}
        ops = storm_ops(cutovers, storm_moves)
        for n in sizes:
            base = work / f"real-{n}"
            base.mkdir()
            started = time.monotonic()
            fleet = LocalFleet(
                base, nodes=n, heartbeat=HEARTBEAT, lease_ttl=LEASE_TTL, converge_timeout=30
            )
            api: Api | None = None
            try:
                with contextlib.suppress(AssertionError):
                    # LocalFleet waits 30 s for its nodes; 20 agents starting at once on
                    # two busy cores may need longer: wait on below.
                    fleet.start()
                api = Api(fleet)
                wait_live(api, n, 120)
                ctx.log(f"  fleet: {n} real node(s) live after {time.monotonic() - started:.1f} s")
                port = free_port()
                api.call("PUT", "/config", {"spec": fleet_spec(port, servers)})
                wait_fleet_up(api, n)
                assert isinstance(fleet.etcd, EtcdServer)
                etcd = fleet.etcd
                groups = {
                    "etcd": [etcd.pid or 0],
                    "control plane": [fleet.control[0].process.pid],
                    "nodes": agent_pids(fleet) + haproxy_pids(fleet),
                }
                changes = measure_changes(
                    api,
                    etcd,
                    groups,
                    weight_plan(moves, seed=n),
                    work=base,
                    nodes=n,
                    idle_seconds=ctx.size(5.0, 0.5),
                    settle_seconds=ctx.size(3.0, 0.3),
                )
                ctx.log(f"  fleet: {n} node(s): {len(changes.ms)} moves")
                fan = fanout(etcd, n, ctx.size(50, 5), base)
                text = report_text(etcd, "lb-1")
                real[n] = RealRun(n, changes, fan, len(text), codec_us(text))
                if n == lockstep_n:
                    skew = measure_skew(fleet, api, port, flips, base)
                    ctx.log(f"  fleet: skew over {len(skew.skew_ms)} flips")
                    storm = prism_storm(fleet, api, port, ops, concurrency, ctx.size(1.0, 0.3))
                    ctx.log(f"  fleet: storm {storm.total} requests, {storm.failed} failed")
                if n == max(sizes):
                    rss = Rss(
                        agent=rss_kib(agent_pids(fleet)[0]),
                        haproxy=_haproxy_rss(fleet, 0),
                        plane=rss_kib(fleet.control[0].process.pid),
                        etcd=rss_kib(etcd.pid or 0),
                        nodes=n,
                    )
            finally:
                if api is not None:
                    api.close()
                fleet.close()
        if storm is not None:
            naive = naive_storm(
                ctx, work, lockstep_n, servers, ops, concurrency, storm.seconds, ctx.size(1.0, 0.3)
            )
            ctx.log(f"  fleet: naive storm {naive.total} requests, {naive.failed} failed")
        for n, heartbeat in sim_plan:
            sims.append(sim_run(ctx, work, n, servers, sim_changes[n], sim_budget, heartbeat))
    load = (load_before, os.getloadavg()[0])
    body = _report(ctx, real, skew, storm, naive, rss, sims, lockstep_n, ops, load)
    return Section(NAME, TITLE, body)


def _haproxy_rss(fleet: LocalFleet, index: int) -> int:
    """RSS of node ``index``'s HAProxy: its master and its workers."""
    pid = fleet.haproxy_pid(index)
    if pid is None:
        return 0
    return sum(rss_kib(p) for p in [pid, *children_of(pid)])


# -- the report -------------------------------------------------------------------------------


def _report(
    ctx: BenchContext,
    real: Mapping[int, RealRun],
    skew: Skew | None,
    storm: StormRun | None,
    naive: StormRun | None,
    rss: Rss | None,
    sims: Sequence[SimRun],
    lockstep_n: int,
    ops: Sequence[tuple[str, Any]],
    load: tuple[float, float],
) -> str:
    parts: list[str] = []
    largest = max(real) if real else 0
    big = real.get(largest)
    headline = "**Ratio**: "
    if big is not None:
        headline += (
            f"at {largest} real nodes a weight move verified on every node takes p50 "
            f"{ratio(pct(big.changes.ms, 50), pct(big.fanout.latency_ms, 50))} one raw etcd "
            f"put's fan-out to {largest} watchers (p99 "
            f"{ratio(pct(big.changes.ms, 99), pct(big.fanout.latency_ms, 99))})"
        )
    if skew is not None and lockstep_n in real:
        spread = real[lockstep_n].fanout.spread_ms
        headline += (
            f"; lockstep skew across {lockstep_n} nodes p50 = "
            f"{ratio(pct(skew.skew_ms, 50), pct(spread, 50))} the spread of one watch fan-out "
            f"to {lockstep_n} watchers"
        )
    if storm is not None and naive is not None:
        headline += (
            f"; failed requests under the storm, naive / Prism = {naive.failed:,} / "
            f"{storm.failed:,}"
        )
    parts.append(headline + ".\n")
    parts.append(
        "Real fleets: one etcd, N `prism agent` processes each supervising its own HAProxy on "
        "127.0.0.2, 127.0.0.3, ... (the app binds `0.0.0.0:PORT`, each agent's "
        "`--listen-address` makes it its own address), one `prism serve --store etcd://`, "
        f"agents at the default heartbeat ({HEARTBEAT:g} s) and lease ({LEASE_TTL:g} s). "
        "Everything, etcd included, shares this machine's cores, so every figure is "
        "compared with a baseline taken in the same run, on the same etcd. Load average "
        f"(1 min) when the section started / ended: {load[0]:.2f} / {load[1]:.2f} (the "
        "section's own processes add to it; anything else running shows here too).\n"
    )
    parts.append(_real_table(real))
    parts.append(_phase_table(real, sims))
    if skew is not None:
        parts.append(_skew_table(skew, real.get(lockstep_n)))
    if storm is not None:
        parts.append(_storm_table(storm, naive, ops))
    if rss is not None:
        parts.append(_rss_table(rss))
    parts.append(_scale_table(real, sims))
    parts.append(_limits(real, sims, skew))
    return "\n".join(parts)


def _real_table(real: Mapping[int, RealRun]) -> str:
    rows = []
    for n, r in sorted(real.items()):
        c, f = r.changes, r.fanout
        rows.append(
            [
                n,
                len(c.ms),
                pct(c.ms, 50),
                pct(c.ms, 99),
                len(f.latency_ms),
                pct(f.latency_ms, 50),
                pct(f.latency_ms, 99),
                ratio(pct(c.ms, 50), pct(f.latency_ms, 50)),
                ratio(pct(c.ms, 99), pct(f.latency_ms, 99)),
                c.refused,
                len(c.failures),
            ]
        )
    failures = [f"- N={n}: {x}" for n, r in sorted(real.items()) for x in r.changes.failures[:3]]
    return (
        "### Call → change verified on all N nodes\n\n"
        "`PUT /apps/shop/weights` round trip over a kept-open connection: the control plane "
        "polls every node for fresh readings (health gate), commits the routing, waits until "
        "every live node has *staged* the new map (`prepare map` + `add map @ver`), writes "
        "`fleet/commit`, and answers once every node has committed and read back. Baseline: "
        "one raw etcd put (aetcd) until N plain watcher processes on the same etcd have "
        "received it, measured in the same fleet's idle time.\n\n"
        + table(
            [
                "nodes",
                "moves",
                "p50 ms",
                "p99 ms",
                "raw puts",
                "put → N watchers p50 ms",
                "p99 ms",
                "ratio p50",
                "ratio p99",
                "gate refusals (retried)",
                "failed",
            ],
            rows,
        )
        + ("\n" + "\n".join(failures) + "\n" if failures else "")
    )


def _phase_table(real: Mapping[int, RealRun], sims: Sequence[SimRun]) -> str:
    runs: list[tuple[str, Changes]] = [(f"{n} real", r.changes) for n, r in sorted(real.items())]
    runs += [
        (f"{s.nodes:,} light ({s.heartbeat:g} s)", s.changes)
        for s in sims
        if s.changes is not None and s.changes.ms
    ]
    if not runs:
        return ""
    rows: list[list[object]] = [
        [phase, *(pct(c.phases.get(phase, []), 50) for _, c in runs)] for phase in PHASES
    ]
    rows.append(["moves split", *(len(c.phases.get(PHASES[0], [])) for _, c in runs)])
    return (
        "### Where a move's time goes\n\n"
        "p50 ms of each phase of `PUT /apps/shop/weights`, from one more etcd watcher "
        "timestamping every Prism key's events (`bench/fleet_sim.py watch --prefix`): the "
        "gate's poll, the last node answering it, the routing commit (revision R), the last "
        "node reporting R staged, `fleet/commit`, the last node reporting R applied, the "
        "API's answer. A move whose events could not all be found is left out.\n\n"
        + table(["phase", *(label for label, _ in runs)], rows)
    )


def _skew_table(skew: Skew, reference: RealRun | None) -> str:
    spread = reference.fanout.spread_ms if reference else []
    rows: list[list[object]] = [
        [
            f"**lockstep skew across {skew.nodes} nodes** (last node's first new-color "
            "response - first node's)",
            len(skew.skew_ms),
            pct(skew.skew_ms, 50),
            pct(skew.skew_ms, 99),
            max(skew.skew_ms, default=float("nan")),
        ],
        [
            f"reference: spread of one raw put's fan-out to {skew.nodes} watchers "
            "(first to last receiver)",
            len(spread),
            pct(spread, 50),
            pct(spread, 99),
            max(spread, default=float("nan")),
        ],
        [
            "reference: first to last node *reporting* the commit applied (etcd timeline: "
            "commit map, read-back, report put), same flips",
            len(skew.applied_spread_ms),
            pct(skew.applied_spread_ms, 50),
            pct(skew.applied_spread_ms, 99),
            max(skew.applied_spread_ms, default=float("nan")),
        ],
        [
            "reference: one atomic map-file write here (fsync file + directory), which each "
            "node does before `commit map`; nodes on one machine share its disk",
            len(skew.fsync_ms),
            pct(skew.fsync_ms, 50),
            pct(skew.fsync_ms, 99),
            max(skew.fsync_ms, default=float("nan")),
        ],
        [
            "reference: call start → last node serving the new color",
            len(skew.visible_ms),
            pct(skew.visible_ms, 50),
            pct(skew.visible_ms, 99),
            max(skew.visible_ms, default=float("nan")),
        ],
        [
            "reference: the flip's API round trip",
            len(skew.round_trip_ms),
            pct(skew.round_trip_ms, 50),
            pct(skew.round_trip_ms, 99),
            max(skew.round_trip_ms, default=float("nan")),
        ],
    ]
    rates = ", ".join(f"{r:,.0f}" for r in skew.probe_rates)
    return (
        "### Lockstep skew\n\n"
        f"{len(skew.round_trip_ms)} flips blue 100 ↔ green 100 through `PUT "
        "/apps/shop/weights`, a probe process (2 keep-alive connections) on every node's "
        f"listener; probe rates {rates} responses/s (resolution ~"
        f"{1000 / min(skew.probe_rates or [float('nan')]):.2f} ms), {skew.probe_errors} probe "
        f"errors, {skew.missed} flips not seen on every node. A single node has no skew by "
        "definition; the floor for a fleet is the commit marker's own fan-out, so the "
        "reference is the spread of one raw watch fan-out to as many watchers.\n\n"
        + table(["", "n", "p50 ms", "p99 ms", "max ms"], rows)
        + f"\nSkew / fan-out spread: p50 {ratio(pct(skew.skew_ms, 50), pct(spread, 50))}, "
        f"p99 {ratio(pct(skew.skew_ms, 99), pct(spread, 99))}; skew / round trip p50 "
        f"{ratio(pct(skew.skew_ms, 50), pct(skew.round_trip_ms, 50))}.\n"
    )


def _storm_table(storm: StormRun, naive: StormRun | None, ops: Sequence[tuple[str, Any]]) -> str:
    rows = []
    naive_nodes = dict(naive.per_node) if naive else {}
    for host, hey in storm.per_node:
        other = naive_nodes.get(host)
        rows.append(
            [
                host,
                hey.total,
                hey.non_2xx,
                other.total if other else "-",
                other.non_2xx if other else "-",
            ]
        )
    rows.append(
        [
            "**all**",
            storm.total,
            storm.failed,
            naive.total if naive else "-",
            naive.failed if naive else "-",
        ]
    )
    cutovers = sum(1 for k, _ in ops if k == "release")
    moves = len(ops) - cutovers
    errors = sorted(
        {text[:120] for _, h in (naive.per_node if naive else []) for text in h.errors}
        | {
            f"HTTP {code}"
            for _, h in (naive.per_node if naive else [])
            for code in h.statuses
            if code >= 300
        }
    )
    op_rows = [
        [
            kind,
            len(storm.op_ms.get(kind, [])),
            pct(storm.op_ms.get(kind, []), 50),
            pct(naive.op_ms.get(kind, []), 50) if naive else "-",
        ]
        for kind in ("cutover", "weights")
    ]
    return (
        "### Zero loss under a storm across the fleet\n\n"
        f"{cutovers} cutovers (`POST /apps/shop/release`, gate + switch on every node + drain) "
        f"and {moves} weight moves across three colors, shuffled, run one after the other in "
        f"{storm.seconds:.1f} s while one `hey` per node keeps {storm.concurrency} keep-alive "
        "connections busy on that node's own listener. Baseline: the same operations on "
        "hand-written HAProxies on the same addresses (same binary and backends, `rand(100)` → "
        "`map_int`): each change written to every node's map file and applied by a master-"
        f"socket `reload` of every node in turn ({naive.reloads if naive else 0} reloads), "
        "paced to last as long.\n\n"
        + table(
            ["node", "Prism requests", "Prism non-2xx + errors", "naive requests", "naive non-2xx"],
            rows,
        )
        + (
            "\nPrism operations that failed: "
            + "; ".join(f"`{f[:200]}`" for f in storm.op_failures)
            + "\n"
            if storm.op_failures
            else ""
        )
        + "\nNaive failures: "
        + (", ".join(f"`{e}`" for e in errors) if errors else "none")
        + ".\n\nOperation time, p50 ms (Prism's include the gate, the lockstep switch on every "
        "node and, for a cutover, the drain):\n\n"
        + table(["operation", "count", "Prism", "naive (reload every node)"], op_rows)
    )


def _rss_table(rss: Rss) -> str:
    rows = [
        ["one agent (`prism agent`)", rss.agent / 1024],
        ["its HAProxy (master + workers)", rss.haproxy / 1024],
        [f"control plane (`prism serve`) with {rss.nodes} nodes", rss.plane / 1024],
        [f"etcd with {rss.nodes} nodes", rss.etcd / 1024],
    ]
    return f"### Memory at {rss.nodes} real nodes\n\n" + table(["process", "RSS MiB"], rows)


def _scale_table(real: Mapping[int, RealRun], sims: Sequence[SimRun]) -> str:
    reference = real[max(real)] if real else None
    rows: list[list[object]] = []

    def row(label: str, nodes: int, heartbeat: float, c: Changes | None) -> list[object]:
        if c is None:
            return [label, nodes, f"{heartbeat:g}", *["-"] * 10]
        return [
            label,
            nodes,
            f"{heartbeat:g}",
            f"{len(c.ms)}/{len(c.ms) + len(c.failures)}",
            pct(c.ms, 50),
            pct(c.ms, 99),
            c.cpu["etcd"],
            c.cpu["control plane"],
            c.cpu["nodes"] / nodes * 1000,
            c.idle["etcd"],
            c.idle["control plane"],
            c.etcd.get("txns", float("nan")),
            c.etcd.get("events", float("nan")),
        ]

    if reference is not None:
        rows.append(row("real (agents + HAProxy)", reference.nodes, HEARTBEAT, reference.changes))
    for s in sims:
        rows.append(row("light nodes", s.nodes, s.heartbeat, s.changes))
    notes = []
    for s in sims:
        verdict = "**fits**" if s.fits else "**does not fit**"
        detail = [f"{s.processes} process(es)"]
        if s.started_s == s.started_s:
            detail.append(f"all live {s.started_s:.0f} s after start")
        if s.restarts:
            detail.append(f"{s.restarts:,} agent sessions restarted (full resyncs)")
        if s.changes is not None and s.changes.failures:
            first = s.changes.failures[0][:220]
            detail.append(f"{len(s.changes.failures)} change(s) failed, first: `{first}`")
        if s.error:
            detail.append(f"stopped: `{s.error[:220]}`")
        if s.first_warnings:
            detail.append(f"first warning: `{s.first_warnings[0][:200]}`")
        if s.sim_rss_kib:
            detail.append(f"{s.sim_rss_kib / s.nodes:,.0f} KiB RSS per light node")
        notes.append(
            f"- {s.nodes:,} light nodes, heartbeat {s.heartbeat:g} s: {verdict}; "
            + "; ".join(detail)
        )
    ratios = []
    if reference is not None:
        rc = reference.changes
        for s in sims:
            if s.changes is None or not s.changes.ms:
                continue
            c = s.changes
            ratios.append(
                [
                    f"{s.nodes:,} light ({s.heartbeat:g} s) / {reference.nodes} real",
                    ratio(pct(c.ms, 50), pct(rc.ms, 50)),
                    ratio(pct(c.ms, 99), pct(rc.ms, 99)),
                    ratio(c.cpu["etcd"], rc.cpu["etcd"]),
                    ratio(c.cpu["control plane"], rc.cpu["control plane"]),
                    ratio(c.etcd.get("txns", 0), rc.etcd.get("txns", 0)),
                ]
            )
    sizes = ", ".join(f"{s.nodes}: {s.report_bytes:,} bytes" for s in sims if s.report_bytes)
    real_bytes = f"real node: {reference.report_bytes:,} bytes" if reference else ""
    return (
        "### Past this machine: light nodes\n\n"
        "Light nodes run Prism's own agent code (`bench/fleet_sim.py`: `Agent` on a data plane "
        "without HAProxy), each with its own etcd connection, lease, six watches, heartbeat "
        "and lease keepalive (lease = 3 heartbeats, as by default), staging every weight "
        "change, switching on the commit marker, answering every poll with every server "
        f"`UP`; in up to {SIM_PROCESSES} processes ({NODES_PER_SIM_PROCESS} nodes per process "
        "while that suffices), the control plane started once "
        "they have joined. They share the two cores with etcd and the control plane, so "
        "their own CPU slows both: the latencies are an upper bound of what the protocol "
        "costs. CPU is per change, over the run of changes (heartbeats meanwhile included); "
        "*idle* is CPU seconds per second in a quiet window just before; etcd txns (multi-op "
        "transactions) and watch events delivered (the timeline watcher's included) are "
        "per change. Report size as stored: "
        f"{real_bytes}; light nodes {sizes}.\n\n"
        + table(
            [
                "fleet",
                "nodes",
                "heartbeat s",
                "changes ok",
                "p50 ms",
                "p99 ms",
                "etcd CPU s/change",
                "control plane CPU s/change",
                "nodes' CPU ms/change/node",
                "etcd idle CPU s/s",
                "control plane idle CPU s/s",
                "etcd txns/change",
                "watch events/change",
            ],
            rows,
        )
        + "\n"
        + "\n".join(notes)
        + "\n"
        + (
            "\nAs a ratio to the real fleet:\n\n"
            + table(
                [
                    "",
                    "p50",
                    "p99",
                    "etcd CPU/change",
                    "control plane CPU/change",
                    "etcd txns/change",
                ],
                ratios,
            )
            if ratios
            else ""
        )
    )


def _limits(real: Mapping[int, RealRun], sims: Sequence[SimRun], skew: Skew | None) -> str:
    fitting = [s for s in sims if s.fits]
    largest = max(fitting, key=lambda s: (s.nodes, -s.heartbeat)) if fitting else None
    converged = [s for s in sims if s.changes is not None and s.changes.ms]
    clean = [s for s in converged if s.changes is not None and not s.changes.failures]
    basis = max(clean or converged, key=lambda s: s.nodes) if converged else None
    unfit = [s for s in sims if not s.fits]
    reference = real[max(real)] if real else None
    nan = float("nan")
    lines = ["### What limits fleet size, and how it would shard\n\n"]
    if largest is not None:
        lines.append(
            f"The largest light fleet that fit here is **{largest.nodes:,} nodes** (heartbeat "
            f"{largest.heartbeat:g} s). "
        )
    if unfit:
        lines.append(
            "Did not fit: "
            + "; ".join(
                f"{s.nodes:,} at {s.heartbeat:g} s ("
                + ", ".join(
                    part
                    for part in (
                        f"{s.restarts:,} agent sessions restarted" if s.restarts else "",
                        f"{len(s.changes.failures)} of "
                        f"{len(s.changes.ms) + len(s.changes.failures)} moves failed"
                        if s.changes is not None and s.changes.failures
                        else "",
                        (s.error or "")[:120],
                    )
                    if part
                )
                + ")"
                for s in unfit
            )
            + ". A restart means a lease lapsed or a read missed its 5 s deadline while the "
            "cores were saturated; each is a full resync, which loads etcd further, so "
            "past a point the fleet does not recover. The light nodes' own CPU is part of "
            "that load (a real node has its own), but etcd's share grows linearly with N "
            "per move and per heartbeat, as below. "
        )
    if basis is not None and basis.changes is not None:
        c, n = basis.changes, basis.nodes
        etcd_ms = c.marginal("etcd") / n * 1000
        lines.append(
            f"At {n:,} light nodes (heartbeat {basis.heartbeat:g} s), idle, etcd handled "
            f"{c.etcd_idle.get('txns', nan):,.0f} transactions/s "
            f"({c.etcd_idle.get('txns', nan) / n * basis.heartbeat:.2f} per node per "
            "heartbeat: one guarded report put, 3 keys) and "
            f"{c.etcd_idle.get('renewals', nan):,.0f} lease renewals/s, at "
            f"{c.idle['etcd']:.2f} CPU s/s, and held {c.etcd.get('keys', nan):,.0f} keys "
            f"(guard keys pile up: +{c.etcd_idle.get('keys', nan):,.0f}/s) and "
            f"{c.etcd.get('watchers', nan):,.0f} watchers. One weight move cost "
            f"{c.etcd.get('txns', nan):,.0f} transactions, {c.etcd.get('ranges', nan):,.0f} "
            f"range reads, {c.etcd.get('events', nan):,.0f} watch events, "
            f"{c.etcd.get('rx_bytes', nan) / 1e6:.2f} MB into etcd and {c.cpu['etcd']:.2f} "
            f"etcd CPU s, {c.marginal('etcd'):.2f} above idle (**{etcd_ms:.1f} ms per node**: "
            f"~{etcd_ms:.0f} etcd CPU s per move at 1,000 nodes on this CPU); the control "
            f"plane spent {c.cpu['control plane']:.2f} CPU s per move and "
            f"{c.idle['control plane']:.2f} CPU s/s idle mirroring reports"
        )
        if reference is not None:
            decode, encode = reference.codec
            lines.append(
                f" (one real {reference.report_bytes:,}-byte report: {decode:.0f} µs to decode, "
                f"{encode:.0f} µs to encode, since `NodeReport.to_json` goes through "
                "`dataclasses.asdict`, a deep copy, every heartbeat)"
            )
        lines.append(". ")
    if reference is not None and reference.changes.ms:
        per_node = reference.changes.marginal("nodes") / reference.nodes * 1000
        serial = per_node * reference.nodes / 2
        p50 = pct(reference.changes.ms, 50)
        lines.append(
            f"A real node (agent + HAProxy) spent {per_node:.0f} ms CPU per move above idle; "
            f"{reference.nodes} of them on two cores serialise to ~{serial:,.0f} ms, "
            f"{serial / p50:.0%} of the {p50:,.0f} ms p50 above, a part separate machines "
            "would do in parallel."
        )
    lines.append(
        "\n\nWhere that goes with N, from the protocol (`src/prism/agent/node.py`, "
        "`src/prism/dataplane/fleet.py`):\n\n"
        "- **Reports as whole JSON puts every heartbeat.** Each node rewrites its full "
        "report (every server's health, every backend's counters) once per heartbeat, as a "
        "guarded commit: three keys per put (the report, `meta/revision`, a `guard/<token>` "
        "key on a 60 s lease), so guard keys alone pile up to heartbeat rate x N x 60 s. "
        "etcd's write rate (one raft proposal and fsync batch per txn) and the control "
        "plane's decoding of every report it mirrors both grow as N / heartbeat even when "
        "nothing changes; the report grows with apps x servers. Fixes: send a report only "
        "when it changed plus a small liveness beat (the lease already says alive), put "
        "readings under per-node keys that change rarely, drop the guard for leased "
        "report puts (a lost reply of an idempotent put needs no guard).\n"
        "- **Three fan-in rounds per change.** A weight move is a poll (every node answers "
        "with a full report), the desired-state change (every node reads desired state: "
        "four range reads, and reports staged), and the commit marker (every node reports "
        "applied): ~3N report puts, 4N reads and 3N watch fan-outs per change, and the "
        "control plane re-checks every live node on every report it receives (O(N) per "
        "report, so O(N²) per change). Fixes: answer polls with readings only for the "
        "backends asked, let the commit marker carry the revision so nodes need not "
        "re-read, count answers incrementally instead of rescanning.\n"
        "- **Watch fan-out.** Each agent holds six watches on its own stream; every commit "
        "marker and poll is one event to each of N watchers, and the lockstep skew is at "
        "least that fan-out's spread"
        + (
            f" (measured above: {pct(skew.skew_ms, 50):.1f} ms p50 at {skew.nodes} nodes)"
            if skew is not None and skew.skew_ms
            else ""
        )
        + "; one shared watch per node on a common prefix would cut etcd's watcher count by 6x.\n"
        "- **Audit records under report traffic** (seen building this benchmark). "
        "`EtcdStore.record()` only lands if no commit happened since it read "
        "`meta/revision`, and every report put bumps it; with hundreds of nodes reporting, "
        "its 50 compare-and-swap rounds run out (`could not record the audit entry: other "
        "writers kept committing`, a 503). The leader audits each node joining as "
        "`node.returned` (its `fleet/known/` key is written before its first report): 100 "
        "nodes joining a running control plane made ~5,000 extra transactions in 5 s and "
        "only 63 of 100 audits landed. That is why the light nodes here join before the "
        "control plane starts. Fix: a revision marker that reports do not touch.\n"
        "- **Transaction limits.** etcd's `--max-txn-ops` (128) bounds one `prism apply`'s "
        "apps, `--max-request-bytes` (1.5 MiB) a report, and one etcd cluster's write rate "
        "(a few thousand fsynced txns/s on good disks) bounds N / heartbeat.\n\n"
        "Sharding beyond one etcd: (1) **by app prefix** — each shard's apps under their own "
        "prefix with its own control plane and commit/poll keys; a node running apps of "
        "several shards runs one agent (or one session) per shard, so a change only fans out "
        "to the nodes that serve that app; (2) **per region** — a control plane and etcd per "
        "region, with a global layer writing desired state to each region and treating a "
        "region as one node that reports staged/applied (two-phase commit over regions; "
        "lockstep then holds within a region, and across regions within one extra round); "
        "(3) **aggregating reports** — relays per rack or region that watch their nodes' "
        "reports and publish one summary (min applied/staged revision, the failing nodes, "
        "summed counters, any server not `UP`), so the control plane's fan-in is per relay, "
        "not per node, and etcd's write load stays local to each relay's store.\n"
    )
    return "".join(lines)
