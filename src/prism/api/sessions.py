"""Dashboard sessions: a token presented once, then an HttpOnly cookie.

``POST /api/v1/session`` with ``Authorization: Bearer <token>`` checks the
token and answers with two cookies: ``prism_session`` (HttpOnly,
SameSite=Strict: script cannot read it, other sites cannot send it) and
``prism_csrf`` (readable by the dashboard's script). A change made with the
session cookie must also carry ``X-Prism-CSRF`` equal to the session's CSRF
value (double submit): a page on another origin can neither read that
cookie nor set that header. The token itself never appears in a URL, a
cookie or a log; a session holds only the token's digest and is checked
against the store on every request, so revoking the token ends its sessions.

Sessions live in this control plane's memory for 12 hours.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from fastapi import Request

from prism.errors import Forbidden

__all__ = ["COOKIE", "CSRF_COOKIE", "CSRF_HEADER", "Session", "Sessions"]

COOKIE = "prism_session"
CSRF_COOKIE = "prism_csrf"
CSRF_HEADER = "x-prism-csrf"
#: how long a session lasts
LIFETIME = 12 * 3600.0
_SAFE = {"GET", "HEAD", "OPTIONS"}


@dataclass(frozen=True)
class Session:
    digest: str
    csrf: str
    expires: float


class Sessions:
    """The open sessions of one control plane, by cookie value."""

    def __init__(self, limit: int = 10_000) -> None:
        self._open: dict[str, Session] = {}
        self.limit = limit

    def open(self, digest: str) -> tuple[str, Session]:
        now = time.monotonic()
        self._open = {k: s for k, s in self._open.items() if s.expires > now}
        if len(self._open) >= self.limit:  # the oldest make room
            for key in sorted(self._open, key=lambda k: self._open[k].expires)[:100]:
                del self._open[key]
        key = secrets.token_urlsafe(32)
        session = Session(digest, secrets.token_urlsafe(24), now + LIFETIME)
        self._open[key] = session
        return key, session

    def close(self, key: str | None) -> None:
        if key is not None:
            self._open.pop(key, None)

    def find(self, request: Request) -> Session | None:
        """The request's live session, or None. A change needs the CSRF header too."""
        key = request.cookies.get(COOKIE)
        session = self._open.get(key) if key else None
        if session is None or session.expires <= time.monotonic():
            return None
        if request.method not in _SAFE:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                raise Forbidden(
                    "a change from the dashboard needs its X-Prism-CSRF header",
                    hint="nothing was changed; reload the dashboard (or send a bearer token)",
                )
        return session
