"""The dashboard's page, assets and login sessions over the real API app."""

from __future__ import annotations

import pytest

from tests.unit.api.conftest import TOKEN, Api

SHIFT = {"weights": {"blue": 80, "green": 20}, "reason": "from the dashboard"}


async def _login(api: Api, token: str) -> str:
    answer = await api.client.post("/session", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    csrf: str = answer.json()["csrf"]
    return csrf


async def _token(api: Api, name: str, role: str) -> str:
    made = await api.change("POST", "/tokens", {"name": name, "role": role})
    secret: str = made.json()["secret"]
    return secret


async def test_the_page_and_its_assets_come_from_the_package(api: Api) -> None:
    """One page, its script and style, all local; a CSP that allows nothing else."""
    page = await api.client.get("http://prism.test/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "http" not in page.text.replace("http-equiv", "")
    for name, kind in (("app.js", "javascript"), ("app.css", "css")):
        asset = await api.client.get(f"http://prism.test/assets/{name}")
        assert asset.status_code == 200
        assert kind in asset.headers["content-type"]
        assert "https://" not in asset.text
    script = (await api.client.get("http://prism.test/assets/app.js")).text
    assert "innerHTML" not in script


@pytest.mark.parametrize("name", ["../app.py", "nope.js", "app.py", "APP.js"])
async def test_only_the_shipped_assets_are_served(api: Api, name: str) -> None:
    """Nothing else of the package can be read through the asset route."""
    answer = await api.client.get(f"http://prism.test/assets/{name}")
    assert answer.status_code in (404, 422)


async def test_login_sets_an_httponly_strict_cookie_and_never_echoes_the_token(api: Api) -> None:
    """The session cookie is HttpOnly and SameSite=Strict; the CSRF cookie is readable."""
    answer = await api.client.post("/session", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert answer.json()["role"] == "admin"
    assert TOKEN not in answer.text
    cookies = answer.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("prism_session="))
    assert "HttpOnly" in session
    assert "SameSite=strict" in session
    assert TOKEN not in session
    csrf = next(c for c in cookies if c.startswith("prism_csrf="))
    assert "HttpOnly" not in csrf


async def test_a_bad_token_opens_no_session(api: Api) -> None:
    """401, and no cookie."""
    answer = await api.client.post("/session", headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401
    assert "set-cookie" not in answer.headers
    assert (await api.client.get("/dashboard")).status_code == 401


async def test_a_session_change_needs_the_csrf_header(api: Api) -> None:
    """Without X-Prism-CSRF (what another site's form would send) it is 403; with it, done."""
    secret = await _token(api, "ops", "operator")
    csrf = await _login(api, secret)
    before = await api.store.revision()
    forged = await api.client.put("/apps/shop/weights", json=SHIFT)
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["detail"]
    wrong = await api.client.put("/apps/shop/weights", json=SHIFT, headers={"X-Prism-CSRF": "x"})
    assert wrong.status_code == 403
    assert await api.store.revision() == before
    done = await api.client.put("/apps/shop/weights", json=SHIFT, headers={"X-Prism-CSRF": csrf})
    assert done.status_code == 200, done.text
    (record,) = await api.store.audit(app="shop", limit=1)
    assert record.actor == "ops"


async def test_a_viewer_session_reads_but_may_not_change(api: Api) -> None:
    """The dashboard's state is there for a viewer; a change is 403."""
    secret = await _token(api, "dash", "viewer")
    csrf = await _login(api, secret)
    state = await api.client.get("/dashboard")
    assert state.status_code == 200
    body = state.json()
    assert body["me"] == {"name": "dash", "role": "viewer"}
    assert [a["name"] for a in body["apps"]] == ["shop"]
    assert set(body["series"]["shop"]) == {"blue", "green", "red"}
    refused = await api.client.put("/apps/shop/weights", json=SHIFT, headers={"X-Prism-CSRF": csrf})
    assert refused.status_code == 403


async def test_revoking_the_token_ends_its_sessions_and_logout_ends_one(api: Api) -> None:
    """A session is only as good as its token, checked on every request."""
    secret = await _token(api, "ops", "operator")
    await _login(api, secret)
    assert (await api.client.get("/dashboard")).status_code == 200
    await api.change("DELETE", "/tokens/ops")
    assert (await api.client.get("/dashboard")).status_code == 401
    await _login(api, TOKEN)
    assert (await api.client.get("/dashboard")).status_code == 200
    kept = api.client.cookies["prism_session"]
    out = await api.client.delete("/session")
    assert out.status_code == 204
    # the old cookie, sent again, opens nothing: the session ended on the server
    api.client.cookies.set("prism_session", kept)
    replayed = await api.client.get("/dashboard")
    assert replayed.status_code == 401
