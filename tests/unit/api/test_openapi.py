"""The OpenAPI document: problem answers, patterns and limits, resolvable references."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.unit.api.conftest import Api

MUTATING = {"put", "post", "delete"}


@pytest.fixture
async def doc(api: Api) -> dict[str, Any]:
    reply = await api.client.get("/openapi.json")
    assert reply.status_code == 200
    document: dict[str, Any] = reply.json()
    return document


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


async def test_every_error_answer_is_a_problem(doc: dict[str, Any]) -> None:
    """Each operation lists its error statuses as application/problem+json Problems; changes
    list 401, 403, 409, 422, 429 and 502, with Retry-After on 429."""
    for path, method, op in _operations(doc):
        statuses = {int(s) for s in op["responses"]}
        assert {200, 408, 413, 422, 431, 500} <= statuses, (method, path)
        for status, answer in op["responses"].items():
            if int(status) >= 400:
                schema = answer["content"]["application/problem+json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}
                assert answer["headers"]["X-Request-Id"]["required"] is True
        if method in MUTATING:
            assert {401, 403, 404, 409, 429, 502, 503} <= statuses, (method, path)
            assert "Retry-After" in op["responses"]["429"]["headers"]
            assert op["security"] == [{"HTTPBearer": []}]
    problem = doc["components"]["schemas"]["Problem"]
    assert "https://prism.dev/problems/gate-failed" in problem["properties"]["type"]["enum"]


async def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    """No $ref points at a schema the document lacks."""
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs
    assert refs <= set(doc["components"]["schemas"])


async def test_parameters_and_bodies_carry_patterns_and_ranges(doc: dict[str, Any]) -> None:
    """Names, reasons, weights, servers and spec limits are in the schemas."""
    params = {
        p["name"]: p for p in doc["paths"]["/api/v1/apps/{app}/pins/{key}"]["put"]["parameters"]
    }
    assert params["app"]["schema"]["pattern"] == "^(?:[a-z][a-z0-9-]{0,31})$"
    assert params["key"]["schema"]["pattern"].startswith("^(?:[A-Za-z0-9_.:-]")
    schemas = doc["components"]["schemas"]
    weights = schemas["WeightsRequest"]["properties"]["weights"]
    assert weights["patternProperties"]["^(?:[a-z][a-z0-9-]{0,31})$"] == {
        "maximum": 100,
        "minimum": 0,
        "type": "integer",
    }
    assert weights["additionalProperties"] is False
    reason = schemas["WeightsRequest"]["properties"]["reason"]["anyOf"][0]
    assert reason["pattern"] == "^(?:[\\x20-\\x7e]{1,256})$"
    assert schemas["Spec"]["properties"]["apps"]["maxItems"] == 2000
    assert schemas["App"]["properties"]["colors"]["maxItems"] == 32
    assert schemas["Color"]["properties"]["servers"]["maxItems"] == 1000
    assert schemas["Server"]["properties"]["port"] == {
        "maximum": 65535,
        "minimum": 1,
        "title": "Port",
        "type": "integer",
    }
    body = doc["paths"]["/api/v1/config"]["put"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ApplyRequest"}
    assert body["examples"]


async def test_examples_are_accepted(api: Api, doc: dict[str, Any]) -> None:
    """The body examples of the document validate (the config example applies)."""
    example = doc["paths"]["/api/v1/config"]["put"]["requestBody"]["content"]["application/json"][
        "examples"
    ]["shop"]["value"]
    reply = await api.change("PUT", "/config", example)
    assert reply.status_code == 200, reply.text
