"""Who may change things: the one place the API checks credentials and paces changes.

Today there is one bearer token (the state directory's ``token`` file). Every
mutation depends on :func:`actor`, which checks the token, spends one of its
rate-limit tokens, and names who acts for the audit log (``X-Prism-Actor``).
Reads need no token. Named tokens with roles slot in here: :class:`Auth`
resolves a credential to a caller; :func:`authenticated` is what every
mutation depends on.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prism.api.ratelimit import RateLimiter
from prism.errors import RateLimited, Unauthorized

__all__ = ["ACTOR_PATTERN", "Actor", "Auth", "actor", "authenticated"]

#: what an ``X-Prism-Actor`` header may say
ACTOR_PATTERN = r"^[A-Za-z0-9._@-]{1,64}$"

_bearer = HTTPBearer(
    auto_error=False,
    description="The API token: the `token` file in the state directory (mode 600), "
    "or PRISM_TOKEN. Reads need none.",
)


@dataclass
class Auth:
    """The credentials the API accepts and the pace it allows each of them."""

    token: str
    limiter: RateLimiter | None = None

    def caller(self, presented: str) -> str | None:
        """The name of the caller ``presented`` authenticates, or None."""
        if hmac.compare_digest(presented.encode(), self.token.encode()):
            return "token"
        return None

    def secrets(self) -> tuple[str, ...]:
        """Every credential value, so the request guard can keep them out of URLs and logs."""
        return (self.token,)


def _auth(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's name, once its bearer token checks out and its rate allows one more
    change; raises Unauthorized or RateLimited (and nothing is changed)."""
    auth = _auth(request)
    caller = None if credentials is None else auth.caller(credentials.credentials)
    if caller is None:
        raise Unauthorized(
            "a valid bearer token is required for changes",
            hint="the token is in the state directory's 'token' file, or set PRISM_TOKEN",
        )
    if auth.limiter is not None:
        # keyed by a digest: the limiter never holds a credential
        wait = auth.limiter.take(hashlib.sha256(caller.encode()).hexdigest())
        if wait > 0:
            raise RateLimited(
                f"too many changes: this token may make {auth.limiter.limit.rate:g} a second"
                f" (bursts of {auth.limiter.limit.burst})",
                retry_after=round(wait, 3),
                hint="retry after the number of seconds in Retry-After; nothing was changed",
            )
    return caller


def actor(
    caller: Annotated[str, Depends(authenticated)],
    x_prism_actor: Annotated[
        str | None,
        Header(
            pattern=ACTOR_PATTERN,
            description="who acts, for the audit log (default: `api`)",
            examples=["alice"],
        ),
    ] = None,
) -> str:
    """Mutations need the bearer token; the actor header names who acts (audit)."""
    del caller  # one token today: every caller acts as the named actor
    return "api" if x_prism_actor is None else x_prism_actor


Actor = Annotated[str, Depends(actor)]
