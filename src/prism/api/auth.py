"""Who may do what: the one place the API checks credentials, roles and pace.

A caller presents a bearer token (``Authorization: Bearer ...``) or, from the
dashboard, a session cookie (:mod:`.sessions`). It is either the state
directory's own ``token`` file (made on first start; role ``admin``, acting
as ``X-Prism-Actor`` or ``api`` as before) or a named token from the store
(:class:`prism.services.tokens.TokenService`), which acts under its own name.

Every mutation depends on :data:`Operator` or :data:`Admin`: the credential
must check out (else 401), its role must allow the change (else 403), and
its rate must allow one more (else 429) — all before the handler runs, so a
refused request changes nothing. Reads of status need no token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prism.api.ratelimit import RateLimiter
from prism.core.tokens import Role, allows, digest
from prism.errors import Forbidden, RateLimited, Unauthorized
from prism.services.tokens import RESERVED, TokenService

__all__ = [
    "ACTOR_PATTERN",
    "NAMED_SECRET",
    "Admin",
    "Auth",
    "Caller",
    "Operator",
    "Viewer",
    "authenticated",
    "bearer",
    "requires",
]

#: what an ``X-Prism-Actor`` header may say
ACTOR_PATTERN = r"^[A-Za-z0-9._@-]{1,64}$"
#: the shape of a named token's secret, so it can be refused wherever it does not belong
NAMED_SECRET = re.compile(r"prism_[A-Za-z0-9_-]{43}", re.ASCII)

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token: the `token` file in the state directory (mode 600, role "
    "admin), PRISM_TOKEN, or one made by `prism token create`. Reads of status need none.",
)

#: reads a bearer token from a request (None without one)
bearer = _bearer


@dataclass(frozen=True)
class Caller:
    """Who a credential authenticates: a token's name and role."""

    name: str
    role: Role
    #: the state directory's own token (acts as ``X-Prism-Actor``, as it always has)
    bootstrap: bool = False


@dataclass
class Auth:
    """The credentials the API accepts and the pace it allows each of them."""

    token: str
    tokens: TokenService
    limiter: RateLimiter | None = None
    #: a dashboard session's caller, by cookie value (set by :mod:`.sessions`)
    session: Callable[[Request], Awaitable[Caller | None]] | None = None

    async def caller(self, presented: str) -> Caller | None:
        """Who ``presented`` authenticates, or None (unknown, or revoked)."""
        if hmac.compare_digest(presented.encode(), self.token.encode()):
            return Caller(RESERVED, "admin", bootstrap=True)
        record = await self.tokens.resolve(presented)
        return None if record is None else Caller(record.name, record.role)

    async def caller_by_digest(self, token_digest: str) -> Caller | None:
        """Who the token with this digest is now (a session keeps only the digest)."""
        if hmac.compare_digest(token_digest, digest(self.token)):
            return Caller(RESERVED, "admin", bootstrap=True)
        record = await self.tokens.resolve_digest(token_digest)
        return None if record is None else Caller(record.name, record.role)

    def secrets(self) -> tuple[str, ...]:
        """Every credential value known in full, so the request guard can keep them out of
        URLs and logs (named tokens are caught by their shape, :data:`NAMED_SECRET`)."""
        return (self.token,)


def _auth(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller, once its bearer token (or dashboard session) checks out; else 401."""
    auth = _auth(request)
    caller = None
    if credentials is not None:
        caller = await auth.caller(credentials.credentials)
    elif auth.session is not None:
        caller = await auth.session(request)
    if caller is None:
        raise Unauthorized(
            "a valid bearer token is required",
            hint="the admin token is in the state directory's 'token' file (or set "
            "PRISM_TOKEN); `prism token create` makes named ones; a revoked token is refused",
        )
    return caller


def _pace(auth: Auth, caller: Caller) -> None:
    if auth.limiter is None:
        return
    # keyed by a digest of the token's name: the limiter never holds a credential
    wait = auth.limiter.take(hashlib.sha256(caller.name.encode()).hexdigest())
    if wait > 0:
        raise RateLimited(
            f"too many changes: this token may make {auth.limiter.limit.rate:g} a second"
            f" (bursts of {auth.limiter.limit.burst})",
            retry_after=round(wait, 3),
            hint="retry after the number of seconds in Retry-After; nothing was changed",
        )


def requires(role: Role) -> Callable[..., Awaitable[str]]:
    """A dependency for a change that needs ``role``: the actor to audit it under."""

    async def acting(
        request: Request,
        caller: Annotated[Caller, Depends(authenticated)],
        x_prism_actor: Annotated[
            str | None,
            Header(
                pattern=ACTOR_PATTERN,
                description="who acts, for the audit log (default: the token's name; "
                "`api` for the state directory's token)",
                examples=["alice"],
            ),
        ] = None,
    ) -> str:
        if not allows(caller.role, role):
            raise Forbidden(
                f"the token {caller.name!r} has the role {caller.role}; this change needs {role}",
                hint="nothing was changed; ask an admin for a token with that role"
                " (prism token create --role ...)",
            )
        _pace(_auth(request), caller)
        if caller.bootstrap:
            return "api" if x_prism_actor is None else x_prism_actor
        return caller.name if x_prism_actor is None else f"{caller.name}:{x_prism_actor}"

    acting.__name__ = f"requires_{role}"
    return acting


async def _viewer(caller: Annotated[Caller, Depends(authenticated)]) -> Caller:
    return caller


#: any valid token (a read that needs one, such as ``whoami``)
Viewer = Annotated[Caller, Depends(_viewer)]
#: a change an operator may make (shift, release, steer, pin, servers)
Operator = Annotated[str, Depends(requires("operator"))]
#: a change only an admin may make (spec, nodes, tokens)
Admin = Annotated[str, Depends(requires("admin"))]
