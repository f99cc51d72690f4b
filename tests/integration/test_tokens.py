"""Named tokens through the CLI against a real `prism serve`: create, use, list, revoke."""

from __future__ import annotations

from typing import Any

import pytest

from prism.testing.processes import Backend, free_port
from tests.conftest import Server, shop_spec, wait_until_up

pytestmark = pytest.mark.haproxy


@pytest.fixture
def shop(server: Server, color_backends: dict[str, Backend]) -> dict[str, Any]:
    spec = shop_spec(free_port(), color_backends)
    reply = server.api("PUT", "/config", {"spec": spec, "reason": "set up"})
    assert reply.status_code == 200, reply.text
    wait_until_up(server, "shop", ["blue", "green"])
    return spec


def test_token_lifecycle_through_the_cli(server: Server, shop: dict[str, Any]) -> None:
    """An operator token shifts (audited under its name), a viewer's is 403, revoked is 401."""
    made = server.cli("token", "create", "--name", "ci", "--role", "operator")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("prism_")
    assert "shown only now" in made.stderr
    viewer = server.cli("token", "create", "--name", "dash", "--role", "viewer").stdout.strip()

    listed = server.cli("token", "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]] == [
        ["ci", "operator"],
        ["dash", "viewer"],
    ]
    assert secret not in listed.stdout
    # only digests are kept: the secret is nowhere in the state directory
    for path in server.state_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path

    shifted = server.cli("--token", secret, "shift", "shop", "blue=90", "green=10")
    assert shifted.returncode == 0, shifted.stderr
    (latest,) = server.api("GET", "/apps/shop/history?limit=1").json()
    assert latest["actor"].startswith("ci:")  # the token, then who ran the CLI

    refused = server.cli("--token", viewer, "shift", "shop", "blue=50", "green=50")
    assert refused.returncode == 6
    assert "viewer" in refused.stderr
    operator_admin = server.cli(
        "--token", secret, "token", "create", "--name", "x", "--role", "admin"
    )
    assert operator_admin.returncode == 6
    assert "needs admin" in operator_admin.stderr

    revoked = server.cli("token", "revoke", "ci")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked token ci" in revoked.stdout
    after = server.cli("--token", secret, "shift", "shop", "blue=50", "green=50")
    assert after.returncode == 6
    assert "bearer token" in after.stderr
    weights = server.api("GET", "/apps/shop").json()["weights"]
    assert weights == {"blue": 90, "green": 10}
