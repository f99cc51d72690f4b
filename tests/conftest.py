"""Fixtures shared by the tests: a real ``prism serve`` with its HAProxy, real backends.

Every process a fixture starts is stopped by its PID at teardown, even when the
test fails: Prism itself (SIGTERM, then SIGKILL), then HAProxy's master from
the pidfile in the state directory, as a safety net.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from prism.errors import HAProxyNotFound
from prism.haproxy.binary import HAProxyBinary, find_haproxy
from prism.haproxy.parsers import parse_servers_conn, parse_show_stat
from prism.node.paths import StatePaths
from prism.testing.processes import (
    Backend,
    BackendSpec,
    ManagedProcess,
    backends,
    free_port,
    with_open_files_limit,
)
from prism.testing.wait import wait_for


@dataclass
class Server:
    """A running ``prism serve`` subprocess and how to talk to it."""

    process: ManagedProcess
    state_dir: Path
    url: str
    token: str
    admin_port: int
    #: how the test trusts the API's TLS certificate (https only)
    verify: ssl.SSLContext | bool = True

    def client(self, *, auth: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        return httpx.Client(
            base_url=f"{self.url}/api/v1", headers=headers, timeout=60, verify=self.verify
        )

    def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        with self.client() as client:
            return client.request(method, path, json=body)

    def cli(self, *args: str, timeout: float = 60) -> Any:
        import subprocess

        env = {
            **os.environ,
            "PRISM_URL": self.url,
            "PRISM_TOKEN": self.token,
            "PRISM_STATE_DIR": str(self.state_dir),
        }
        return subprocess.run(
            [sys.executable, "-m", "prism", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def haproxy_pid(self) -> int | None:
        try:
            return int((self.state_dir / "haproxy.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def _kill_pid(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait_http(
    url: str, deadline: float, proc: ManagedProcess, verify: ssl.SSLContext | bool = True
) -> None:
    def answers() -> bool:
        if not proc.alive:
            raise RuntimeError(f"prism serve exited early:\n{proc.stderr_text()}")
        return httpx.get(url, timeout=1, verify=verify).status_code == 200

    try:
        wait_for(
            answers,
            ignore=(httpx.HTTPError,),
            timeout=max(deadline - time.monotonic(), 0.1),
            what=f"prism serve to answer {url}",
        )
    except AssertionError as exc:
        raise RuntimeError(f"{exc}\n{proc.stderr_text()}") from None


@contextlib.contextmanager
def run_server(
    state_dir: Path, *extra: str, nofile: int | None = None, cacert: Path | None = None
) -> Iterator[Server]:
    """Start ``prism serve`` on free ports; stop it and its HAProxy by PID on exit.

    ``nofile`` sets its open-files limit (soft and hard) before it starts: the
    wrapper execs Prism in place, so the PID stays the one stopped at the end.
    With ``cacert`` the server is reached over https (``extra`` gives it
    ``--tls-cert`` and ``--tls-key``) and trusted through that CA.
    """
    port, admin_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "prism",
        "--state-dir",
        str(state_dir),
        "serve",
        "--port",
        str(port),
        "--admin-port",
        str(admin_port),
        "--stop-haproxy",
        *extra,
    ]
    if nofile is not None:
        cmd = with_open_files_limit(cmd, nofile, nofile)
    process = ManagedProcess(cmd, name="prism")
    server: Server | None = None
    verify: ssl.SSLContext | bool = True
    if cacert is not None:
        verify = ssl.create_default_context(cafile=str(cacert))
    try:
        url = f"{'https' if cacert else 'http'}://127.0.0.1:{port}"
        _wait_http(f"{url}/api/v1/health", time.monotonic() + 30, process, verify)
        token = (state_dir / "token").read_text().strip()
        server = Server(process, state_dir, url, token, admin_port, verify)
        yield server
    finally:
        haproxy = server.haproxy_pid if server else None
        process.stop(timeout=15)
        process.close()
        if haproxy is None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                haproxy = int((state_dir / "haproxy.pid").read_text().split()[0])
        _kill_pid(haproxy)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def server(state_dir: Path) -> Iterator[Server]:
    """A real `prism serve` with a real HAProxy, on free ports, in a temp state dir."""
    with run_server(state_dir) as running:
        yield running


@pytest.fixture
def color_backends() -> Iterator[dict[str, Backend]]:
    """Three real demo backends: blue v1, green v2, red v3."""
    specs = [BackendSpec("blue", "v1"), BackendSpec("green", "v2"), BackendSpec("red", "v3")]
    with backends(specs) as running:
        yield {b.color: b for b in running}


def crowded_listener_spec(apps: int) -> dict[str, Any]:
    """``apps`` apps sharing one listener, told apart by Host."""
    return {
        "listeners": [{"name": "crowd", "bind": "127.0.0.1:8002"}],
        "apps": [
            {
                "name": f"app{n:03d}",
                "listener": "crowd",
                "host": f"app{n:03d}.test",
                "stable": "blue",
                "colors": [{"name": "blue", "servers": ["127.0.0.1:9000"]}],
            }
            for n in range(apps)
        ],
    }


def shop_spec(listen_port: int, servers: dict[str, Backend], **app: Any) -> dict[str, Any]:
    """A one-app spec whose colors are the given backends, with fast health checks."""
    base: dict[str, Any] = {
        "name": "shop",
        "bind": f"127.0.0.1:{listen_port}",
        "stable": "blue",
        "check": {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2},
        "drain_timeout_ms": "5s",
        "colors": [
            {
                "name": color,
                "version": backend.version,
                "servers": [{"name": "s1", "host": "127.0.0.1", "port": backend.port}],
            }
            for color, backend in servers.items()
        ],
    }
    base.update(app)
    return {"apps": [base]}


def wait_until_up(server: Server, app: str, colors: list[str], timeout: float = 15) -> None:
    """Wait (bounded) until every server of the named colors is exactly UP."""

    def all_up(status: dict[str, Any]) -> bool:
        states = [
            s["status"] for c in status["colors"] if c["name"] in colors for s in c["servers"]
        ]
        return bool(states) and all(s == "UP" for s in states)

    wait_for(
        lambda: server.api("GET", f"/apps/{app}").json(),
        until=all_up,
        timeout=timeout,
        interval=0.1,
        what=f"every server of {app} {'/'.join(colors)} UP",
    )


def haproxy_admin(server: Server, command: str) -> str:
    """One command on the admin socket of ``server``'s HAProxy; its whole reply."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(StatePaths(server.state_dir).admin_socket))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def wait_for_traffic(server: Server, backend: str, at_least: int = 20, timeout: float = 15) -> int:
    """Wait (bounded) until HAProxy's ``backend`` has served ``at_least`` requests in all.

    For a test that starts a load and must act only once it flows. Returns the
    count seen.
    """

    def served() -> int:
        rows = parse_show_stat(haproxy_admin(server, f"show stat {backend} -1 -1"))
        return next((r.stot for r in rows if r.server == "BACKEND"), 0)

    return wait_for(
        served,
        until=lambda n: n >= at_least,
        timeout=timeout,
        what=f"{backend} to serve {at_least} requests",
    )


def wait_in_flight(server: Server, backend: str, timeout: float = 10) -> None:
    """Wait (bounded) until a server of HAProxy's ``backend`` has a request in flight."""
    wait_for(
        lambda: parse_servers_conn(haproxy_admin(server, f"show servers conn {backend}")),
        until=lambda conns: any(c.used_cur > 0 for c in conns),
        timeout=timeout,
        interval=0.02,
        what=f"a request in flight on {backend}",
    )


@pytest.fixture(scope="session")
def binary() -> HAProxyBinary:
    """The HAProxy under test; the module is skipped without one."""
    try:
        return find_haproxy()
    except HAProxyNotFound as exc:
        pytest.skip(f"no usable HAProxy: {exc}")
