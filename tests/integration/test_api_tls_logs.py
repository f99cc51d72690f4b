"""The API over TLS, the refusal of plain HTTP off loopback, and JSON logs without secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from prism.testing.etcd import make_test_tls
from prism.testing.processes import Backend, free_port
from tests.conftest import run_server, shop_spec, wait_until_up

pytestmark = pytest.mark.haproxy


def _prism(
    *args: str, state_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "prism", "--state-dir", str(state_dir), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_api_over_tls_with_hsts_and_a_verifying_cli(tmp_path: Path) -> None:
    """--tls-cert/--tls-key: HTTPS with HSTS on every answer; the CLI works with --cacert
    (or PRISM_CACERT) and, without it, refuses the unknown certificate with a clear message
    and the Unavailable exit code; plain HTTP to the port gets nothing."""
    certs = make_test_tls(tmp_path / "certs")
    state = tmp_path / "state"
    extra = ("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key))
    with run_server(state, *extra, cacert=certs.ca) as server:
        assert server.url.startswith("https://")
        with server.client() as client:
            for reply in (client.get("/health"), client.get("/apps/nope")):
                assert reply.headers["strict-transport-security"] == "max-age=31536000"
        assert json.loads((state / "server.json").read_text())["url"] == server.url

        trusted = server.cli("--cacert", str(certs.ca), "health")
        assert trusted.returncode == 0, trusted.stderr
        assert "HAProxy" in trusted.stdout
        by_env = _prism(
            *("--url", server.url, "--token", server.token, "health"),
            state_dir=tmp_path / "elsewhere",
            env={"PRISM_CACERT": str(certs.ca)},
        )
        assert by_env.returncode == 0, by_env.stderr

        untrusted = server.cli("health")
        assert untrusted.returncode == 9, untrusted.stderr
        assert "TLS certificate is not trusted" in untrusted.stderr
        assert "--cacert" in untrusted.stderr

        with pytest.raises(httpx.HTTPError, match=r"(?i)disconnect|reset|closed|protocol"):
            httpx.get(server.url.replace("https://", "http://") + "/api/v1/health", timeout=5)


def test_plain_http_off_loopback_is_refused_unless_insecure_bind(tmp_path: Path) -> None:
    """`prism serve --host 0.0.0.0` without TLS exits with InvalidInput's code (2) and says
    what to do, before it starts anything; so does a certificate without its key."""
    refused = _prism(
        *("serve", "--host", "0.0.0.0", "--port", str(free_port())), state_dir=tmp_path / "state"
    )
    assert refused.returncode == 2, refused.stderr
    assert "refusing to serve the API without TLS on 0.0.0.0" in refused.stderr
    assert "--insecure-bind" in refused.stderr
    assert not (tmp_path / "state" / "haproxy.cfg").exists()
    certs = make_test_tls(tmp_path / "certs")
    half = _prism("serve", "--tls-cert", str(certs.server_cert), state_dir=tmp_path / "s2")
    assert half.returncode == 2
    assert "--tls-cert and --tls-key go together" in half.stderr


def test_json_logs_carry_request_ids_and_never_a_token(
    tmp_path: Path, color_backends: dict[str, Backend]
) -> None:
    """--log-format json: every line is one JSON object; each request has an access line
    with its id, method, path, status and duration, and the id is in the audit record of
    its change. Neither the token nor a wrong one (sent as a bearer token, in a query
    string, in a header or a body) appears in the log, an audit record or any state file."""
    wrong = "wrong-token-NOT-REAL-00000000000000000000000"
    state = tmp_path / "state"
    with run_server(state, "--log-format", "json") as server:
        spec = shop_spec(free_port(), color_backends)
        with server.client() as client:
            assert client.put("/config", json={"spec": spec}).status_code == 200
            wait_until_up(server, "shop", ["blue", "green"])
            shifted = client.put(
                "/apps/shop/weights",
                json={"weights": {"blue": 60, "green": 40}, "reason": "scan"},
                headers={"X-Request-Id": "scan-req-1"},
            )
            assert shifted.status_code == 200, shifted.text
            assert client.get(f"/apps?token={server.token}").status_code == 422
            assert client.get(f"/apps?access_token={wrong}").status_code == 422
            assert client.get(f"/apps/shop?token={wrong}").status_code == 422
            body = {"weights": {"blue": 100}, "reason": server.token}
            assert client.put("/apps/shop/weights", json=body).status_code == 422
            actor = {"X-Prism-Actor": server.token}
            assert client.put("/apps/shop/weights", json=body, headers=actor).status_code == 422
            history = client.get("/history?limit=10000").json()
        with server.client(auth=False) as anon:
            bad = anon.put(
                "/apps/shop/weights",
                json={"weights": {"blue": 100}},
                headers={"Authorization": f"Bearer {wrong}"},
            )
            assert bad.status_code == 401
        assert server.cli("--token", wrong, "shift", "shop", "blue=100").returncode == 6
        log = server.process.stderr_text(limit=10_000_000)

    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
    access = [line for line in lines if line["logger"] == "prism.api.access"]
    assert {"request_id", "method", "path", "status", "duration_ms"} <= set(access[0])
    (mine,) = [line for line in access if line["request_id"] == "scan-req-1"]
    assert (mine["method"], mine["path"], mine["status"]) == (
        "PUT",
        "/api/v1/apps/shop/weights",
        200,
    )
    assert not any("?" in line["path"] for line in access)
    (shift,) = [r for r in history if r["action"] == "shift"]
    assert shift["request_id"] == "scan-req-1"

    for secret in (server.token, wrong):
        assert secret not in log
        assert secret not in json.dumps(history)
        for path in state.rglob("*"):
            if path.is_file() and path.name != "token" and not path.is_socket():
                assert secret.encode() not in path.read_bytes(), path
