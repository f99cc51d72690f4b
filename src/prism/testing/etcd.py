"""Start and always stop real etcd servers for tests and the demo.

One member or a cluster of several, on loopback, on ports picked at run time,
with data in a directory the caller owns. Every process is a
:class:`~prism.testing.processes.ManagedProcess`, stopped by its own PID::

    with start_etcd(tmp_path) as etcd:
        store = await EtcdStore.open(etcd.url("prism"))
        ...
        etcd.kill9()      # crash it
        etcd.restart()    # same ports, same data

Readiness is ``GET /health`` answering ``{"health": "true"}``, polled against a
deadline. Inherited ``ETCD_*`` variables are removed from the child's
environment (etcd refuses a flag that an environment variable shadows).
``fast=True`` (tests) shortens the election to ~100 ms; the demo uses etcd's
own timings. Every server allows client keepalive pings each second
(``--grpc-keepalive-min-time 1s``), so clients notice a frozen server quickly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aetcd
from aetcd import rpc

from prism.errors import PrismError
from prism.testing.processes import ManagedProcess, free_port

__all__ = [
    "READY_TIMEOUT",
    "EtcdCluster",
    "EtcdServer",
    "EtcdTLS",
    "compact",
    "etcd_binary",
    "make_test_tls",
    "start_cluster",
    "start_etcd",
]

READY_TIMEOUT = 15.0  # seconds a member (or a whole cluster) gets to report healthy
_POLL = 0.02  # seconds between /health polls
_START_ATTEMPTS = 3  # fresh ports to try when another process took ours first


def etcd_binary() -> str:
    """The path of the ``etcd`` server binary, or PrismError saying how to install it."""
    found = shutil.which("etcd")
    if found is None:
        raise PrismError(
            "the etcd server binary is not installed (no `etcd` on PATH)",
            hint="apt-get install -y etcd-server (it starts no daemon; tests start their own)",
        )
    return found


@dataclass(frozen=True, slots=True)
class EtcdTLS:
    """Certificate files for a TLS etcd made by :func:`make_test_tls`.

    The server presents ``server_cert`` and requires a client certificate signed
    by ``ca``; a client trusts ``ca`` and presents ``client_cert``.
    """

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_test_tls(directory: Path, *, host: str = "127.0.0.1") -> EtcdTLS:
    """A throwaway CA plus a server certificate for ``host`` and a client one, via openssl.

    Keys are P-256 (fast to make), valid for two days, written into ``directory``.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise PrismError("openssl is not installed", hint="apt-get install -y openssl")
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        done = subprocess.run(
            [openssl, *args], cwd=directory, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise PrismError(
                f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}",
                hint="check the openssl installation",
            )

    run(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=prism-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    san = f"IP:{host}" if host.replace(".", "").isdigit() or ":" in host else f"DNS:{host}"
    leaves = {
        # etcd's gRPC gateway dials etcd itself with the server certificate: clientAuth too.
        "server": (f"subjectAltName={san},DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"),
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for serial, (name, extensions) in enumerate(leaves.items(), start=2):
        (directory / f"{name}.ext").write_text(
            extensions + "keyUsage=critical,digitalSignature,keyEncipherment\n"
        )
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", str(serial), "-days", "2", "-out", f"{name}.crt",
            "-extfile", f"{name}.ext",
        )  # fmt: skip
    return EtcdTLS(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}


class EtcdServer:
    """One etcd member: its process, ports and data directory.

    Built by :func:`start_etcd` or :func:`start_cluster`; the ports and the data
    directory stay fixed for its life, so :meth:`restart` brings back the same
    member with the same data.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        name: str,
        host: str,
        client_port: int,
        peer_port: int,
        initial_cluster: str,
        fast: bool,
        tls: EtcdTLS | None,
    ) -> None:
        self.data_dir = data_dir
        self.name = name
        self.host = host
        self.client_port = client_port
        self.peer_port = peer_port
        self.initial_cluster = initial_cluster
        self.fast = fast
        self.tls = tls
        self.process: ManagedProcess | None = None
        self._frozen = False

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client listener."""
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        """``http://host:port`` (``https`` with TLS), as etcd advertises it."""
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def url(self, prefix: str = "prism") -> str:
        """A Prism store URL for this member: ``etcd://host:port/prefix``."""
        return f"etcd://{self.endpoint}/{prefix}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        """True while the process runs (frozen counts as running)."""
        return self.process is not None and self.process.alive

    def args(self) -> list[str]:
        """The etcd command line for this member."""
        args = [
            etcd_binary(),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",
            "--grpc-keepalive-min-time", "1s",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        if self.fast:
            args += ["--heartbeat-interval", "10", "--election-timeout", "100"]
        if self.tls:
            args += [
                "--cert-file", str(self.tls.server_cert),
                "--key-file", str(self.tls.server_key),
                "--trusted-ca-file", str(self.tls.ca),
                "--client-cert-auth",
            ]  # fmt: skip
        return args

    def spawn(self) -> None:
        """Start the process without waiting for it to be healthy (see :meth:`wait_ready`)."""
        if self.alive:
            raise PrismError(f"etcd {self.name} is already running (pid {self.pid})")
        if self.process is not None:
            self.process.close()
        self._frozen = False
        self.process = ManagedProcess(self.args(), name=f"etcd-{self.name}", env=_child_env())

    def healthy(self) -> bool:
        """One ``GET /health``: True when it answers ``{"health": "true"}``."""
        try:
            body = self._http("GET", "/health", timeout=1.0)
        except (OSError, ValueError):
            return False
        return isinstance(body, dict) and body.get("health") == "true"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll ``/health`` until it says true; PrismError (with etcd's stderr) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or not self.process.alive:
                raise self._failed("exited before it was healthy")
            if self.healthy():
                return
            if time.monotonic() >= deadline:
                raise self._failed(f"not healthy within {timeout:g}s")
            time.sleep(_POLL)

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the process and wait (bounded) until it is healthy."""
        self.spawn()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (after SIGCONT if frozen), then SIGKILL; by PID; safe to repeat."""
        if self.process is None:
            return
        self.thaw()
        self.process.stop(timeout)

    def kill9(self) -> None:
        """Crash it: SIGKILL, no goodbye to clients or peers."""
        if self.process is not None:
            self.process.kill9()
            self._frozen = False

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a hung server)."""
        self._send(signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self._frozen:
            self._send(signal.SIGCONT)
            self._frozen = False

    def restart(self, timeout: float = READY_TIMEOUT) -> None:
        """Stop it if it runs, then start it again on the same ports with the same data."""
        self.stop()
        self.start(timeout)

    def stderr_text(self, limit: int = 8192) -> str:
        return self.process.stderr_text(limit) if self.process else ""

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> EtcdServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EtcdServer {self.name} {self.endpoint} {self.process!r}>"

    def _send(self, sig: signal.Signals) -> None:
        # alive means not reaped yet, so the PID is still this child's.
        if self.process is not None and self.process.alive:
            os.kill(self.process.pid, sig)

    def _failed(self, why: str) -> PrismError:
        stderr = self.stderr_text()
        last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
        return PrismError(
            f"etcd {self.name} at {self.endpoint} (pid {self.pid}) failed to start: {why}",
            hint=last[-300:] or "it wrote nothing to stderr",
            detail={"stderr": stderr},
        )

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return context

    def _http(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        timeout: float = 5.0,
    ) -> Any:
        """One JSON request to etcd's HTTP API (``/health``, the ``/v3`` gRPC gateway)."""
        request = urllib.request.Request(  # noqa: S310 (our own http(s) URL)
            self.client_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": token} if token else {},
        )
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=timeout, context=self._ssl_context()
        ) as response:
            return json.loads(response.read() or b"null")

    def enable_auth(self, user: str, password: str) -> None:
        """Create ``root`` and ``user`` (both with the root role and ``password``), enable auth."""
        calls: list[tuple[str, dict[str, Any]]] = [
            ("/v3/auth/user/add", {"name": "root", "password": password}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
        ]
        if user != "root":
            calls += [
                ("/v3/auth/user/add", {"name": user, "password": password}),
                ("/v3/auth/user/grant", {"user": user, "role": "root"}),
            ]
        calls.append(("/v3/auth/enable", {}))
        for path, body in calls:
            try:
                self._http("POST", path, body)
            except urllib.error.HTTPError as exc:
                raise PrismError(
                    f"etcd {self.name}: {path} failed: {exc.read().decode(errors='replace')}"
                ) from exc


def _start_one(
    data_dir: Path, *, host: str, name: str, fast: bool, tls: EtcdTLS | None, timeout: float
) -> EtcdServer:
    last: PrismError | None = None
    for _ in range(_START_ATTEMPTS):
        client_port, peer_port = free_port(), free_port()
        server = EtcdServer(
            data_dir,
            name=name,
            host=host,
            client_port=client_port,
            peer_port=peer_port,
            initial_cluster=f"{name}=http://{host}:{peer_port}",
            fast=fast,
            tls=tls,
        )
        try:
            server.start(timeout)
            return server
        except PrismError as exc:
            # free_port() only says a port *was* free: another process may have
            # bound it since. Try fresh ports then; fail on anything else.
            if "address already in use" not in server.stderr_text(64 * 1024):
                raise
            last = exc
    assert last is not None
    raise last


def start_etcd(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    name: str = "m0",
    fast: bool = True,
    tls: EtcdTLS | None = None,
    auth: tuple[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> EtcdServer:
    """Start a one-member etcd with its data in ``data_dir/<name>.etcd``; wait until healthy.

    ``tls`` serves clients over TLS and requires client certificates;
    ``auth=(user, password)`` enables etcd authentication with that user (and
    ``root``, which etcd requires, with the same password). The caller must
    ``stop()`` the result (or use it as a context manager).
    """
    server = _start_one(
        data_dir / f"{name}.etcd", host=host, name=name, fast=fast, tls=tls, timeout=ready_timeout
    )
    if auth is not None:
        try:
            server.enable_auth(*auth)
        except BaseException:
            server.stop()
            raise
    return server


class EtcdCluster:
    """Several etcd members that form one cluster; stop them all with :meth:`stop`."""

    def __init__(self, members: Sequence[EtcdServer]) -> None:
        self.members = list(members)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def url(self, prefix: str = "prism") -> str:
        """A Prism store URL naming every member: ``etcd://h:p,h:p,h:p/prefix``."""
        return f"etcd://{','.join(self.endpoints)}/{prefix}"

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_cluster(
    n: int,
    base_dir: Path,
    *,
    host: str = "127.0.0.1",
    fast: bool = True,
    ready_timeout: float = READY_TIMEOUT,
) -> EtcdCluster:
    """Start ``n`` members (``m0`` ...) with data under ``base_dir``; wait until all are healthy.

    Members start in parallel; a member is healthy once the cluster has a leader.
    """
    if n < 1:
        raise ValueError("a cluster needs at least one member")
    ports = [(free_port(), free_port()) for _ in range(n)]
    initial = ",".join(f"m{i}=http://{host}:{peer}" for i, (_, peer) in enumerate(ports))
    members = [
        EtcdServer(
            base_dir / f"m{i}.etcd",
            name=f"m{i}",
            host=host,
            client_port=client,
            peer_port=peer,
            initial_cluster=initial,
            fast=fast,
            tls=None,
        )
        for i, (client, peer) in enumerate(ports)
    ]
    cluster = EtcdCluster(members)
    try:
        for member in members:
            member.spawn()
        deadline = time.monotonic() + ready_timeout
        for member in members:
            member.wait_ready(max(deadline - time.monotonic(), 0.1))
    except BaseException:
        cluster.stop()
        raise
    return cluster


async def compact(server: EtcdServer, revision: int | None = None) -> int:
    """Compact the history of (plain, auth-less) ``server`` up to ``revision`` (default: now).

    Returns the revision compacted to; watches asking for anything older then
    get ``compact_revision`` from etcd. Uses aetcd, so no ``etcdctl`` is needed.
    """
    client = aetcd.Client(host=server.host, port=server.client_port, timeout=5)
    try:
        await client.connect()
        if revision is None:
            header = (await client.kvstub.Range(rpc.RangeRequest(key=b"\0"), timeout=5)).header
            revision = int(header.revision)
        await client.compact(revision, physical=True)
    finally:
        await client.close()
    return revision
