"""The one place errors become HTTP responses (RFC 9457 problem+json).

Every answer that is not a success is a problem: ``type`` is the URI of the
error's class in :mod:`prism.errors` (``https://prism.dev/problems/gate-failed``),
``title`` and ``status`` come from the class, ``detail`` says what happened and
``hint`` what to do; structured extras (field errors, readings, limits) sit
beside them. 401 carries ``WWW-Authenticate``, 405 ``Allow``, 429
``Retry-After``.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from prism.core.model import error_lines
from prism.errors import (
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    PrismError,
    RateLimited,
    error_classes,
)

__all__ = [
    "MEDIA_TYPE",
    "install_handlers",
    "internal_error",
    "problem",
    "problem_schema",
    "problem_types",
]

MEDIA_TYPE = "application/problem+json"


def problem_types() -> list[str]:
    """Every problem ``type`` URI Prism answers with, one per error class."""
    return [cls.type_uri for cls in error_classes()]


def problem_schema() -> dict[str, Any]:
    """The JSON Schema of a problem answer, for the OpenAPI document."""
    return {
        "title": "Problem",
        "type": "object",
        "description": "RFC 9457 problem details. `type` names the error class; fields "
        "beyond the standard ones (`errors`, `limit`, `readings`, `nodes`, ...) carry "
        "structured detail.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri", "enum": problem_types()},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "hint": {"type": "string"},
            "request_id": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": True,
        "example": {
            "type": "https://prism.dev/problems/gate-failed",
            "title": "Gate failed",
            "status": 409,
            "detail": "health gate: green has no server UP (s1 DOWN)",
            "hint": "fix the servers of green, then retry; nothing was changed",
        },
    }


def problem(error: PrismError, *, request_id: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": error.type_uri,
        "title": error.title,
        "status": error.status,
        "detail": error.message,
    }
    if error.hint:
        body["hint"] = error.hint
    if request_id is not None:
        body["request_id"] = request_id
    body.update({k: v for k, v in error.detail.items() if k not in body})
    headers: dict[str, str] = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, MethodNotAllowed):
        headers["Allow"] = ", ".join(error.allow)
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return JSONResponse(body, status_code=error.status, media_type=MEDIA_TYPE, headers=headers)


def internal_error() -> PrismError:
    """What an unexpected exception is answered with (its details go to the log only)."""
    return PrismError(
        "internal error", hint="the server log has the details; the change may not have been made"
    )


def _validation_problem(exc: RequestValidationError) -> PrismError:
    problems = error_lines(exc.errors())
    return InvalidInput(
        "request is not valid: " + "; ".join(problems[:10]),
        hint="fix the fields named above; nothing was changed",
        detail={"errors": problems},
    )


def _allowed(app: FastAPI, scope: Scope) -> tuple[str, ...]:
    """Every method some route of this path answers (Starlette names only the first's)."""
    path = scope["path"]
    methods: set[str] = set()
    for route in app.router.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return tuple(sorted(methods))


def _request_id(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def install_handlers(app: FastAPI) -> None:
    """Map PrismError, request validation and routing errors to problem+json (anything
    else is answered by the request guard, with :func:`internal_error`)."""

    async def on_prism_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PrismError)
        return problem(exc, request_id=_request_id(request))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem(_validation_problem(exc), request_id=_request_id(request))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error: PrismError
        if exc.status_code == 405:
            allow = _allowed(app, request.scope)
            error = MethodNotAllowed(
                f"{request.method} is not allowed on this path",
                allow=allow,
                hint=f"it answers {', '.join(allow)}",
            )
        elif exc.status_code == 404:
            error = NotFound(
                "no such API path", hint="the API lives under /api/v1; see /api/v1/openapi.json"
            )
        else:
            cls = next((c for c in error_classes() if c.status == exc.status_code), PrismError)
            error = cls.restore(str(exc.detail))
        return problem(error, request_id=_request_id(request))

    app.add_exception_handler(PrismError, on_prism_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
