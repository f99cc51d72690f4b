"""Every error class has its own problem type, and the API answers with it."""

from __future__ import annotations

import pytest

from prism import errors
from prism.api.problems import problem, problem_types
from prism.errors import PROBLEM_BASE, MethodNotAllowed, PrismError, RateLimited
from tests.unit.api.conftest import Api


def test_every_class_has_its_own_type_uri() -> None:
    """One type URI per class of the tree, derived from its name, all under PROBLEM_BASE."""
    classes = errors.error_classes()
    uris = [cls.type_uri for cls in classes]
    assert len(set(uris)) == len(classes) == len(errors.__all__) - 2  # less PROBLEM_BASE, fn
    assert all(uri.startswith(PROBLEM_BASE) for uri in uris)
    assert errors.GateFailed.type_uri == "https://prism.dev/problems/gate-failed"
    assert errors.HAProxyNotFound.type_uri == "https://prism.dev/problems/haproxy-not-found"
    assert errors.RuntimeAPIError.type_uri == "https://prism.dev/problems/runtime-api-error"
    assert problem_types() == uris


@pytest.mark.parametrize("cls", errors.error_classes(), ids=lambda c: c.__name__)
def test_a_problem_carries_its_class_status_and_title(cls: type[PrismError]) -> None:
    """problem() gives each class its type, title and status; restore() reverses it."""
    error = cls.restore("it broke", hint="fix it", detail={"limit": 3})
    answer = problem(error, request_id="r1")
    assert answer.status_code == cls.status
    assert answer.media_type == "application/problem+json"
    body = answer.body.decode()
    assert f'"type":"{cls.type_uri}"' in body
    assert f'"title":"{cls.title}"' in body
    assert '"request_id":"r1"' in body
    assert '"limit":3' in body


def test_rate_limited_and_method_not_allowed_carry_their_headers() -> None:
    """429 says when to retry (whole seconds, at least 1); 405 says what is allowed."""
    assert problem(RateLimited("slow down", retry_after=0.2)).headers["retry-after"] == "1"
    assert problem(RateLimited("slow down", retry_after=2.1)).headers["retry-after"] == "3"
    allowed = problem(MethodNotAllowed("no", allow=("GET", "PUT")))
    assert allowed.headers["allow"] == "GET, PUT"


async def test_unknown_method_answers_405_with_every_method_of_the_path(api: Api) -> None:
    """TRACE on /config lists GET and PUT, though they are two routes."""
    reply = await api.client.request("TRACE", "/config")
    assert reply.status_code == 405
    assert reply.headers["allow"] == "GET, PUT"
    assert reply.json()["type"] == MethodNotAllowed.type_uri
    on_read_path = await api.change("POST", "/apps/shop/releases/history", {})
    assert on_read_path.status_code == 405
    assert on_read_path.headers["allow"] == "GET"


async def test_unknown_path_is_a_not_found_problem(api: Api) -> None:
    """A path outside the API is a 404 problem naming where the API is."""
    reply = await api.client.get("/no/such/thing")
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["type"] == errors.NotFound.type_uri
    assert "/api/v1" in reply.json()["hint"]


async def test_an_unexpected_crash_is_a_500_problem_with_the_request_id(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug answers problem+json 500 with the request id; its text stays in the log."""

    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.store, "audit", broken)
    reply = await api.client.get("/history", headers={"X-Request-Id": "crash-1"})
    assert reply.status_code == 500
    assert reply.json()["type"] == errors.PrismError.type_uri
    assert reply.json()["request_id"] == "crash-1"
    assert reply.headers["x-request-id"] == "crash-1"
    assert "secret internals" not in reply.text
