"""The one place errors become HTTP responses (RFC 9457 problem+json)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from prism.core.model import error_lines
from prism.errors import InvalidInput, PrismError

__all__ = ["install_handlers", "problem"]

MEDIA_TYPE = "application/problem+json"


def problem(error: PrismError) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": error.message,
    }
    if error.hint:
        body["hint"] = error.hint
    body.update({k: v for k, v in error.detail.items() if k not in body})
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(body, status_code=error.status, media_type=MEDIA_TYPE, headers=headers)


def _validation_problem(exc: RequestValidationError) -> PrismError:
    problems = error_lines(exc.errors())
    return InvalidInput(
        "request is not valid: " + "; ".join(problems[:10]),
        hint="fix the fields named above; nothing was changed",
        detail={"errors": problems},
    )


def install_handlers(app: FastAPI) -> None:
    """Map PrismError, request validation and routing errors to problem+json."""

    async def on_prism_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PrismError)
        return problem(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem(_validation_problem(exc))

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error = PrismError(str(exc.detail))
        body = {"type": "about:blank", "title": error.title, "status": exc.status_code}
        body["detail"] = str(exc.detail)
        return JSONResponse(body, status_code=exc.status_code, media_type=MEDIA_TYPE)

    app.add_exception_handler(PrismError, on_prism_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
