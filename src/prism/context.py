"""What the code serving one API request knows about it, without passing it around.

``request_id`` is set by the API for the duration of a request
(:mod:`prism.api.guard`) and read where a request's effects are recorded: an
:class:`~prism.types.AuditDraft` made while serving it carries the id, and so
does every log line. Tasks started while serving a request (a release's
driver) keep the id of the request that started them.
"""

from __future__ import annotations

import contextvars

__all__ = ["current_request_id", "request_id"]

#: the id of the API request being served (None outside a request)
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "prism_request_id", default=None
)


def current_request_id() -> str | None:
    return request_id.get()
