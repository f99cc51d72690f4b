"""The dashboard: one page at ``/``, its two assets, login sessions and a live stream.

Everything ships inside the package (``prism/api/static``): no CDN, no build
step, so it works offline. The page logs in with a token (:mod:`.sessions`),
then follows ``GET /api/v1/events`` (server-sent events): a ``state`` event
carries every app's status, the sampled per-color rates of the last 15
minutes, the nodes and the latest audit records, whenever any of them moved.
Actions call the same API as the CLI. The page renders user text only as
text (``textContent``), and a Content-Security-Policy allows only its own
script and style.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from prism.api.auth import Auth, Caller, Viewer, bearer
from prism.api.sessions import COOKIE, CSRF_COOKIE, LIFETIME, Sessions
from prism.core.tokens import digest
from prism.errors import NotFound, Unauthorized
from prism.services import Services

__all__ = ["dashboard_state", "install_dashboard"]

_STATIC = resources.files("prism.api") / "static"
_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: how often the stream looks for changes, and sends a state anyway
POLL_SECONDS = 0.25
REFRESH_SECONDS = 5.0
HISTORY = 30


async def dashboard_state(services: Services) -> dict[str, Any]:
    """Everything the page shows, as one JSON value."""
    apps = await services.status.status()
    series = {
        a["name"]: services.telemetry.series(a["name"], [c["name"] for c in a["colors"]])
        for a in apps
    }
    return {
        "at": time.time(),
        "apps": apps,
        "series": series,
        "nodes": await services.status.nodes(),
        "history": await services.status.history(None, HISTORY),
    }


def install_dashboard(app: FastAPI, services: Services, auth: Auth) -> Sessions:
    """Add the dashboard's routes to ``app``; its sessions become a way to authenticate."""
    sessions = Sessions()

    async def from_session(request: Request) -> Caller | None:
        session = sessions.find(request)
        return None if session is None else await auth.caller_by_digest(session.digest)

    auth.session = from_session

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((_STATIC / "index.html").read_text(), headers=_HEADERS)

    @app.get("/assets/{name}", include_in_schema=False)
    async def asset(
        name: Annotated[str, Path(pattern=r"^[a-z]{1,32}\.(js|css)$")],
    ) -> Response:
        resource = _STATIC / name
        if not resource.is_file():
            raise NotFound(f"no asset {name!r}")
        kind = name.rsplit(".", 1)[1]
        return Response(resource.read_bytes(), media_type=_TYPES[kind], headers=_HEADERS)

    @app.post("/api/v1/session", include_in_schema=False)
    async def login(request: Request) -> Response:
        credentials: HTTPAuthorizationCredentials | None = await bearer(request)
        caller = None if credentials is None else await auth.caller(credentials.credentials)
        if caller is None or credentials is None:
            raise Unauthorized(
                "that token is not valid", hint="paste a token from `prism token create`"
            )
        key, session = sessions.open(digest(credentials.credentials))
        answer = Response(
            json.dumps({"name": caller.name, "role": caller.role, "csrf": session.csrf}),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )
        secure = request.url.scheme == "https"
        common: dict[str, Any] = {"samesite": "strict", "path": "/", "secure": secure}
        answer.set_cookie(COOKIE, key, max_age=int(LIFETIME), httponly=True, **common)
        answer.set_cookie(CSRF_COOKIE, session.csrf, max_age=int(LIFETIME), **common)
        return answer

    @app.delete("/api/v1/session", include_in_schema=False)
    async def logout(request: Request) -> Response:
        sessions.close(request.cookies.get(COOKIE))
        answer = Response(status_code=204)
        answer.delete_cookie(COOKIE, path="/", samesite="strict", httponly=True)
        answer.delete_cookie(CSRF_COOKIE, path="/", samesite="strict")
        return answer

    @app.get("/api/v1/dashboard", include_in_schema=False)
    async def state(caller: Viewer) -> dict[str, Any]:
        return {"me": {"name": caller.name, "role": caller.role}, **await dashboard_state(services)}

    @app.get("/api/v1/events", include_in_schema=False)
    async def events(request: Request, caller: Viewer) -> StreamingResponse:
        me = {"name": caller.name, "role": caller.role}
        return StreamingResponse(
            _stream(request, services, me),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return sessions


async def _stream(request: Request, services: Services, me: dict[str, str]) -> AsyncIterator[bytes]:
    """A ``state`` event now, then whenever the store or the samples moved (or every 5 s)."""
    seen: tuple[int, int] | None = None
    sent_at = 0.0
    while not await request.is_disconnected():
        mark = (await services.status.store.revision(), services.telemetry.samples)
        now = time.monotonic()
        if mark != seen or now - sent_at >= REFRESH_SECONDS:
            data = {"me": me, **await dashboard_state(services)}
            yield f"event: state\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
            seen, sent_at = mark, now
        await asyncio.sleep(POLL_SECONDS)
