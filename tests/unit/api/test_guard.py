"""The request guard, auth and bodies: limits, ids, rate, strictness; refused means unchanged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from prism import errors
from prism.api.guard import ApiLimits
from prism.api.ratelimit import RateLimit
from tests.unit.api.conftest import TOKEN, Api

SHIFT = {"weights": {"blue": 50, "green": 50}}


async def test_request_id_is_echoed_generated_and_audited(api: Api) -> None:
    """A valid X-Request-Id is echoed and kept in the change's audit record; an invalid
    one is replaced by a fresh id."""
    reply = await api.change("PUT", "/apps/shop/weights", SHIFT, headers={"X-Request-Id": "r-42"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-request-id"] == "r-42"
    (record,) = await api.store.audit(app="shop", limit=1)
    assert (record.action, record.request_id) == ("shift", "r-42")
    history = (await api.client.get("/apps/shop/history?limit=1")).json()
    assert history[0]["request_id"] == "r-42"
    odd = await api.client.get("/health", headers={"X-Request-Id": "no spaces allowed"})
    assert odd.headers["x-request-id"] != "no spaces allowed"
    assert len(odd.headers["x-request-id"]) == 32


async def test_a_body_over_its_limit_is_refused_before_any_handler(
    make_api: Callable[..., Any],
) -> None:
    """Past max_body: 413 naming the limit, nothing stored; PUT /config has its own limit."""
    api: Api = await make_api(limits=ApiLimits(max_body=100, max_config_body=100_000))
    revision = await api.store.revision()
    big = {"weights": {"blue": 50, "green": 50}, "reason": "x" * 200}
    reply = await api.change("PUT", "/apps/shop/weights", big)
    assert reply.status_code == 413
    assert reply.json()["type"] == errors.TooLarge.type_uri
    assert reply.json()["limit"] == 100
    assert await api.store.revision() == revision
    config = (await api.client.get("/config")).json()
    applied = await api.change("PUT", "/config", {"spec": config["spec"], "reason": "x" * 200})
    assert applied.status_code == 200, applied.text


async def test_declared_length_over_the_limit_is_refused_unread(
    make_api: Callable[..., Any],
) -> None:
    """A Content-Length past the limit is answered 413 without reading the body."""
    api: Api = await make_api(limits=ApiLimits(max_body=100))
    app = api.client._transport.app  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = _scope("PUT", "/api/v1/apps/shop/weights", [(b"content-length", b"5000")])
    await app(scope, receive, send)
    assert sent[0]["status"] == 413


async def test_a_body_too_slow_to_arrive_is_refused(make_api: Callable[..., Any]) -> None:
    """A client that stops sending mid-body gets 408 once body_timeout passes."""
    api: Api = await make_api(limits=ApiLimits(body_timeout=0.2))
    app = api.client._transport.app  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []
    parts = [{"type": "http.request", "body": b'{"weights":', "more_body": True}]

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop()
        await asyncio.Event().wait()  # never sends the rest
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    revision = await api.store.revision()
    await asyncio.wait_for(app(_scope("PUT", "/api/v1/apps/shop/weights"), receive, send), 5)
    assert sent[0]["status"] == 408
    assert errors.RequestTimeout.type_uri.encode() in sent[1]["body"]
    assert await api.store.revision() == revision


async def test_headers_over_their_limit_are_refused(make_api: Callable[..., Any]) -> None:
    """More header bytes than max_headers: 431."""
    api: Api = await make_api(limits=ApiLimits(max_headers=2048))
    reply = await api.client.get("/health", headers={"X-Big": "a" * 4096})
    assert reply.status_code == 431
    assert reply.json()["type"] == errors.HeadersTooLarge.type_uri


async def test_credentials_in_a_url_are_refused_and_never_logged(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """The token in the query or the path, or a token-like parameter: 422, and no log line
    holds the token."""
    caplog.set_level(logging.INFO, logger="prism")
    for url in (f"/apps?token={TOKEN}", f"/apps/{TOKEN}", "/apps?access_token=abc"):
        reply = await api.client.get(url)
        assert reply.status_code == 422, url
        assert "never accepted in a URL" in reply.json()["detail"]
    server_lines = [r.getMessage() for r in caplog.records if r.name.startswith("prism")]
    assert server_lines
    assert not any(TOKEN in line for line in server_lines)
    access = [r for r in caplog.records if r.name == "prism.api.access"]
    assert len(access) == 3
    assert all("?" not in r.getMessage() for r in access)


async def test_the_token_anywhere_but_authorization_is_refused(api: Api) -> None:
    """In another header or in the body (where the audit log would keep it): 422, unchanged."""
    revision = await api.store.revision()
    as_actor = await api.change(
        "PUT", "/apps/shop/weights", SHIFT, headers={"X-Prism-Actor": TOKEN}
    )
    in_reason = await api.change("PUT", "/apps/shop/weights", {**SHIFT, "reason": TOKEN})
    for reply in (as_actor, in_reason):
        assert reply.status_code == 422
        assert "only accepted in the Authorization header" in reply.json()["detail"]
    assert await api.store.revision() == revision
    assert all(TOKEN not in repr(r) for r in await api.store.audit(limit=100))


async def test_access_log_line_has_the_request_fields(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """One access record per request with method, path, status, duration and request id."""
    caplog.set_level(logging.INFO, logger="prism.api.access")
    await api.client.get("/apps/shop?x=1", headers={"X-Request-Id": "log-1"})
    (record,) = [r for r in caplog.records if r.name == "prism.api.access"]
    fields = {k: getattr(record, k) for k in ("method", "path", "status", "request_id")}
    assert fields == {
        "method": "GET",
        "path": "/api/v1/apps/shop",
        "status": 200,
        "request_id": "log-1",
    }
    assert record.duration_ms >= 0  # type: ignore[attr-defined]


async def test_hsts_only_when_served_over_tls(make_api: Callable[..., Any]) -> None:
    """Strict-Transport-Security is on every answer, errors too, when hsts is set."""
    plain: Api = await make_api()
    assert "strict-transport-security" not in (await plain.client.get("/health")).headers
    tls: Api = await make_api(limits=ApiLimits(hsts=True))
    for reply in (await tls.client.get("/health"), await tls.client.get("/apps/nope")):
        assert reply.headers["strict-transport-security"] == "max-age=31536000"


async def test_changes_past_the_rate_are_refused_with_retry_after(
    make_api: Callable[..., Any],
) -> None:
    """Burst 2 at 0.5/s: two changes pass, the third gets 429 with Retry-After and stores
    nothing; reads are not limited."""
    api: Api = await make_api(rate=RateLimit(rate=0.5, burst=2))
    for weights in ({"blue": 90, "green": 10}, {"blue": 80, "green": 20}):
        reply = await api.change("PUT", "/apps/shop/weights", {"weights": weights})
        assert reply.status_code == 200, reply.text
    revision = await api.store.revision()
    refused = await api.change("PUT", "/apps/shop/weights", SHIFT)
    assert refused.status_code == 429
    assert refused.json()["type"] == errors.RateLimited.type_uri
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    assert await api.store.revision() == revision
    for _ in range(5):
        assert (await api.client.get("/apps/shop")).status_code == 200


async def test_auth_is_checked_before_the_body(api: Api) -> None:
    """Without a token a malformed change is 401, not 422; with one, 422."""
    anonymous = await api.client.put("/apps/shop/weights", content=b"{not json")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    wrong = await api.client.put(
        "/apps/shop/weights", json=SHIFT, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    broken = await api.change("PUT", "/apps/shop/weights", None, content=b"{not json")
    assert broken.status_code == 415  # no JSON content type
    typed = await api.change(
        "PUT",
        "/apps/shop/weights",
        None,
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert typed.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"weights": {"blue": 50, "green": 50}, "smoke": 1},
        {"weights": {"blue": 50, "green": 50}, "smoke": "true"},
        {"weights": {"blue": "50", "green": 50}},
        {"weights": {"blue": 50.0, "green": 50}},
        {"weights": {"Blue": 100}},
        {"weights": {"blue": 101}},
        {"weights": {}},
        {"weights": {"blue": 100}, "reason": "tab\there"},
        {"weights": {"blue": 100}, "extra": True},
    ],
)
async def test_bodies_are_validated_strictly(api: Api, body: dict[str, Any]) -> None:
    """What the schema refuses, the API refuses: no lax coercion of types."""
    revision = await api.store.revision()
    reply = await api.change("PUT", "/apps/shop/weights", body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["errors"]
    assert await api.store.revision() == revision


async def test_durations_keep_their_string_form(api: Api) -> None:
    """A duration may be ms or '30s', as the schema says; a negative one is refused."""
    spec = (await api.client.get("/config")).json()["spec"]
    spec["apps"][0]["check"] = {"inter_ms": "2s"}
    assert (await api.change("PUT", "/config", {"spec": spec})).status_code == 200
    spec["apps"][0]["check"] = {"inter_ms": -5}
    assert (await api.change("PUT", "/config", {"spec": spec})).status_code == 422


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"prism.test"), (b"content-type", b"application/json")]
        + (headers or []),
        "client": ("127.0.0.1", 1234),
        "server": ("prism.test", 80),
    }
