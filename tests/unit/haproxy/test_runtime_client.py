"""RuntimeClient over FakeTransport, and UnixSocketTransport over a local socket."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from prism.errors import RuntimeAPIError, UnsafeArgument
from prism.haproxy.runtime import RuntimeClient, UnixSocketTransport
from prism.testing import FakeHAProxy, FakeTransport, UnexpectedCommand

MAP = "/var/lib/prism/maps/shop.weights.map"
PINS = "/var/lib/prism/maps/shop.pins.map"

STAT = (
    "# pxname,svname,scur,stot,status,weight,type,check_status,\n"
    "shop.blue,s1,0,12,UP,1,2,L4OK,\n"
    "shop.blue,BACKEND,0,12,UP,1,1,,\n"
    "\n"
)


def _client(haproxy: FakeHAProxy) -> tuple[RuntimeClient, FakeTransport]:
    transport = FakeTransport(haproxy)
    return RuntimeClient(transport), transport


async def test_execute_sends_the_exact_text_and_returns_the_reply() -> None:
    """The transport gets the command text exactly; the raw reply comes back."""
    transport = FakeTransport({"show stat": STAT})
    client = RuntimeClient(transport)
    rows = await client.show_stat()
    assert transport.sent == ["show stat"]
    assert [(r.proxy, r.server, r.status, r.stot) for r in rows] == [
        ("shop.blue", "s1", "UP", 12),
        ("shop.blue", "BACKEND", "UP", 12),
    ]


async def test_show_stat_of_some_proxies_sends_one_filtered_command_each() -> None:
    """Named proxies are read one by one; a proxy HAProxy lacks adds no rows."""
    transport = FakeTransport(
        {"show stat shop.blue -1 -1": STAT, "show stat shop.green -1 -1": "No such proxy.\n\n"}
    )
    rows = await RuntimeClient(transport).show_stat("shop.blue", "shop.green", "shop.blue")
    assert transport.sent == ["show stat shop.blue -1 -1", "show stat shop.green -1 -1"]
    assert [(r.proxy, r.server) for r in rows] == [("shop.blue", "s1"), ("shop.blue", "BACKEND")]


async def test_show_stat_of_a_hostile_proxy_name_sends_nothing() -> None:
    """The proxy name is an argument like any other: checked before anything is sent."""
    transport = FakeTransport({})
    pattern = r"unsafe proxy name for the Runtime API: 'shop\.blue;"
    with pytest.raises(UnsafeArgument, match=pattern):
        await RuntimeClient(transport).show_stat("shop.blue;shutdown sessions")
    assert transport.sent == []


async def test_read_outs_parse_their_replies() -> None:
    """show info, servers state, servers conn and map go through their parsers."""
    transport = FakeTransport(
        {
            "show info": "Name: HAProxy\nVersion: 2.8.25\n\n",
            "show servers state shop.blue": (
                "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state "
                "srv_admin_state srv_uweight srv_port\n"
                "3 shop.blue 1 s1 10.0.0.1 2 8 5 8080\n\n"
            ),
            "show servers conn shop.blue": (
                "# bkname/svname bkid/svid addr port - used_cur idle_cur idle_per_thr[1]\n"
                "shop.blue/s1 3/1 10.0.0.1 8080 - 2 1 1\n\n"
            ),
            f"show map {MAP}": "0x1 0:99 shop.blue\n\n",
        }
    )
    client = RuntimeClient(transport)
    assert (await client.show_info())["Version"] == "2.8.25"
    [state] = await client.show_servers_state("shop.blue")
    assert (state.server, state.port, state.weight, state.draining) == ("s1", 8080, 5, True)
    [conn] = await client.show_servers_conn("shop.blue")
    assert (conn.backend, conn.server, conn.used_cur, conn.idle_cur) == ("shop.blue", "s1", 2, 1)
    [entry] = await client.show_map(MAP)
    assert (entry.key, entry.value) == ("0:99", "shop.blue")


async def test_replace_map_is_prepare_payload_commit() -> None:
    """replace_map sends prepare, one payload at the new version, then commit."""
    haproxy = FakeHAProxy({MAP: [("0:99", "shop.blue")]})
    client, transport = _client(haproxy)
    version = await client.replace_map(MAP, [("0:89", "shop.blue"), ("90:99", "shop.green")])
    assert version == 1
    assert transport.sent == [
        f"prepare map {MAP}",
        f"add map @1 {MAP} <<\n0:89 shop.blue\n90:99 shop.green\n",
        f"commit map @1 {MAP}",
    ]
    assert haproxy.entries(MAP) == [("0:89", "shop.blue"), ("90:99", "shop.green")]


async def test_replace_map_chunks_large_maps_into_one_version() -> None:
    """Thousands of entries go out as several payloads, all in the same version."""
    haproxy = FakeHAProxy({PINS: []})
    client, transport = _client(haproxy)
    entries = [(f"tenant-{i}", "shop.green") for i in range(5000)]
    version = await client.replace_map(PINS, entries)
    payloads = transport.sent[1:-1]
    assert len(payloads) > 1
    assert all(p.startswith(f"add map @{version} {PINS} <<\n") for p in payloads)
    assert all(len(p) < 8192 for p in payloads)
    assert haproxy.entries(PINS) == entries


async def test_replace_map_with_no_entries_empties_the_map_atomically() -> None:
    """No entries: prepare and commit an empty version, no payload at all."""
    haproxy = FakeHAProxy({PINS: [("acme", "shop.green")]})
    client, transport = _client(haproxy)
    await client.replace_map(PINS, [])
    assert transport.sent == [f"prepare map {PINS}", f"commit map @1 {PINS}"]
    assert haproxy.entries(PINS) == []


async def test_a_refused_payload_is_never_committed() -> None:
    """If HAProxy refuses a payload, no commit is sent and the map keeps its content."""
    transport = FakeTransport(
        {
            f"prepare map {MAP}": "New version created: 4\n\n",
            f"add map @4 {MAP} <<\nten shop.blue\n": "'ten' is not a number.\n\n",
        }
    )
    client = RuntimeClient(transport)
    with pytest.raises(RuntimeAPIError, match="'ten' is not a number"):
        await client.replace_map(MAP, [("ten", "shop.blue")])
    assert transport.sent[-1].startswith("add map @4")


#: Each call with a hostile argument, and the argument its refusal names.
HOSTILE_CALLS: list[tuple[Callable[[RuntimeClient], Awaitable[object]], str]] = [
    (lambda c: c.set_map(MAP, "0:99", "shop.green\nclear map " + MAP), "map value"),
    (lambda c: c.set_map(MAP, "0:99;clear", "shop.green"), "map key"),
    (lambda c: c.add_map(MAP, "acme", "shop green"), "map value"),
    (lambda c: c.del_map(MAP, "#0x55d0"), "map key"),
    (lambda c: c.show_map(MAP + "\n"), "map path"),
    (lambda c: c.clear_map("maps/relative.map"), "map path"),
    (lambda c: c.commit_map(MAP, True), "map version"),
    (
        lambda c: c.replace_map(MAP, [("0:49", "shop.blue"), ("50:99", "shop.green\n\nshow info")]),
        "map value",
    ),
    (lambda c: c.replace_map(MAP, [("0:49", "shop.blue"), ("", "shop.green")]), "map key"),
    (lambda c: c.show_servers_state("shop.blue\\"), "backend name"),
    (lambda c: c.add_server("shop.blue", "s1", "10.0.0.1 check", 80), "server address"),
    (lambda c: c.add_server("shop.blue", "s1", "10.0.0.1", 80, weight=1000), "server weight"),
    (
        lambda c: c.set_server_state("shop.blue", "s1", "ready\nshow info"),  # type: ignore[arg-type]
        "server state",
    ),
    (lambda c: c.enable_health("shop.blue", "s\x001"), "server name"),
    (lambda c: c.del_server("shop.blue", "sé"), "server name"),
    (lambda c: c.set_server_weight("shop.blue", "s1", 300), "server weight"),
]


@pytest.mark.parametrize(("call", "refused"), HOSTILE_CALLS)
async def test_hostile_arguments_send_nothing(
    call: Callable[[RuntimeClient], Awaitable[object]], refused: str
) -> None:
    """A hostile argument raises UnsafeArgument before the transport sees any text."""
    haproxy = FakeHAProxy({MAP: [("0:99", "shop.blue")]})
    client, transport = _client(haproxy)
    with pytest.raises(UnsafeArgument, match=f"^unsafe {refused} for the Runtime API: "):
        await call(client)
    assert transport.sent == []
    assert haproxy.entries(MAP) == [("0:99", "shop.blue")]


async def test_refusal_raises_and_leaves_the_map_alone() -> None:
    """A command HAProxy refuses raises RuntimeAPIError; the map is unchanged."""
    haproxy = FakeHAProxy({MAP: [("0:99", "shop.blue")]})
    client, _ = _client(haproxy)
    with pytest.raises(RuntimeAPIError, match="entry not found"):
        await client.set_map(MAP, "0:49", "shop.green")
    with pytest.raises(RuntimeAPIError, match="Unknown map identifier"):
        await client.show_map("/nope.map")
    with pytest.raises(RuntimeAPIError, match="out of range"):
        await client.commit_map(MAP, 5)
    assert [(e.key, e.value) for e in await client.show_map(MAP)] == [("0:99", "shop.blue")]


async def test_single_key_edits() -> None:
    """set, add and del map each send one command and change one key."""
    haproxy = FakeHAProxy({PINS: [("acme", "shop.blue")]})
    client, transport = _client(haproxy)
    await client.set_map(PINS, "acme", "shop.green")
    await client.add_map(PINS, "globex", "shop.blue")
    await client.del_map(PINS, "acme")
    assert transport.sent == [
        f"set map {PINS} acme shop.green",
        f"add map {PINS} globex shop.blue",
        f"del map {PINS} acme",
    ]
    assert haproxy.entries(PINS) == [("globex", "shop.blue")]


async def test_server_operations_send_their_commands() -> None:
    """Server methods send the builders' text and accept HAProxy's success replies."""
    transport = FakeTransport(
        {
            "add server shop.blue/s9 10.0.0.9:8080 check inter 200ms rise 2 fall 3": (
                "New server registered.\n\n"
            ),
            "enable health shop.blue/s9": "\n",
            "set server shop.blue/s9 state drain": "\n",
            "set server shop.blue/s9 weight 10": "\n",
            "del server shop.blue/s9": "Server deleted.\n\n",
        }
    )
    client = RuntimeClient(transport)
    await client.add_server("shop.blue", "s9", "10.0.0.9", 8080, inter_ms=200)
    await client.enable_health("shop.blue", "s9")
    await client.set_server_state("shop.blue", "s9", "drain")
    await client.set_server_weight("shop.blue", "s9", 10)
    await client.del_server("shop.blue", "s9")
    assert len(transport.sent) == 5


async def test_fake_transport_refuses_unscripted_commands_and_raises_scripted_errors() -> None:
    """Unknown text raises UnexpectedCommand; an exception as reply is raised."""
    transport = FakeTransport({"show info": RuntimeAPIError("socket gone")})
    client = RuntimeClient(transport)
    with pytest.raises(RuntimeAPIError, match="socket gone"):
        await client.show_info()
    with pytest.raises(UnexpectedCommand, match="FakeTransport has no reply for 'show stat'"):
        await client.show_stat()
    assert transport.sent == ["show info", "show stat"]


async def test_client_context_closes_the_transport() -> None:
    """Leaving ``async with RuntimeClient(...)`` closes its transport."""
    transport = FakeTransport()
    async with RuntimeClient(transport):
        assert not transport.closed
    assert transport.closed


# -- UnixSocketTransport against a local socket server -------------------------


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for unix sockets (their paths are limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="prism-rt-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class _Server:
    def __init__(self, reply: bytes, *, hang: bool = False) -> None:
        self.reply = reply
        self.hang = hang
        self.received: list[bytes] = []
        self.release = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.hang:
            await self.release.wait()
        else:
            # read to EOF: proves the transport half-closes after its newline
            self.received.append(await reader.read())
            writer.write(self.reply)
            with contextlib.suppress(ConnectionError):  # a client that gave up
                await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.fixture
async def serve(sock_dir: Path) -> AsyncIterator[Callable[[_Server], Awaitable[Path]]]:
    servers: list[tuple[asyncio.Server, _Server]] = []

    async def start(handler: _Server) -> Path:
        path = sock_dir / f"s{len(servers)}.sock"
        servers.append((await asyncio.start_unix_server(handler.handle, path), handler))
        return path

    yield start
    for server, handler in servers:
        handler.release.set()
        server.close()
        await server.wait_closed()


async def test_unix_transport_sends_a_line_and_reads_to_eof(
    serve: Callable[[_Server], Awaitable[Path]],
) -> None:
    """The text goes out with one newline; the whole reply comes back."""
    handler = _Server(b"New version created: 3\n\n")
    path = await serve(handler)
    transport = UnixSocketTransport(path)
    assert await transport.request("prepare map /m.map") == "New version created: 3\n\n"
    assert handler.received == [b"prepare map /m.map\n"]
    await transport.close()


async def test_unix_transport_translates_a_missing_socket(sock_dir: Path) -> None:
    """Connecting to no socket raises RuntimeAPIError caused by the OSError."""
    transport = UnixSocketTransport(sock_dir / "absent.sock")
    with pytest.raises(RuntimeAPIError, match="cannot talk to HAProxy") as caught:
        await transport.request("show info")
    assert isinstance(caught.value.__cause__, OSError)


async def test_unix_transport_times_out(serve: Callable[[_Server], Awaitable[Path]]) -> None:
    """A socket that never answers raises RuntimeAPIError after the timeout."""
    path = await serve(_Server(b"", hang=True))
    transport = UnixSocketTransport(path, timeout=0.2)
    with pytest.raises(RuntimeAPIError, match="did not answer"):
        await transport.request("show info")


async def test_unix_transport_caps_the_reply(serve: Callable[[_Server], Awaitable[Path]]) -> None:
    """A reply larger than max_reply is refused instead of filling memory."""
    path = await serve(_Server(b"x" * 300_000))
    transport = UnixSocketTransport(path, max_reply=100_000)
    with pytest.raises(RuntimeAPIError, match="exceeds"):
        await transport.request("show stat")


async def test_unix_transport_refuses_non_ascii(sock_dir: Path) -> None:
    """Text that no builder could produce is refused before connecting."""
    transport = UnixSocketTransport(sock_dir / "absent.sock")
    with pytest.raises(UnsafeArgument, match="Runtime API commands must be ASCII"):
        await transport.request("show map /é.map")
