"""Every request the API refuses changes nothing: not the store, the files, or HAProxy.

A battery of hostile and invalid requests against every mutating endpoint of a
real `prism serve`; before and after, the desired and applied revisions, the
bytes of haproxy.cfg and every map file, and `show map` of every map through
the admin socket must be identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prism.testing.processes import Backend, free_port
from tests.conftest import Server, haproxy_admin, run_server, shop_spec, wait_until_up

pytestmark = pytest.mark.haproxy

WRONG_TOKEN = "not-the-token-0000000000000000000000000000"


def snapshot(server: Server) -> dict[str, Any]:
    """Revisions, the config and map files byte for byte, and every map as HAProxy holds it."""
    health = server.api("GET", "/health").json()
    maps = sorted((server.state_dir / "maps").glob("*"))
    return {
        "revisions": (health["desired_revision"], health["applied_revision"]),
        "config": (server.state_dir / "haproxy.cfg").read_bytes(),
        "files": {p.name: p.read_bytes() for p in maps},
        "runtime": {p.name: haproxy_admin(server, f"show map {p}") for p in maps},
    }


@pytest.fixture
def server(state_dir: Path) -> Iterator[Server]:
    """A real `prism serve` whose rate limit is out of the way: the battery tests refusals
    other than 429 (a test below has its own server for those)."""
    with run_server(state_dir, "--rate-limit", "off") as running:
        yield running


@pytest.fixture
def shop(server: Server, color_backends: dict[str, Backend]) -> dict[str, Any]:
    spec = shop_spec(
        free_port(),
        color_backends,
        pins=[{"name": "tenant", "source": "header", "key": "X-Tenant"}],
    )
    reply = server.api("PUT", "/config", {"spec": spec, "reason": "set up"})
    assert reply.status_code == 200, reply.text
    wait_until_up(server, "shop", ["blue", "green", "red"])
    assert server.api("PUT", "/apps/shop/pins/acme", {"color": "green"}).status_code == 200
    return spec


def hostile_requests(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, httpx keyword arguments) of requests the API must refuse."""
    bad_spec = json.loads(json.dumps(spec))
    bad_spec["apps"][0]["stable"] = "purple"  # not one of its colors
    port_clash = json.loads(json.dumps(spec))
    port_clash["apps"].append({**spec["apps"][0], "name": "cart"})  # the same bind
    too_many = {"apps": [{**spec["apps"][0], "name": f"a{n}"} for n in range(2001)]}
    mutations = [
        ("PUT", "/config", {"spec": spec}),
        ("POST", "/apps/shop/release", {"to": "green"}),
        ("POST", "/apps/shop/rollback", {}),
        ("POST", "/apps/shop/releases", {"plan": {"to": "green", "steps": [{"weight": 10}]}}),
        ("POST", "/apps/shop/releases/promote", {}),
        ("POST", "/apps/shop/releases/pause", {}),
        ("POST", "/apps/shop/releases/resume", {}),
        ("POST", "/apps/shop/releases/abort", {}),
        ("PUT", "/apps/shop/weights", {"weights": {"blue": 50, "green": 50}}),
        ("PUT", "/apps/shop/pins/globex", {"color": "red"}),
        ("DELETE", "/apps/shop/pins/acme", None),
        ("POST", "/apps/shop/colors/red/servers", {"address": "127.0.0.1:9"}),
        ("DELETE", "/apps/shop/colors/blue/servers/s1", None),
        ("DELETE", "/nodes/lb-1", None),
        ("PUT", "/certificates/shop", {"pem": "garbage"}),
    ]
    for method, path, body in mutations:
        # no token, a wrong one, a token in the URL, and a real one in the wrong place
        yield method, path, {"json": body, "headers": {"Authorization": ""}}
        yield method, path, {"json": body, "headers": {"Authorization": f"Bearer {WRONG_TOKEN}"}}
        yield method, f"{path}?token={WRONG_TOKEN}", {"json": body}
        yield method, path, {"json": body, "headers": {"Authorization": f"Basic {WRONG_TOKEN}"}}
        # hostile path segments
        for name in ("shop;show map", "shop%0ashow%20stat", "SHOP", "-x", "s" * 40):
            if "shop" in path:
                yield method, path.replace("shop", name, 1), {"json": body}
        if body is not None:
            yield method, path, {"content": b"{not json", "headers": _json}
            yield method, path, {"content": json.dumps(body).encode(), "headers": _text}
            yield method, path, {"json": [body]}
            yield method, path, {"json": {**body, "unexpected": 1}}
            yield method, path, {"json": {**body, "reason": "line\nbreak"}}
            yield method, path, {"json": {**body, "reason": "r" * 257}}
            limit = (10 if path == "/config" else 1) * 1024 * 1024
            yield method, path, {"content": b" " * (limit + 1), "headers": _json}
            yield method, path, {"content": _chunks(limit + 1), "headers": _json}
        yield method, path, {"json": body, "headers": {"X-Prism-Actor": "bad actor;"}}
        yield method, path, {"json": body, "headers": {"X-Big": "h" * 20_000}}
    # bodies that are well formed but wrong
    for body in (
        {"spec": bad_spec},
        {"spec": port_clash},
        {"spec": too_many},
        {"spec": {"apps": [{**spec["apps"][0], "colors": []}]}},
        {"spec": spec, "reason": "\x00"},
        {"spec": {**spec, "listeners": [{"name": "edge", "bind": "no-such-host.invalid:1844"}]}},
        # a certificate file that is not there, and one that is not a certificate
        {"spec": {"apps": [{**spec["apps"][0], "tls": {"certs": ["/nonexistent/shop.pem"]}}]}},
        {"spec": {"apps": [{**spec["apps"][0], "tls": {"certs": ["/etc/hostname"]}}]}},
        {"spec": {"apps": [{**spec["apps"][0], "tls": {"certs": ["/etc/../shadow"]}}]}},
    ):
        yield "PUT", "/config", {"json": body}
    for weights in (
        {"blue": 50},
        {"blue": 50, "green": 51},
        {"blue": 100.0},
        {"blue": "100"},
        {"purple": 100},
        {"blue": -1, "green": 101},
        {f"c{n}": 1 for n in range(40)},
    ):
        yield "PUT", "/apps/shop/weights", {"json": {"weights": weights}}
    for plan in (
        {"to": "green", "steps": [{"weight": 50}, {"weight": 10}]},
        {"to": "green", "steps": [{"pause": "30s"}]},
        {"to": "green", "steps": [{"weight": 101}]},
        {"to": "purple"},
        {"to": "green", "steps": [{"weight": 5}], "webhooks": [{"url": "ftp://x"}]},
    ):
        yield "POST", "/apps/shop/releases", {"json": {"plan": plan}}
    yield "POST", "/apps/shop/release", {"json": {"to": "purple"}}
    yield "POST", "/apps/shop/release", {"json": {"to": "green", "smoke": "yes"}}
    yield "POST", "/apps/shop/release", {"json": {"to": "green", "drain_timeout": "soon"}}
    yield "POST", "/apps/shop/rollback", {"json": {}}  # no previous weights yet
    yield "POST", "/apps/shop/releases/promote", {"json": {}}  # no release running
    yield "PUT", "/apps/shop/pins/acme", {"json": {"color": "purple"}}
    yield "PUT", "/apps/shop/pins/acme", {"json": {"color": "red", "rule": "nope"}}
    yield "PUT", "/apps/shop/pins/a%20b", {"json": {"color": "red"}}
    yield "DELETE", "/apps/shop/pins/nobody", {}
    yield "POST", "/apps/shop/colors/red/servers", {"json": {"address": "127.0.0.1:0"}}
    yield "POST", "/apps/shop/colors/red/servers", {"json": {"address": "::1:80"}}
    yield "POST", "/apps/shop/colors/red/servers", {"json": {"address": "a:1", "name": "s1"}}
    yield "POST", "/apps/shop/colors/purple/servers", {"json": {"address": "127.0.0.1:9"}}
    yield "DELETE", "/apps/shop/colors/blue/servers/nope", {}
    yield "PUT", "/certificates/nope", {"json": {"pem": "x"}}
    yield "PUT", "/certificates/shop", {"json": {"pem": "", "file": "relative.pem"}}
    yield "PUT", "/certificates/shop", {"json": {"pem": "-----BEGIN CERTIFICATE-----\n\nshow info"}}
    for method in ("PATCH", "TRACE"):
        yield method, "/config", {}
        yield method, "/apps/shop/weights", {}


def _chunks(size: int) -> Iterator[bytes]:
    """``size`` bytes of body sent chunked, with no Content-Length to refuse them by."""
    while size > 0:
        yield b" " * min(size, 65536)
        size -= 65536


_json = {"Content-Type": "application/json"}
_text = {"Content-Type": "text/plain"}


def test_every_refused_request_changes_nothing(server: Server, shop: dict[str, Any]) -> None:
    """Hundreds of refused requests: each a 4xx problem with a detail; afterwards the store
    revision, haproxy.cfg, the map files and HAProxy's maps are byte for byte the same."""
    before = snapshot(server)
    seen: dict[int, int] = {}
    with httpx.Client(
        base_url=f"{server.url}/api/v1",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    ) as client:
        for method, path, kwargs in hostile_requests(shop):
            reply = client.request(method, path, **kwargs)
            assert 400 <= reply.status_code < 500, (method, path, reply.status_code, reply.text)
            assert reply.headers["content-type"] == "application/problem+json", (method, path)
            problem = reply.json()
            assert problem["type"].startswith("https://prism.dev/problems/"), problem
            assert problem["detail"], problem
            assert reply.headers["x-request-id"]
            seen[reply.status_code] = seen.get(reply.status_code, 0) + 1
    assert {401, 404, 405, 409, 413, 415, 422, 431} <= set(seen), seen
    assert snapshot(server) == before


def test_changes_past_the_rate_limit_change_nothing(
    tmp_path: Path, color_backends: dict[str, Backend]
) -> None:
    """With one change a minute, the second valid change is refused with 429 and
    Retry-After, and leaves the store, the files and HAProxy as they were."""
    with run_server(tmp_path / "state", "--rate-limit", "1/m", "--rate-burst", "1") as server:
        spec = shop_spec(free_port(), color_backends)
        assert server.api("PUT", "/config", {"spec": spec}).status_code == 200
        wait_until_up(server, "shop", ["blue", "green"])
        before = snapshot(server)
        reply = server.api("PUT", "/apps/shop/weights", {"weights": {"blue": 50, "green": 50}})
        assert reply.status_code == 429, reply.text
        assert 1 <= int(reply.headers["retry-after"]) <= 60
        assert reply.json()["type"] == "https://prism.dev/problems/rate-limited"
        assert server.api("GET", "/apps/shop").status_code == 200  # reads are not limited
        assert snapshot(server) == before
        result = server.cli("shift", "shop", "blue=50", "green=50")
        assert result.returncode == 10, result.stderr
        assert "too many changes" in result.stderr
