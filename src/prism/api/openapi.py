"""The OpenAPI document: every status an operation can answer, and the problem schema.

Operations name the statuses they can answer with :func:`answers`; each one
is a problem (``application/problem+json``, the ``Problem`` schema) with an
``X-Request-Id`` header. :func:`build` adds the request-body and problem
schemas FastAPI does not know about (bodies are read by
:func:`prism.api.bodies.json_body`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from prism.api.bodies import body_schemas
from prism.api.problems import MEDIA_TYPE, problem_schema

__all__ = ["COMMON", "MUTATION", "READ", "answers", "build"]

_DESCRIPTIONS = {
    401: "No valid bearer token (changes need one).",
    403: "The token may not make this change.",
    404: "No such app, color, server, pin, release or node.",
    408: "The request did not arrive in time; nothing was changed.",
    409: "Refused: a gate failed, a release is in the way, or the state changed underneath.",
    413: "The body is over its size limit (1 MiB; 10 MiB for PUT /config), or the spec over "
    "its limits; nothing was changed.",
    415: "The body is not JSON.",
    422: "A name, value or document is not valid; nothing was changed.",
    429: "Too many changes for this token; retry after `Retry-After` seconds.",
    431: "The request headers are over their size limit.",
    500: "An unexpected error.",
    502: "HAProxy (or a fleet node) refused or failed the change; it was reverted.",
    503: "The state store is unavailable.",
}

_REQUEST_ID = {
    "X-Request-Id": {
        "description": "The request's id (the one sent, if valid; else a new one); audit "
        "records of the change carry it.",
        "required": True,
        "schema": {"type": "string"},
    }
}

#: every operation can answer these: limits of the request guard, and the unexpected
COMMON = (408, 413, 431, 500)
#: reads of desired state and status
READ = (*COMMON, 422, 502, 503)
#: changes: authenticated, rate limited, validated, refused by gates, HAProxy or the store
MUTATION = (*COMMON, 401, 403, 404, 409, 415, 422, 429, 502, 503)


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of an operation that may answer these problem statuses."""
    out: dict[int | str, dict[str, Any]] = {200: {"headers": _REQUEST_ID}}
    for status in sorted(set(statuses)):
        headers: dict[str, Any] = dict(_REQUEST_ID)
        if status == 401:
            headers["WWW-Authenticate"] = {"schema": {"type": "string"}, "required": True}
        if status == 429:
            headers["Retry-After"] = {
                "description": "seconds until the next change is accepted",
                "schema": {"type": "integer", "minimum": 1},
                "required": True,
            }
        out[status] = {
            "description": _DESCRIPTIONS[status],
            "headers": headers,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out


def build(app: FastAPI, bodies: Sequence[type[BaseModel]]) -> dict[str, Any]:
    """The whole document: FastAPI's, plus the body and problem schemas it refers to."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(body_schemas(bodies))
    schemas["Problem"] = problem_schema()
    return doc
