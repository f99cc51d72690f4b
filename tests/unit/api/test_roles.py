"""Named tokens and roles over the real API app: every change checks the caller's role."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.routing import APIRoute

from tests.unit.api.conftest import TOKEN, Api

MUTATING = {"POST", "PUT", "DELETE", "PATCH"}
# What only an admin may do; every other change is an operator's.
ADMIN_ONLY = {
    ("PUT", "/api/v1/config"),
    ("PUT", "/api/v1/certificates/{name}"),
    ("DELETE", "/api/v1/nodes/{node}"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/{name}"),
}
# Logging in and out of the dashboard change nothing: any valid token may.
SESSION = {("POST", "/api/v1/session"), ("DELETE", "/api/v1/session")}
PARAMS = {"app": "shop", "color": "green", "server": "s1", "key": "acme", "node": "lb-1"}


def _mutations(api: Api) -> list[tuple[str, str]]:
    found = []
    for route in api.app.routes:
        if isinstance(route, APIRoute):
            found += [
                (m, route.path)
                for m in sorted(route.methods & MUTATING)
                if (m, route.path) not in SESSION
            ]
    return found


def _url(path: str) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        return PARAMS.get(name, "nobody")

    return re.sub(r"\{([^}]+)\}", fill, path).removeprefix("/api/v1")


async def _token(api: Api, name: str, role: str) -> str:
    answer = await api.change("POST", "/tokens", {"name": name, "role": role})
    assert answer.status_code == 200, answer.text
    secret: str = answer.json()["secret"]
    return secret


async def _as(api: Api, secret: str, method: str, path: str, body: object = None) -> int:
    answer = await api.client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {secret}"}
    )
    return answer.status_code


async def test_the_app_has_mutations_to_check(api: Api) -> None:
    """The enumeration sees every kind of change, so the tests below cover them all."""
    found = set(_mutations(api))
    assert found >= ADMIN_ONLY
    assert ("PUT", "/api/v1/apps/{app}/weights") in found
    assert len(found) >= 15


async def test_a_viewer_is_refused_every_change_and_nothing_changes(api: Api) -> None:
    """403 with a problem naming the role, on every mutating route, before any body is read."""
    viewer = await _token(api, "dash", "viewer")
    before = await api.store.revision()
    audited = len(await api.store.audit(limit=1000))
    for method, path in _mutations(api):
        answer = await api.client.request(
            method, _url(path), json={}, headers={"Authorization": f"Bearer {viewer}"}
        )
        assert answer.status_code == 403, (method, path, answer.text)
        problem = answer.json()
        assert problem["type"].endswith("/forbidden")
        assert "viewer" in problem["detail"]
    assert await api.store.revision() == before
    assert len(await api.store.audit(limit=1000)) == audited


async def test_an_operator_may_steer_but_not_administer(api: Api) -> None:
    """Admin routes answer 403 to an operator; every other change gets past the role check."""
    operator = await _token(api, "ci", "operator")
    for method, path in _mutations(api):
        status = await _as(api, operator, method, _url(path), {})
        if (method, path) in ADMIN_ONLY:
            assert status == 403, (method, path)
        else:
            assert status not in (401, 403), (method, path, status)


async def test_no_token_or_a_wrong_one_is_401_on_every_change(api: Api) -> None:
    """Without a valid credential no change is even considered."""
    before = await api.store.revision()
    for method, path in _mutations(api):
        bare = await api.client.request(method, _url(path), json={})
        assert bare.status_code == 401, (method, path)
        assert bare.headers["WWW-Authenticate"] == "Bearer"
        wrong = await _as(api, "prism_" + "x" * 43, method, _url(path), {})
        assert wrong == 401, (method, path)
    assert await api.store.revision() == before


async def test_token_lifecycle_create_use_list_revoke(api: Api) -> None:
    """A made token acts under its name; listing never shows a secret; revoked, it is 401."""
    secret = await _token(api, "ci", "operator")
    assert re.fullmatch(r"prism_[A-Za-z0-9_-]{43}", secret)
    shift = {"weights": {"blue": 90, "green": 10}, "reason": "canary by ci"}
    assert await _as(api, secret, "PUT", "/apps/shop/weights", shift) == 200
    (record,) = await api.store.audit(app="shop", limit=1)
    assert record.actor == "ci"
    who = await api.client.get("/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert who.json() == {"name": "ci", "role": "operator"}

    listed = await api.change("GET", "/tokens")
    assert [(t["name"], t["role"]) for t in listed.json()] == [("ci", "operator")]
    assert secret not in listed.text
    stored = await api.store.list("tokens/")
    assert len(stored) == 1
    assert secret not in stored[0].value
    assert len(json.loads(stored[0].value)["digest"]) == 64

    revoked = await api.change("DELETE", "/tokens/ci")
    assert revoked.json() == {"revoked": "ci", "role": "operator"}
    assert await _as(api, secret, "PUT", "/apps/shop/weights", shift) == 401
    actions = [r.action for r in await api.store.audit(limit=100)]
    assert actions[0] == "token.revoked"
    assert "token.created" in actions


async def test_the_state_directory_token_is_admin(api: Api) -> None:
    """The token made on first start keeps working, as admin, acting as before."""
    who = await api.client.get("/whoami", headers={"Authorization": f"Bearer {TOKEN}"})
    assert who.json() == {"name": "admin", "role": "admin"}
    answer = await api.change("PUT", "/apps/shop/weights", {"weights": {"blue": 50, "green": 50}})
    assert answer.status_code == 200
    (record,) = await api.store.audit(app="shop", limit=1)
    assert record.actor == "api"


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"name": "ci", "role": "root"}, 422, "role"),
        ({"name": "Bad Name", "role": "viewer"}, 422, "name"),
        ({"name": "admin", "role": "viewer"}, 409, "state directory"),
    ],
)
async def test_bad_token_requests_are_refused(
    api: Api, body: dict[str, str], status: int, says: str
) -> None:
    """A bad name or role, or the reserved name, makes no token."""
    answer = await api.change("POST", "/tokens", body)
    assert answer.status_code == status
    assert says in answer.text
    assert await api.store.list("tokens/") == []


async def test_a_second_token_of_the_same_name_is_refused(api: Api) -> None:
    """Names are unique: the first token stays and its secret keeps working."""
    first = await _token(api, "ci", "viewer")
    again = await api.change("POST", "/tokens", {"name": "ci", "role": "admin"})
    assert again.status_code == 409
    assert "exists already" in again.json()["detail"]
    who = await api.client.get("/whoami", headers={"Authorization": f"Bearer {first}"})
    assert who.json()["role"] == "viewer"


async def test_a_named_secret_out_of_place_is_refused(api: Api) -> None:
    """A named token's secret in a reason (body) never reaches the audit log."""
    secret = await _token(api, "ci", "operator")
    answer = await api.change(
        "PUT", "/apps/shop/weights", {"weights": {"blue": 50, "green": 50}, "reason": secret}
    )
    assert answer.status_code == 422
    assert all(secret not in (r.reason or "") for r in await api.store.audit(limit=100))


async def test_unknown_token_for_revoke_is_404(api: Api) -> None:
    """Revoking a name that does not exist says so."""
    answer = await api.change("DELETE", "/tokens/nobody")
    assert answer.status_code == 404
    assert "nobody" in answer.json()["detail"]
