"""Runtime API commands through kept-open master CLI sessions, against a real HAProxy.

A session is reused command after command, answers exactly what a one-shot
connection to the worker answers, follows the master to the new worker after a
reload (and so never keeps an old worker alive), and hands payloads and
overflow to one-shot connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from prism.errors import RuntimeAPIError
from prism.haproxy.binary import HAProxyBinary
from prism.haproxy.master import MasterClient
from prism.haproxy.parsers import parse_show_info
from prism.haproxy.runtime import (
    RuntimeClient,
    SessionTransport,
    UnixSocketTransport,
    _Session,
)
from prism.haproxy.supervisor import Supervisor
from prism.node.paths import StatePaths
from prism.testing.wait import eventually
from tests.integration.test_supervisor import (
    alive,
    free_port,
    kill_leftovers,
    render,
    write_atomically,
)

pytestmark = pytest.mark.haproxy


@dataclass
class Node:
    paths: StatePaths
    supervisor: Supervisor
    map_path: Path
    pids: set[int] = field(default_factory=set)

    async def remember(self) -> tuple[int, ...]:
        """Note the master's and workers' pids for cleanup; the current worker(s)."""
        assert self.supervisor.pid is not None
        self.pids.add(self.supervisor.pid)
        info = await MasterClient(self.paths.master_socket).show_proc()
        self.pids.update(info.workers + info.old_workers)
        return info.workers


@pytest.fixture
async def node(tmp_path: Path, binary: HAProxyBinary) -> AsyncIterator[Node]:
    """A supervised master-worker HAProxy with one map; stopped by pid afterwards."""
    paths = StatePaths.at(tmp_path / "st")
    paths.root.mkdir()
    map_path = paths.root / "hosts.map"
    map_path.write_text("shop blue\n")
    extra = (
        "backend blue\n"
        "    http-request return status 200 content-type text/plain string blue\n"
        "frontend routed\n"
        f"    bind 127.0.0.1:{free_port()}\n"
        f"    use_backend %[str(shop),map({map_path},blue)]\n"
    )
    write_atomically(paths.config, render(paths, free_port(), "v1", extra))
    supervisor = Supervisor(paths, binary)
    state = Node(paths, supervisor, map_path)
    try:
        await supervisor.start()
        await state.remember()
        yield state
    finally:
        if supervisor.pid is not None:
            state.pids.add(supervisor.pid)
        with contextlib.suppress(Exception):
            await supervisor.stop()
        kill_leftovers(state.pids, paths.root)


def sessions(node: Node, **kwargs: float) -> SessionTransport:
    return SessionTransport(node.paths.master_socket, node.paths.admin_socket, **kwargs)


async def test_a_session_answers_as_a_one_shot_connection_does(node: Node) -> None:
    """Replies through the session are byte for byte the worker's own, refusals too,
    and a run of commands keeps using one connection."""
    transport = sessions(node)
    oneshot = UnixSocketTransport(node.paths.admin_socket)
    path = str(node.map_path)
    try:
        for text in (
            f"set map {path} shop green",
            f"show map {path}",
            f"get map {path} shop",
            f"set map {path} nokey green",
            "show stat blue 2 -1",
            "show stat nosuch 4 -1",
            "show servers conn",
        ):
            assert await transport.request(text) == await oneshot.request(text), text
        assert transport._open == 1
        entries = await RuntimeClient(transport).show_map(path)
        assert [(e.key, e.value) for e in entries] == [("shop", "green")]
    finally:
        await transport.close()


async def test_after_a_reload_commands_reach_the_new_worker(node: Node) -> None:
    """A reload closes the master's sessions; the next read opens a new one, which
    reaches the new worker, and the old worker is not kept alive by a session."""
    transport = sessions(node)
    client = RuntimeClient(transport)
    try:
        (before,) = await node.remember()
        assert int((await client.show_info())["Pid"]) == before
        assert (await node.supervisor.reload()).success
        (after,) = await node.remember()
        assert after != before
        assert int((await client.show_info())["Pid"]) == after
        await eventually(
            lambda: not alive(before), timeout=10, what="the old worker to finish and exit"
        )
        await client.set_map(str(node.map_path), "shop", "green")
        replied = await UnixSocketTransport(node.paths.admin_socket).request(
            f"get map {node.map_path} shop"
        )
        assert 'value="green"' in replied
    finally:
        await transport.close()


async def dead_session(transport: SessionTransport) -> None:
    """Put a session in the pool whose other end has just closed, before the event loop
    could notice: what a reload does to a session between two commands."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    session = _Session(reader, writer)
    session.prompt = b"master> "
    session.used = time.monotonic()
    theirs.close()
    transport._free.append(session)
    transport._open += 1


async def test_a_write_whose_session_closed_under_it_is_not_resent(node: Node) -> None:
    """Only a read is sent again on a fresh session: a write on a session the master
    closed raises and names the cause (it cannot know whether HAProxy ran it)."""
    transport = sessions(node)
    try:
        await dead_session(transport)
        with pytest.raises(RuntimeAPIError, match="closed the session"):
            await transport.request(f"set map {node.map_path} shop green")
        await dead_session(transport)
        assert "Pid:" in await transport.request("show info")
        assert transport._open == 1
    finally:
        await transport.close()


async def test_payloads_and_overflow_go_through_one_shot_connections(node: Node) -> None:
    """A ``<<`` payload is sent on its own connection to the worker, and commands sent
    while every session is busy are not queued behind them."""
    transport = sessions(node, sessions=2)
    client = RuntimeClient(transport)
    path = str(node.map_path)
    try:
        await client.replace_map(path, [("shop", "green"), ("other", "blue")])
        entries = sorted((e.key, e.value) for e in await client.show_map(path))
        assert entries == [("other", "blue"), ("shop", "green")]
        replies = await asyncio.gather(*(client.show_info() for _ in range(12)))
        assert {r["Name"] for r in replies} == {"HAProxy"}
        assert transport._open <= 2
    finally:
        await transport.close()
    # closed: commands still work, one connection each
    assert parse_show_info(await transport.request("show info"))["Name"] == "HAProxy"
    assert transport._open == 0


async def test_a_session_idle_too_long_is_replaced(node: Node) -> None:
    """A session idle past ``idle`` seconds (here: any time at all) is closed and a
    new one opened."""
    transport = sessions(node, idle=0.0)
    try:
        await transport.request("show info")
        (first,) = transport._free
        await transport.request("show info")
        (second,) = transport._free
        assert second is not first
        assert first.writer.is_closing()
    finally:
        await transport.close()
