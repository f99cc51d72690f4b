"""A real DNS server serving SRV records, for discovery tests: dnsmasq on a loopback port.

dnsmasq re-reads hosts files on SIGHUP but not its ``srv-host`` lines, so a
change of records is a restart on the same port (:meth:`DnsServer.serve`)::

    with start_dnsmasq(tmp_path, {"_http._tcp.blue.shop.service.consul": [("127.0.0.1", 9001)]})
        as dns:
        dns.serve({"_http._tcp.blue.shop.service.consul": []})   # the record now empty

The process is stopped by its PID. Readiness is an answered query, polled
against a deadline.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from prism.errors import PrismError
from prism.testing.processes import ManagedProcess, free_port

__all__ = ["DnsServer", "Records", "srv_answers", "start_dnsmasq"]

#: SRV record name -> its targets as (address, port)
Records = Mapping[str, Sequence[tuple[str, int]]]

_READY = 10.0
_SRV = 33


def _binary() -> str:
    found = shutil.which("dnsmasq")
    if found is None:
        raise PrismError(
            "dnsmasq is not installed",
            hint="apt-get install -y dnsmasq-base (it starts no daemon; tests start their own)",
        )
    return found


def _query(name: str, qtype: int) -> tuple[int, bytes]:
    ident = secrets.randbits(16)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return ident, struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + struct.pack(
        "!HH", qtype, 1
    )


def srv_answers(port: int, name: str, *, timeout: float = 1.0) -> int | None:
    """How many answers 127.0.0.1:``port`` gives for the SRV ``name``; None if it is silent."""
    ident, packet = _query(name, _SRV)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(packet, ("127.0.0.1", port))
            reply, _ = sock.recvfrom(4096)
        except OSError:
            return None
    if len(reply) < 12 or struct.unpack("!H", reply[:2])[0] != ident:
        return None
    return int(struct.unpack("!H", reply[6:8])[0])


class DnsServer:
    """dnsmasq answering SRV records on 127.0.0.1:``port``; see the module docstring."""

    def __init__(self, root: Path, records: Records, *, port: int | None = None) -> None:
        self.root = root
        self.port = port or _free_udp_port()
        self.process: ManagedProcess | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.serve(records)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as a discovery's ``resolvers`` entry."""
        return f"127.0.0.1:{self.port}"

    def serve(self, records: Records) -> None:
        """Answer with ``records`` from now on (a restart on the same port)."""
        self.stop()
        lines = [
            "no-resolv",
            "no-hosts",
            f"port={self.port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "cache-size=0",
            "local-ttl=0",
        ]
        probe = "_ready._tcp.prism.test"
        lines.append(f"srv-host={probe},ready.prism.test,1,1,1")
        for name, targets in sorted(records.items()):
            for index, (address, port) in enumerate(targets, start=1):
                host = f"t{index}-{port}.{name.lstrip('_').replace('._', '-')}"
                lines.append(f"host-record={host},{address}")
                lines.append(f"srv-host={name},{host},{port},1,10")
        config = self.root / "dnsmasq.conf"
        config.write_text("\n".join(lines) + "\n")
        self.process = ManagedProcess(
            [_binary(), f"--conf-file={config}", "--no-daemon", "--log-facility=-"],
            name="dnsmasq",
        )
        deadline = time.monotonic() + _READY
        while srv_answers(self.port, probe, timeout=0.2) != 1:
            if not self.process.alive:
                raise PrismError(f"dnsmasq exited: {self.process.stderr_text()}")
            if time.monotonic() > deadline:
                raise PrismError(f"dnsmasq did not answer on {self.address}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_dnsmasq(root: Path, records: Records) -> DnsServer:
    """A dnsmasq serving ``records`` on a free loopback port; stop it (or ``with`` it)."""
    return DnsServer(root, records)


def _free_udp_port() -> int:
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
