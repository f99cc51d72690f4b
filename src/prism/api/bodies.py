"""Request bodies: JSON only, validated strictly against the model the OpenAPI document shows.

FastAPI's own body handling validates in pydantic's lax mode, which takes
``"true"`` or ``1`` for a boolean and ``"0.5"`` for a number: more than the
document says. Here a body is parsed as JSON and validated in strict mode
(durations keep their ``"30s"`` form, which the schema declares), so what the
schema accepts is what the API accepts. Its size and the time to send it are
bounded before it gets here (:mod:`prism.api.guard`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from prism.errors import UnsupportedMediaType

__all__ = ["body_doc", "body_schemas", "json_body"]

M = TypeVar("M", bound=BaseModel)

_REF = "#/components/schemas/{model}"


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def json_body(request: Request, model: type[M]) -> M:
    """The request body as a ``model``, strictly validated.

    Handlers call it first thing, so credentials (401) and path and query
    parameters (422) are checked before the body (415, 422)."""
    if not _is_json(request.headers.get("content-type")):
        raise UnsupportedMediaType(
            "the request body must be JSON",
            hint="send it with Content-Type: application/json",
        )
    raw = await request.body()
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def body_doc(model: type[BaseModel], examples: dict[str, Any]) -> dict[str, Any]:
    """The ``requestBody`` of an operation that reads ``model`` (for ``openapi_extra``)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": _REF.format(model=model.__name__)},
                    "examples": {
                        name: {"summary": name, "value": value} for name, value in examples.items()
                    },
                }
            },
        }
    }


def body_schemas(models: Sequence[type[BaseModel]]) -> dict[str, Any]:
    """The component schemas of these models and everything they contain."""
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    return schemas
