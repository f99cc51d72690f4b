"""TLS termination through a real `prism serve`, its HAProxy and a demo backend: SNI,
ALPN and the HTTP redirect; certificates replaced ten times under `hey` over HTTPS
with no failed request and no reload; bad bundles refused with the old one serving;
expiry in `prism certs` and `prism status`.

One server, one backend and one app serve the whole module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from prism.testing.certs import Leaf, TestCA
from prism.testing.processes import Backend, BackendSpec, ManagedProcess, backends, free_port
from prism.testing.wait import wait_for
from tests.conftest import Server, haproxy_admin, run_server, shop_spec, wait_until_up

pytestmark = pytest.mark.haproxy

CA = TestCA.create()


@dataclass
class Site:
    server: Server
    port: int
    redirect: int
    shop: Path
    other: Path

    def serial(self, sni: str | None = "shop.test") -> str:
        """The serial of the certificate a fresh handshake sees."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=sni) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return format(x509.load_der_x509_certificate(der).serial_number, "X").lstrip("0")

    def worker_pid(self) -> str:
        return re.findall(r"^Pid: (\d+)", haproxy_admin(self.server, "show info"), re.M)[0]


@pytest.fixture(scope="module")
def blue() -> Iterator[Backend]:
    with backends([BackendSpec("blue", "v1")]) as running:
        yield running[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, blue: Backend) -> Iterator[Site]:
    """shop on https://127.0.0.1:PORT with two certificates, a file (shop.test) and a
    directory holding one (other.test), ALPN h2 and http/1.1, and plain HTTP on another
    port redirecting to it."""
    root = tmp_path_factory.mktemp("tls")
    certs = root / "certs"
    (certs / "sites").mkdir(parents=True)
    shop, other = certs / "shop.pem", certs / "sites" / "other.pem"
    shop.write_text(CA.issue(["shop.test"]).bundle)
    other.write_text(CA.issue(["other.test"]).bundle)
    port, redirect = free_port(), free_port()
    tls = {
        "certs": [str(shop), f"{certs}/sites/"],
        "alpn": "h2,http/1.1",
        "redirect_from": redirect,
    }
    with run_server(root / "state") as server:
        spec = shop_spec(port, {"blue": blue}, tls=tls)
        reply = server.api("PUT", "/config", {"spec": spec})
        assert reply.status_code == 200, reply.text
        wait_until_up(server, "shop", ["blue"])
        yield Site(server, port, redirect, shop, other)


def _put(site: Site, pem: str, **extra: str) -> httpx.Response:
    return site.server.api("PUT", "/certificates/shop", {"pem": pem, **extra})


def test_sni_alpn_and_the_redirect(site: Site) -> None:
    """SNI picks the certificate (the first without SNI), h2 is offered, requests reach the
    app over HTTPS, and plain HTTP is sent to the https URL with its path and query."""
    shop_serial, other_serial = site.serial("shop.test"), site.serial("other.test")
    assert shop_serial != other_serial
    assert site.serial(None) == shop_serial
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", site.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="shop.test") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
    reply = httpx.get(f"https://127.0.0.1:{site.port}/", verify=False, timeout=5)
    assert reply.status_code == 200
    assert reply.headers["X-Prism-Color"] == "blue"
    plain = httpx.get(
        f"http://127.0.0.1:{site.redirect}/cart?id=7",
        headers={"Host": f"shop.test:{site.redirect}"},
        timeout=5,
    )
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"https://shop.test:{site.port}/cart?id=7"


@pytest.mark.skipif(shutil.which("hey") is None, reason="needs hey (apt-get install hey)")
def test_ten_rotations_under_https_load_fail_no_request(site: Site) -> None:
    """hey over HTTPS, a new TLS handshake per request, while the certificate is replaced
    ten times (nine through the API, one with the CLI): every request answers 200; after
    each commit a fresh handshake sees the new serial; no reload happens; the file holds
    the last one, and a reload afterwards keeps serving it; no key reached a log, the audit
    log or a state file."""
    worker = site.worker_pid()
    before = len(site.server.api("GET", "/history?limit=1000").json())
    hey = ManagedProcess(
        ["hey", "-z", "60s", "-c", "8", "-disable-keepalive", f"https://127.0.0.1:{site.port}/"],
        name="hey",
    )
    leaves: list[Leaf] = []
    try:
        for n in range(10):
            leaf = CA.issue(["shop.test"])
            leaves.append(leaf)
            if n == 5:
                pem = site.shop.parent / f"new-{n}.pem"
                pem.write_text(leaf.bundle)
                done = site.server.cli("cert", "set", "shop", str(pem), "--file", str(site.shop))
                assert done.returncode == 0, done.stderr
                assert "no reload" in done.stdout
            else:
                reply = _put(site, leaf.bundle)  # picked by name: the file serving shop.test
                assert reply.status_code == 200, reply.text
                assert reply.json()["path"] == str(site.shop)
                assert reply.json()["serial"] == leaf.serial
            assert site.serial("shop.test") == leaf.serial
        assert hey.alive  # every rotation happened under load
        # SIGINT (to hey's own PID) makes hey stop and print its report.
        os.kill(hey.pid, signal.SIGINT)
        wait_for(lambda: not hey.alive, timeout=30, what="hey to print its report")
        report = hey.stderr_text(64 * 1024)
    finally:
        hey.stop()
    statuses = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", report))
    assert statuses.keys() == {"200"}, report
    assert int(statuses["200"]) > 100, report
    print(f"hey over HTTPS through 10 rotations: {statuses['200']} x 200, no error")
    assert "Error distribution" not in report, report
    assert site.worker_pid() == worker  # no reload
    assert site.shop.read_text() == leaves[-1].bundle
    assert oct(site.shop.stat().st_mode & 0o777) == "0o600"
    history = site.server.api("GET", "/history?limit=1000").json()
    rotations = [r for r in history[: len(history) - before] if r["action"] == "cert.set"]
    assert len(rotations) == 10
    assert all("PRIVATE" not in str(r["detail"]) for r in rotations)
    # No private key, of any bundle sent, in the log, the audit log or a state file.
    log = site.server.process.stderr_text(limit=10_000_000)
    secrets = [line for leaf in leaves for line in leaf.key.splitlines()[2:-1]]
    assert len(secrets) >= 10
    files = [
        path.read_bytes()
        for path in site.server.state_dir.rglob("*")
        if path.is_file() and not path.is_socket()
    ]
    for secret in secrets:
        assert secret not in log
        assert secret not in json.dumps(history)
        assert not any(secret.encode() in data for data in files)
    # A reload reads the file: the last certificate still serves.
    spec = site.server.api("GET", "/config").json()["spec"]
    spec["apps"][0]["check"]["inter_ms"] = 300
    assert site.server.api("PUT", "/config", {"spec": spec}).status_code == 200
    assert site.worker_pid() != worker
    assert site.serial("shop.test") == leaves[-1].serial


def test_bad_bundles_are_refused_and_the_old_certificate_keeps_serving(
    site: Site, tmp_path: Path
) -> None:
    """A wrong key, a blank line with a command after it, garbage: 422 (CLI exit 2), the
    file, the serving certificate and the audit log unchanged."""
    serving, on_disk = site.serial("shop.test"), site.shop.read_text()
    records = len(site.server.api("GET", "/history?limit=1000").json())
    leaf, other = CA.issue(["shop.test"]), CA.issue(["shop.test"])
    for pem, why in (
        (leaf.cert + leaf.chain + other.key, "does not belong to the first certificate"),
        (leaf.cert + "\nshow info\n" + leaf.key, "HAProxy's payload would end there"),
        ("garbage", "neither a PEM boundary nor base64"),
    ):
        reply = _put(site, pem)
        assert reply.status_code == 422, reply.text
        assert why in reply.json()["detail"]
    bad = tmp_path / "bad.pem"
    bad.write_text(leaf.cert + leaf.chain + other.key)
    done = site.server.cli("cert", "set", "shop", str(bad))
    assert done.returncode == 2
    assert "does not belong to the first certificate" in done.stderr
    assert site.serial("shop.test") == serving
    assert site.shop.read_text() == on_disk
    assert len(site.server.api("GET", "/history?limit=1000").json()) == records


def test_expiry_shows_in_certs_and_status_with_a_warning(site: Site) -> None:
    """A certificate that lapses in 5 days (a file of the listed directory) is flagged in
    `prism certs` and `prism status`."""
    soon = CA.issue(["other.test"], days=5)
    reply = _put(site, soon.bundle, file=str(site.other))
    assert reply.status_code == 200, reply.text
    listed = site.server.cli("certs")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if str(site.other) in line)
    assert soon.serial in line
    assert re.search(r"WARNING: expires in [45]\.\d days", line), line
    text = site.server.cli("status", "shop")
    assert text.returncode == 0, text.stderr
    assert re.search(rf"tls  {site.other} .*WARNING: expires in", text.stdout), text.stdout
    status = site.server.cli("status", "shop", "--json")
    assert status.returncode == 0, status.stderr
    apps = json.loads(status.stdout)
    app = apps[0] if isinstance(apps, list) else apps
    serving = {s["path"]: s for s in app["tls"]["serving"]}
    assert serving[str(site.other)]["warning"].startswith("expires in")
    assert serving[str(site.shop)]["warning"] is None
    scraped = httpx.get(
        f"{site.server.url}/metrics",
        headers={"Authorization": f"Bearer {site.server.token}"},
        timeout=30,
    )
    assert scraped.status_code == 200, scraped.text
    expiry = re.search(
        rf'prism_tls_cert_expiry_timestamp_seconds{{file="{re.escape(str(site.other))}",'
        r'owner="shop"\} ([0-9.e+]+)',
        scraped.text,
    )
    assert expiry is not None, scraped.text
    days = (float(expiry.group(1)) - time.time()) / 86_400
    assert 4.0 < days <= 5.0, days
