"""The supervisor against a real HAProxy: start, reload, reject, restart, adopt, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from prism.errors import ConfigRejected, HAProxyError
from prism.haproxy.binary import HAProxyBinary
from prism.haproxy.master import MasterClient, unix_exchange
from prism.haproxy.supervisor import Supervisor
from prism.node.paths import StatePaths
from prism.testing.wait import eventually

pytestmark = pytest.mark.haproxy

BROKEN = "    http-request bogus-action\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render(paths: StatePaths, port: int, body: str, extra: str = "") -> str:
    return (
        "global\n"
        f"    stats socket {paths.admin_socket} mode 600 level admin\n"
        f"    server-state-file {paths.server_state}\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 5s\n"
        "    timeout client 30s\n"
        "    timeout server 30s\n"
        "    load-server-state-from-file global\n"
        "frontend fe\n"
        f"    bind 127.0.0.1:{port}\n"
        f'    http-request return status 200 content-type text/plain string "{body}"\n'
        f"{extra}"
    )


def write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    temp.replace(path)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def kill_leftovers(pids: set[int], root: Path) -> None:
    """SIGKILL each pid still running this test's HAProxy (its command line names ``root``)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if alive(pid) and str(root).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)


async def get(port: int) -> str:
    """One HTTP/1.0 GET; returns the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.0\r\nHost: prism\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            response = await reader.read(-1)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = response.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200"), head
    return body


@dataclass
class Env:
    """A state directory with a config, and every supervisor and pid a test made."""

    paths: StatePaths
    binary: HAProxyBinary
    port: int
    supervisors: list[Supervisor] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)

    def supervisor(
        self,
        save_state: Callable[[], Awaitable[None]] | None = None,
        stop_timeout: float = 5.0,
    ) -> Supervisor:
        sup = Supervisor(self.paths, self.binary, save_state=save_state, stop_timeout=stop_timeout)
        self.supervisors.append(sup)
        return sup

    async def remember(self, sup: Supervisor) -> list[int]:
        """Record the master and worker pids of ``sup`` for cleanup; return the workers."""
        assert sup.pid is not None
        self.pids.add(sup.pid)
        info = await MasterClient(self.paths.master_socket).show_proc()
        self.pids.update(info.workers + info.old_workers)
        return list(info.workers)

    def write(self, body: str, extra: str = "") -> None:
        write_atomically(self.paths.config, render(self.paths, self.port, body, extra))


@pytest.fixture
async def env(tmp_path: Path, binary: HAProxyBinary) -> AsyncIterator[Env]:
    """A fresh state directory; afterwards every HAProxy it ran is gone, by pid."""
    paths = StatePaths.at(tmp_path / "st")
    paths.root.mkdir()
    state = Env(paths=paths, binary=binary, port=free_port())
    state.write("v1")
    try:
        yield state
    finally:
        for sup in state.supervisors:
            if sup.pid is not None:
                state.pids.add(sup.pid)
            with contextlib.suppress(Exception):
                await sup.stop()
        if paths.pidfile.exists():
            with contextlib.suppress(ValueError, OSError):
                state.pids.add(int(paths.pidfile.read_text().split()[0]))
        kill_leftovers(state.pids, paths.root)


async def test_start_serves_and_answers_on_admin_socket(env: Env) -> None:
    """start() spawns a master that serves the config and answers show info."""
    sup = env.supervisor()
    await sup.start()
    await env.remember(sup)
    assert sup.running
    assert not sup.adopted
    assert await get(env.port) == "v1"
    info = await unix_exchange(env.paths.admin_socket, "show info", timeout=5)
    assert "Name: HAProxy" in info
    assert env.paths.pidfile.read_text().split()[0] == str(sup.pid)
    assert "Loading success" in sup.log_path.read_text()


async def test_context_manager_starts_and_stops(env: Env) -> None:
    """async with starts HAProxy and stops it on exit."""
    async with env.supervisor() as sup:
        await env.remember(sup)
        pid = sup.pid
        assert pid is not None
        assert await get(env.port) == "v1"
    assert not alive(pid)
    assert not env.paths.pidfile.exists()


async def test_reload_applies_new_config_without_failing_requests(env: Env) -> None:
    """reload() saves state, swaps to a new worker serving the new config, drops nothing."""
    saved: list[str] = []

    async def save_state() -> None:
        dump = await unix_exchange(env.paths.admin_socket, "show servers state", timeout=5)
        write_atomically(env.paths.server_state, dump)
        saved.append(dump)

    sup = env.supervisor(save_state)
    await sup.start()
    old_workers = await env.remember(sup)
    master = sup.pid

    failures: list[BaseException] = []
    bodies: list[str] = []
    done = asyncio.Event()

    async def traffic() -> None:
        # Bounded: at most 2,000 requests, and it stops once the reload is done.
        for _ in range(2000):
            try:
                bodies.append(await get(env.port))
            except (OSError, AssertionError) as exc:
                failures.append(exc)
            if done.is_set():
                return

    load = asyncio.create_task(traffic())
    await eventually(lambda: bodies or failures, timeout=10, what="traffic before the reload")
    env.write("v2")
    result = await sup.reload()
    done.set()
    await load
    new_workers = await env.remember(sup)

    assert result.success
    assert "Loading success" in result.output
    assert len(saved) == 1
    assert env.paths.server_state.exists()
    assert sup.pid == master
    assert not set(new_workers) & set(old_workers)
    assert await get(env.port) == "v2"
    assert failures == []
    assert "v1" in bodies


async def test_check_failure_rejects_and_old_config_keeps_serving(env: Env) -> None:
    """A config that fails haproxy -c is rejected before save_state; v1 keeps serving."""
    saves = 0

    async def save_state() -> None:
        nonlocal saves
        saves += 1

    sup = env.supervisor(save_state)
    await sup.start()
    workers = await env.remember(sup)

    env.write("v2", extra=BROKEN)
    pattern = r"^HAProxy rejected .*haproxy\.cfg: .*'http-request'"
    with pytest.raises(ConfigRejected, match=pattern) as caught:
        await sup.reload()

    assert "bogus-action" in caught.value.message
    assert str(env.paths.config) in caught.value.message
    assert "bogus-action" in caught.value.detail["output"]
    assert saves == 0
    assert await get(env.port) == "v1"
    assert (await sup.master.show_proc()).workers == tuple(workers)


async def test_reload_refused_by_master_keeps_old_worker(env: Env) -> None:
    """A config that passes -c but cannot start (port taken) fails the reload; v1 serves."""
    sup = env.supervisor()
    await sup.start()
    workers = await env.remember(sup)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        env.write("v2", extra=f"frontend busy\n    bind 127.0.0.1:{busy}\n")
        await sup.check(env.paths.config)  # -c does not bind, so it passes
        pattern = r"^HAProxy refused to reload .*haproxy\.cfg: "
        with pytest.raises(ConfigRejected, match=pattern) as caught:
            await sup.reload()

    assert "cannot bind socket" in caught.value.message
    assert await get(env.port) == "v1"
    assert (await sup.master.show_proc()).workers == tuple(workers)

    # The master is still usable: a good config reloads afterwards.
    env.write("v3")
    assert (await sup.reload()).success
    await env.remember(sup)
    assert await get(env.port) == "v3"


async def test_monitor_restarts_killed_master(env: Env) -> None:
    """After kill -9 of the master the monitor starts HAProxy again and it serves."""
    sup = env.supervisor()
    await sup.start()
    await env.remember(sup)
    killed = sup.pid
    assert killed is not None

    os.kill(killed, signal.SIGKILL)
    await eventually(
        lambda: sup.restarts == 1 and sup.pid != killed and sup.running,
        timeout=15,
        what="the monitor to restart the killed master",
    )
    await env.remember(sup)

    assert not alive(killed)
    assert await get(env.port) == "v1"


async def test_second_supervisor_adopts_running_master(env: Env) -> None:
    """A second supervisor on the same state dir adopts the master instead of starting one."""
    first = env.supervisor()
    await first.start()
    workers = await env.remember(first)

    second = env.supervisor()
    await second.start()

    assert second.adopted
    assert second.pid == first.pid
    info = await second.master.show_proc()
    assert info.master_pid == first.pid
    assert list(info.workers) == workers
    await second.detach()
    assert first.running


async def test_adopted_master_reloads_restarts_and_stops(env: Env) -> None:
    """After a Prism restart the adopted master reloads, is restarted if killed, and stops."""
    first = env.supervisor()
    await first.start()
    await env.remember(first)
    running = first.pid
    await first.detach()  # Prism exits; HAProxy keeps serving
    assert first.pid is None

    sup = env.supervisor()
    await sup.start()
    assert sup.adopted
    assert sup.pid == running
    assert await get(env.port) == "v1"

    env.write("v2")
    assert (await sup.reload()).success
    await env.remember(sup)
    assert await get(env.port) == "v2"

    adopted = sup.pid
    assert adopted is not None
    os.kill(adopted, signal.SIGKILL)
    await eventually(
        lambda: sup.restarts == 1 and sup.pid != adopted and sup.running,
        timeout=15,
        what="the monitor to restart the killed adopted master",
    )
    await env.remember(sup)
    assert not sup.adopted
    assert await get(env.port) == "v2"


async def test_stop_leaves_no_process_and_is_final(env: Env) -> None:
    """stop() ends master and workers, removes the pidfile, is idempotent, never restarts."""
    sup = env.supervisor()
    await sup.start()
    workers = await env.remember(sup)
    master = sup.pid
    assert master is not None

    await sup.stop()
    await sup.stop()

    assert not alive(master)
    assert not any(alive(worker) for worker in workers)
    assert not env.paths.pidfile.exists()
    assert not sup.running
    assert sup.pid is None
    # Not a wait: nothing may happen here. A monitor still running would have
    # restarted a master this young after its 0.5 s backoff, well within 1 s.
    await asyncio.sleep(1.0)
    assert sup.restarts == 0
    with pytest.raises(ConnectionRefusedError, match="Connect call failed"):
        await get(env.port)


async def test_stop_escalates_when_a_request_never_finishes(env: Env) -> None:
    """A request stuck in flight outlasts the soft stop; stop() still ends everything."""
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read(-1)  # never answers; returns when HAProxy hangs up
        writer.close()

    backend = await asyncio.start_server(silent, "127.0.0.1", 0)
    slow = free_port()
    backend_port = backend.sockets[0].getsockname()[1]
    env.write(
        "v1",
        extra=(
            f"frontend slow\n    bind 127.0.0.1:{slow}\n    default_backend silent\n"
            f"backend silent\n    server s1 127.0.0.1:{backend_port}\n"
        ),
    )
    sup = env.supervisor(stop_timeout=0.5)
    try:
        await sup.start()
        workers = await env.remember(sup)
        master = sup.pid
        assert master is not None
        stuck = asyncio.create_task(get(slow))
        await asyncio.wait_for(accepted.wait(), 5)

        began = asyncio.get_running_loop().time()
        await sup.stop()
        took = asyncio.get_running_loop().time() - began

        assert not alive(master)
        assert not any(alive(worker) for worker in workers)
        assert 0.5 <= took < 5
        with contextlib.suppress(OSError, AssertionError, TimeoutError):
            await stuck
    finally:
        backend.close()
        await backend.wait_closed()


async def test_start_with_broken_config_starts_nothing(env: Env) -> None:
    """start() checks the config first: a broken one raises ConfigRejected, no process."""
    env.write("v1", extra=BROKEN)
    sup = env.supervisor()
    with pytest.raises(ConfigRejected, match=r"^HAProxy rejected .*haproxy\.cfg: .*'http-request'"):
        await sup.start()
    assert sup.pid is None
    assert not env.paths.pidfile.exists()


async def test_start_failure_reports_log_tail(env: Env) -> None:
    """A master that cannot bind its port fails start() with HAProxy's log lines."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", env.port))
        taken.listen()
        sup = env.supervisor()
        pattern = r"^HAProxy exited with code \d+; last log lines:"
        with pytest.raises(HAProxyError, match=pattern) as caught:
            await sup.start()
    assert "exited with code" in caught.value.message
    assert "bind" in caught.value.message
    assert sup.pid is None
