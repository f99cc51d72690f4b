"""The CLI's client: problem answers become the error class their type names."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from prism import errors
from prism.cli.client import ApiClient, Target


def _client(handler: httpx.MockTransport) -> ApiClient:
    api = ApiClient(Target("http://prism.test", "t"))
    api._client = httpx.AsyncClient(base_url="http://prism.test/api/v1", transport=handler)
    return api


def _answer(status: int, body: object) -> httpx.MockTransport:
    return httpx.MockTransport(lambda _: httpx.Response(status, json=body))


@pytest.mark.parametrize("cls", errors.error_classes(), ids=lambda c: c.__name__)
async def test_a_problem_becomes_the_class_its_type_names(cls: type[errors.PrismError]) -> None:
    """By type, not title: a retitled answer still maps, and keeps its detail and hint."""
    body = {
        "type": cls.type_uri,
        "title": "whatever the server calls it",
        "status": cls.status,
        "detail": "it broke",
        "hint": "fix it",
        "limit": 5,
    }
    async with _client(_answer(cls.status, body)) as api:
        with pytest.raises(cls, match="it broke") as raised:
            await api.get("/x")
    assert type(raised.value) is cls
    assert raised.value.exit_code == cls.exit_code
    assert (raised.value.hint, raised.value.detail["limit"]) == ("fix it", 5)


async def test_an_unknown_type_or_a_non_problem_is_a_plain_prism_error() -> None:
    """Anything that is not one of Prism's types exits 1 with what the server said."""
    unknown = {"type": "about:blank", "title": "Gate failed", "detail": "odd"}
    async with _client(_answer(409, unknown)) as api:
        with pytest.raises(errors.PrismError, match="odd") as raised:
            await api.get("/x")
    assert type(raised.value) is errors.PrismError
    text = httpx.MockTransport(lambda _: httpx.Response(502, text="<html>bad gateway</html>"))
    async with _client(text) as api:
        with pytest.raises(errors.PrismError, match="bad gateway"):
            await api.get("/x")


async def test_an_untrusted_certificate_is_unavailable_with_a_hint() -> None:
    """A TLS verification failure says the certificate is not trusted and how to fix it."""

    def refuse(_: httpx.Request) -> httpx.Response:
        cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
        cause.verify_message = "unable to get local issuer certificate"
        raise httpx.ConnectError("TLS failed") from cause

    async with _client(httpx.MockTransport(refuse)) as api:
        with pytest.raises(errors.Unavailable, match="TLS certificate is not trusted") as raised:
            await api.get("/x")
    assert "--cacert" in str(raised.value.hint)


def test_a_cacert_that_is_not_a_certificate_is_invalid_input(tmp_path: Path) -> None:
    """--cacert pointing at garbage is refused before any request."""
    bad = tmp_path / "ca.pem"
    bad.write_text("nope")
    with pytest.raises(errors.InvalidInput, match=r"cannot use .* as a CA certificate"):
        ApiClient(Target("https://prism.test", "t", bad))
