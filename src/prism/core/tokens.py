"""Named API tokens and their roles, as values.

A token is a name, a role and the SHA-256 digest of its secret; the secret
itself is shown once, when the token is made, and never stored. Secrets are
32 random bytes, so a plain digest is as hard to invert as the secret is to
guess (no salt or slow hash is needed, and a lookup stays one hash).

Roles are ordered: each may do everything the ones before it may.

* ``viewer`` — read (the dashboard, status, history);
* ``operator`` — shift weights, start and steer releases, roll back, pin,
  add and remove servers and registrations;
* ``admin`` — apply specs, forget nodes, manage tokens.

Key layout: ``tokens/<name>`` holds a :class:`TokenRecord` as JSON.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ROLES",
    "TOKENS",
    "TOKEN_NAME",
    "Role",
    "TokenRecord",
    "allows",
    "digest",
    "token_key",
]

Role = Literal["viewer", "operator", "admin"]
#: every role, least powerful first
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
TOKENS = "tokens/"
#: a token's name: it is the actor the audit log names
TOKEN_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}", re.ASCII)


def token_key(name: str) -> str:
    return f"{TOKENS}{name}"


def digest(secret: str) -> str:
    """The hex SHA-256 of a secret: what is stored and compared."""
    return hashlib.sha256(secret.encode()).hexdigest()


def allows(role: Role, needed: Role) -> bool:
    """Whether a holder of ``role`` may do what needs ``needed``."""
    return ROLES.index(role) >= ROLES.index(needed)


class TokenRecord(BaseModel):
    """A stored token: never its secret, only the secret's digest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=rf"^{TOKEN_NAME.pattern}$")
    role: Role
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    created: float = Field(ge=0)
    created_by: str = Field(min_length=1, max_length=200)

    def public(self) -> dict[str, object]:
        """What listing shows: everything but the digest."""
        return {
            "name": self.name,
            "role": self.role,
            "created": self.created,
            "created_by": self.created_by,
        }
