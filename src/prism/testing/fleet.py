"""A fleet on one machine, for tests, benchmarks and ``prism demo --fleet``.

etcd (one member or a cluster), N ``prism agent`` nodes listening on
127.0.0.2, 127.0.0.3, ... (all of 127.0.0.0/8 is on ``lo``, so every node can
bind the same port) and one or more ``prism serve --store etcd://...``
control planes, each a :class:`~prism.testing.processes.ManagedProcess`
stopped by its own PID, and HAProxy by the PID in each node's state dir::

    with LocalFleet(tmp_path, nodes=3) as fleet:
        fleet.api("PUT", "/config", {"spec": spec})
        fleet.node_url(0, port)          # http://127.0.0.2:<port>
        fleet.kill_agent(1); fleet.start_agent(1)
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from prism.errors import PrismError
from prism.testing.etcd import EtcdCluster, EtcdServer, start_cluster, start_etcd
from prism.testing.processes import ManagedProcess, free_port

__all__ = ["LocalFleet", "Plane"]

_READY = 30.0


@dataclass
class Plane:
    """One control plane: its process, API URL and token."""

    process: ManagedProcess
    state_dir: Path
    port: int
    token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class _Node:
    name: str
    address: str
    state_dir: Path
    process: ManagedProcess | None = None


@dataclass
class LocalFleet:
    """etcd, agents and control planes under ``base``; see the module docstring."""

    base: Path
    nodes: int = 3
    planes: int = 1
    etcd_members: int = 1
    heartbeat: float = 0.5
    lease_ttl: float = 2.0
    converge_timeout: float = 10.0
    python: str = sys.executable
    etcd: EtcdServer | EtcdCluster | None = None
    control: list[Plane] = field(default_factory=list)
    agents: list[_Node] = field(default_factory=list)

    # -- lifecycle -------------------------------------------------------

    def __enter__(self) -> LocalFleet:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        if self.etcd_members == 1:
            self.etcd = start_etcd(self.base / "etcd")
        else:
            self.etcd = start_cluster(self.etcd_members, self.base / "etcd")
        for index in range(self.nodes):
            node = _Node(f"lb-{index + 1}", f"127.0.0.{index + 2}", self.base / f"lb-{index + 1}")
            self.agents.append(node)
            self.start_agent(index)
        for index in range(self.planes):
            self.start_plane(index)
        self.wait_live(self.nodes)

    def close(self) -> None:
        """Stop every control plane, agent (and its HAProxy) and etcd, by PID."""
        for plane in self.control:
            plane.process.stop(timeout=15)
        for index in range(len(self.agents)):
            self.stop_agent(index)
        if self.etcd is not None:
            self.etcd.stop()

    @property
    def store_url(self) -> str:
        assert self.etcd is not None
        return self.etcd.url("prism")

    # -- control planes --------------------------------------------------

    def start_plane(self, index: int) -> Plane:
        state_dir = self.base / f"cp-{index + 1}"
        port = free_port()
        process = ManagedProcess(
            [
                self.python,
                "-m",
                "prism",
                "--state-dir",
                str(state_dir),
                "serve",
                "--store",
                self.store_url,
                "--port",
                str(port),
                "--converge-timeout",
                str(self.converge_timeout),
            ],
            name=f"prism-cp-{index + 1}",
        )
        plane = Plane(process, state_dir, port)
        if index < len(self.control):
            self.control[index] = plane
        else:
            self.control.append(plane)
        deadline = time.monotonic() + _READY
        while time.monotonic() < deadline:
            if not process.alive:
                raise PrismError(f"control plane {index + 1} exited: {process.stderr_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{plane.url}/api/v1/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        else:
            raise PrismError(f"control plane {index + 1} did not answer: {process.stderr_text()}")
        plane.token = (state_dir / "token").read_text().strip()
        return plane

    def client(self, plane: int = 0) -> httpx.Client:
        target = self.control[plane]
        return httpx.Client(
            base_url=f"{target.url}/api/v1",
            headers={"Authorization": f"Bearer {target.token}"},
            timeout=60,
        )

    def api(self, method: str, path: str, body: Any = None, *, plane: int = 0) -> httpx.Response:
        with self.client(plane) as client:
            return client.request(method, path, json=body)

    # -- agents ----------------------------------------------------------

    def start_agent(self, index: int) -> None:
        node = self.agents[index]
        node.process = ManagedProcess(
            [
                self.python,
                "-m",
                "prism",
                "--state-dir",
                str(node.state_dir),
                "agent",
                "--store",
                self.store_url,
                "--node",
                node.name,
                "--listen-address",
                node.address,
                "--heartbeat",
                str(self.heartbeat),
                "--lease-ttl",
                str(self.lease_ttl),
            ],
            name=f"prism-agent-{node.name}",
        )

    def kill_agent(self, index: int) -> None:
        """kill -9 an agent; its HAProxy keeps serving (it runs in its own session)."""
        node = self.agents[index]
        if node.process is not None:
            node.process.kill9()

    def stop_agent(self, index: int) -> None:
        """Stop an agent and then its HAProxy, by the PID in the node's state dir."""
        node = self.agents[index]
        if node.process is not None:
            node.process.stop(timeout=15)
        pid = self.haproxy_pid(index)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def haproxy_pid(self, index: int) -> int | None:
        try:
            return int((self.agents[index].state_dir / "haproxy.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def node_url(self, index: int, port: int, path: str = "/") -> str:
        return f"http://{self.agents[index].address}:{port}{path}"

    def wait_live(self, count: int, timeout: float = _READY) -> list[dict[str, Any]]:
        """Poll ``GET /nodes`` until ``count`` nodes are live; return the rows."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                reply = self.api("GET", "/nodes")
                if reply.status_code == 200:
                    rows = reply.json()
                    if sum(1 for r in rows if r.get("state") == "live") >= count:
                        return rows
            time.sleep(0.1)
        raise AssertionError(f"only these nodes are live after {timeout:g}s: {rows}")
