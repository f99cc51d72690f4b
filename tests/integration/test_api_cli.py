"""The REST API and the CLI against a real `prism serve`: auth, errors, hostile input."""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from prism.haproxy.runtime import RuntimeClient, UnixSocketTransport
from prism.testing.processes import Backend, free_port
from tests.conftest import Server, shop_spec, wait_in_flight, wait_until_up

pytestmark = pytest.mark.haproxy

HOSTILE = [
    "green\nshow map",
    "green;show stat",
    "green<<",
    "gre en",
    "green\\",
    "gr\x00een",
    "grün",
    "g" * 10_000,
]


def snapshot(server: Server) -> tuple[str, str, str]:
    """What HAProxy serves: the live config file, the map file, and `show map` at runtime."""
    import asyncio

    map_path = server.state_dir / "maps" / "shop.weights.map"

    async def show() -> str:
        client = RuntimeClient(UnixSocketTransport(str(server.state_dir / "admin.sock")))
        return repr([(e.key, e.value) for e in await client.show_map(str(map_path))])

    return (
        (server.state_dir / "haproxy.cfg").read_text(),
        map_path.read_text(),
        asyncio.run(show()),
    )


@pytest.fixture
def shop(server: Server, color_backends: dict[str, Backend]) -> dict[str, Any]:
    port = free_port()
    spec = shop_spec(port, color_backends)
    reply = server.api("PUT", "/config", {"spec": spec, "reason": "set up"})
    assert reply.status_code == 200, reply.text
    wait_until_up(server, "shop", ["blue", "green"])
    return spec


def test_token_file_is_private_and_required(server: Server, shop: dict[str, Any]) -> None:
    """The token is owner-only; mutations without it get 401 problem+json, reads don't need it."""
    mode = stat.S_IMODE((server.state_dir / "token").stat().st_mode)
    assert mode == 0o600
    with server.client(auth=False) as anon:
        assert anon.get("/apps/shop").status_code == 200
        reply = anon.post("/apps/shop/release", json={"to": "green"})
        assert reply.status_code == 401
        assert reply.headers["content-type"].startswith("application/problem+json")
        assert "token" in reply.json()["detail"]
        bad = anon.post(
            "/apps/shop/release", json={"to": "green"}, headers={"Authorization": "Bearer nope"}
        )
        assert bad.status_code == 401
    assert server.api("GET", "/apps/shop").json()["active"] == "blue"


def test_openapi_document(server: Server) -> None:
    """OpenAPI 3 is served at /api/v1/openapi.json and lists the release endpoint."""
    doc = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/apps/{app}/release" in doc["paths"]
    assert "/api/v1/config" in doc["paths"]


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:20])
def test_hostile_values_through_api_change_nothing(
    server: Server, shop: dict[str, Any], value: str
) -> None:
    """Hostile names in release, rollback, config and path: 4xx, HAProxy untouched."""
    before = snapshot(server)
    replies = [server.api("POST", "/apps/shop/release", {"to": value})]
    if any(not c.isprintable() or not c.isascii() for c in value) or len(value) > 256:
        # A reason is audit text only, but it too must be one printable line.
        replies.append(server.api("POST", "/apps/shop/release", {"to": "green", "reason": value}))
    for field in ("name", "stable"):
        spec = json.loads(json.dumps(shop))
        spec["apps"][0][field] = value
        replies.append(server.api("PUT", "/config", {"spec": spec}))
    spec = json.loads(json.dumps(shop))
    spec["apps"][0]["colors"][1]["version"] = value
    replies.append(server.api("PUT", "/config", {"spec": spec}))
    spec = json.loads(json.dumps(shop))
    spec["apps"][0]["check"]["path"] = "/" + value
    replies.append(server.api("PUT", "/config", {"spec": spec}))
    if len(value) < 100:
        with server.client() as client:
            path = f"/apps/{quote(value, safe='')}/release"
            replies.append(client.post(path, json={"to": "green"}))
    for reply in replies:
        assert 400 <= reply.status_code < 500, reply.text
        assert reply.headers["content-type"].startswith("application/problem+json")
        assert reply.json()["detail"]
    assert snapshot(server) == before


# An OS argument cannot carry NUL at all; the API and YAML tests cover it.
@pytest.mark.parametrize(
    "value", [v for v in HOSTILE if "\x00" not in v], ids=lambda v: repr(v)[:20]
)
def test_hostile_values_through_cli_change_nothing(
    server: Server, shop: dict[str, Any], value: str
) -> None:
    """Hostile color names on the command line: clear message, exit 2, HAProxy untouched."""
    before = snapshot(server)
    result = server.cli("release", "shop", "--to", value)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ")
    assert "invalid color" in result.stderr or "to: String should have at most" in result.stderr
    assert snapshot(server) == before


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:20])
def test_hostile_values_through_yaml_change_nothing(
    server: Server, shop: dict[str, Any], value: str, tmp_path: Path
) -> None:
    """A prism.yaml with a hostile color name is rejected by `prism apply`; nothing changes."""
    before = snapshot(server)
    spec = json.loads(json.dumps(shop))
    spec["apps"][0]["colors"][2]["name"] = value
    path = tmp_path / "prism.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    result = server.cli("apply", "-f", str(path))
    assert result.returncode == 2, result.stderr
    assert "is not valid" in result.stderr
    assert snapshot(server) == before


def test_invalid_yaml_file_rejected(server: Server, shop: dict[str, Any], tmp_path: Path) -> None:
    """Broken YAML and wrong shapes are reported with the file name; nothing changes."""
    before = snapshot(server)
    bad = tmp_path / "bad.yaml"
    bad.write_text("apps: [ {name: shop\n")
    result = server.cli("apply", "-f", str(bad))
    assert result.returncode == 2
    assert "bad.yaml is not valid YAML" in result.stderr
    bad.write_text("apps: 3\n")
    result = server.cli("apply", "-f", str(bad))
    assert result.returncode == 2
    assert "apps" in result.stderr
    assert f"{bad}: request is not valid" in result.stderr  # the server judged; the file named
    assert snapshot(server) == before


def test_cli_apply_status_release_history_json(
    server: Server, color_backends: dict[str, Backend], tmp_path: Path
) -> None:
    """The CLI flow: apply a YAML file, status, release, rollback, history, each with --json."""
    port = free_port()
    path = tmp_path / "prism.yaml"
    path.write_text(yaml.safe_dump(shop_spec(port, color_backends)))
    result = server.cli("apply", "-f", str(path), "--reason", "first")
    assert result.returncode == 0, result.stderr
    assert "applied revision" in result.stdout
    assert server.cli("apply", "-f", str(path)).stdout.startswith("no changes")
    wait_until_up(server, "shop", ["blue", "green", "red"])

    status = json.loads(server.cli("status", "shop", "--json").stdout)
    assert status["active"] == "blue"
    assert {c["name"] for c in status["colors"]} == {"blue", "green", "red"}
    text = server.cli("status").stdout
    assert "shop" in text
    assert "UP" in text

    result = server.cli("release", "shop", "--to", "green", "--reason", "ship-v2")
    assert result.returncode == 0, result.stderr
    assert "[completed]" in result.stdout
    assert httpx.get(f"http://127.0.0.1:{port}/").json()["color"] == "green"
    result = server.cli("rollback", "shop", "--json")
    assert json.loads(result.stdout)["weights"] == {"blue": 100}
    assert httpx.get(f"http://127.0.0.1:{port}/").json()["color"] == "blue"

    history = json.loads(server.cli("history", "shop", "--json").stdout)
    actions = [h["action"] for h in history]
    assert actions[:5] == [
        "rollback.drained",
        "rollback",
        "release.completed",
        "release.step",
        "release.started",
    ]
    assert history[3]["reason"] == "ship-v2"
    assert history[3]["detail"]["to_weights"] == {"green": 100}
    assert "release.step" in server.cli("history", "shop").stdout
    config = yaml.safe_load(server.cli("config").stdout)
    assert config["apps"][0]["name"] == "shop"

    missing = server.cli("release", "nope", "--to", "green")
    assert missing.returncode == 3
    assert "no app named 'nope'" in missing.stderr


def test_cli_reports_unreachable_server(tmp_path: Path) -> None:
    """With nothing listening, the CLI says how to start Prism and exits 9."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "PRISM_URL": f"http://127.0.0.1:{free_port()}",
        "PRISM_STATE_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "prism", "status"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 9
    assert "cannot reach Prism" in result.stderr
    assert "prism serve" in result.stderr


def test_smoke_check_gates_the_release(server: Server, color_backends: dict[str, Backend]) -> None:
    """A smoke check that the target fails refuses the release; one it passes lets it through."""
    port = free_port()
    spec = shop_spec(port, color_backends, smoke={"path": "/", "expect_body": '"version":"v2"'})
    assert server.api("PUT", "/config", {"spec": spec}).status_code == 200
    wait_until_up(server, "shop", ["blue", "green", "red"])
    refused = server.api("POST", "/apps/shop/release", {"to": "red"})
    assert refused.status_code == 409
    assert "smoke" in refused.json()["detail"]
    assert httpx.get(f"http://127.0.0.1:{port}/").json()["color"] == "blue"
    # The smoke key never reaches the backend, and users without it cannot pick a color.
    forced = httpx.get(f"http://127.0.0.1:{port}/", headers={"X-Prism-Color": "red"})
    assert forced.json()["color"] == "blue"
    done = server.api("POST", "/apps/shop/release", {"to": "green"})
    assert done.status_code == 200, done.text
    assert [s["name"] for s in done.json()["steps"]] == ["health", "smoke", "weight", "drain"]


def test_drain_waits_for_in_flight_requests(
    server: Server, color_backends: dict[str, Backend]
) -> None:
    """A slow request on the old color finishes there; the drain waits for it, bounded."""
    port = free_port()
    spec = shop_spec(port, color_backends)
    assert server.api("PUT", "/config", {"spec": spec}).status_code == 200
    wait_until_up(server, "shop", ["blue", "green"])
    blue = color_backends["blue"].url
    assert httpx.post(f"{blue}/_fault", json={"status": None, "delay_ms": 2500}).status_code == 200
    answers: list[httpx.Response] = []
    slow = threading.Thread(
        target=lambda: answers.append(httpx.get(f"http://127.0.0.1:{port}/slow", timeout=10))
    )
    slow.start()
    wait_in_flight(server, "shop.blue")
    first = server.api("POST", "/apps/shop/release", {"to": "green", "drain_timeout": "300ms"})
    assert first.status_code == 200, first.text
    assert first.json()["phase"] == "completed"
    drain = first.json()["steps"][-1]
    assert drain["name"] == "drain"
    assert not drain["ok"]
    assert "still had 1 connection(s) in use" in drain["message"]
    slow.join(10)
    assert answers[0].status_code == 200
    assert answers[0].json()["color"] == "blue"
    httpx.delete(f"{blue}/_fault")

    slow = threading.Thread(
        target=lambda: answers.append(httpx.get(f"http://127.0.0.1:{port}/slow", timeout=10))
    )
    green = color_backends["green"].url
    assert httpx.post(f"{green}/_fault", json={"status": None, "delay_ms": 1000}).status_code == 200
    slow.start()
    wait_in_flight(server, "shop.green")
    started = time.monotonic()
    second = server.api("POST", "/apps/shop/rollback", {"smoke": False})
    assert second.json()["drain"].endswith("drained: no connection in use"), second.text
    assert time.monotonic() - started >= 0.5
    slow.join(10)
    assert answers[1].json()["color"] == "green"


def test_config_haproxy_rejects_changes_nothing(server: Server, shop: dict[str, Any]) -> None:
    """A spec that validates but that `haproxy -c` refuses (a host that does not resolve) is
    refused with HAProxy's words; nothing is stored and the old config keeps serving."""
    before = snapshot(server)
    revision = server.api("GET", "/config").json()["revision"]
    spec = json.loads(json.dumps(shop))
    spec["apps"][0]["colors"][2]["servers"] = [
        {"name": "s1", "host": "no-such-host.invalid", "port": 8080}
    ]
    reply = server.api("PUT", "/config", {"spec": spec})
    assert reply.status_code == 502, reply.text
    assert reply.json()["title"] == "Configuration rejected"
    assert "no-such-host.invalid" in reply.json()["detail"]
    assert server.api("GET", "/config").json()["revision"] == revision
    assert snapshot(server) == before
    port = int(shop["apps"][0]["bind"].split(":")[1])
    assert httpx.get(f"http://127.0.0.1:{port}/").json()["color"] == "blue"


def test_more_servers_than_file_descriptors_are_refused_before_haproxy(
    tmp_path: Path, color_backends: dict[str, Backend]
) -> None:
    """With 2,048 open files (maxconn 896), HAProxy needs 2 x 896 + 65 + one per server:
    191 servers fit, 200 do not. The spec, and a server add past the limit, are refused
    with the count before HAProxy could refuse to reload, and nothing changes."""
    from tests.conftest import run_server

    base = shop_spec(free_port(), color_backends)

    def with_servers(red: int, green: int = 0) -> dict[str, Any]:
        spec = json.loads(json.dumps(base))
        spec["apps"][0]["colors"][2]["servers"] = [f"127.0.0.1:{9 + n}" for n in range(red)]
        if green:
            extra = [f"127.0.0.1:{300 + n}" for n in range(green)]
            spec["apps"][0]["colors"][1]["servers"] = extra
        return spec

    with run_server(tmp_path / "state", nofile=2048) as small:
        fits = small.api("PUT", "/config", {"spec": with_servers(150, green=40)})
        assert fits.status_code == 200, fits.text  # 191 servers: exactly at the limit
        revision = small.api("GET", "/config").json()["revision"]
        before = snapshot(small)
        reply = small.api("PUT", "/config", {"spec": with_servers(200)})
        assert reply.status_code == 422, reply.text
        assert "file descriptors" in reply.json()["detail"]
        assert reply.json()["limit"] == 2048
        added = small.api("POST", "/apps/shop/colors/red/servers", {"address": "127.0.0.1:999"})
        assert added.status_code == 422, added.text
        assert small.api("GET", "/config").json()["revision"] == revision
        assert snapshot(small) == before


def test_bind_on_a_busy_port_is_refused(server: Server, shop: dict[str, Any]) -> None:
    """A new listener on a port another process holds is refused before anything changes."""
    import socket

    before = snapshot(server)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        spec = json.loads(json.dumps(shop))
        spec["apps"].append({**spec["apps"][0], "name": "cart", "bind": f"127.0.0.1:{busy}"})
        reply = server.api("PUT", "/config", {"spec": spec})
    assert reply.status_code == 422, reply.text
    assert f"cannot listen on 127.0.0.1:{busy}" in reply.json()["detail"]
    assert snapshot(server) == before
