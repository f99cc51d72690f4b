"""The token use case: named API tokens with roles, kept as digests in the store.

Tokens live in the store (``tokens/<name>``), so every control plane of a
fleet accepts the same ones. :meth:`TokenService.resolve` is on every
authenticated request's path: it re-reads the tokens only when the store's
stamp of ``tokens/`` moved, so a revoke takes effect on the next request
everywhere, and an unchanged set costs one cheap read.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from prism import names
from prism.core.model import parse_model
from prism.core.tokens import (
    ROLES,
    TOKEN_NAME,
    TOKENS,
    TokenRecord,
    digest,
    token_key,
)
from prism.errors import Conflict, InvalidInput, NotFound
from prism.types import AuditDraft, Clock, Compare, Delete, Put, Store

__all__ = ["RESERVED", "TokenService"]

#: the name the state directory's own token (made on first start) acts under
RESERVED = "admin"


class TokenService:
    """``prism token create``, ``list`` and ``revoke``, and resolving a presented secret."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._cache: tuple[tuple[int, int], dict[str, TokenRecord]] | None = None

    async def create(self, name: str, role: str, *, actor: str) -> dict[str, Any]:
        """Make a token; the answer holds its secret, which is never shown again."""
        names.check(TOKEN_NAME, name, "token name")
        if role not in ROLES:
            raise InvalidInput(
                f"invalid role {role!r}", hint=f"a role is one of: {', '.join(ROLES)}"
            )
        if name == RESERVED:
            raise Conflict(
                f"the token name {RESERVED!r} is taken by the state directory's own token",
                hint="pick another name",
            )
        secret = "prism_" + secrets.token_urlsafe(32)
        record = TokenRecord(
            name=name,
            role=role,
            digest=digest(secret),
            created=self.clock.now(),
            created_by=actor,
        )
        key = token_key(name)
        try:
            await self.store.commit(
                [Put(key, record.model_dump_json())],
                expect=[Compare(key, 0)],
                audit=AuditDraft(actor, "token.created", detail={"name": name, "role": role}),
            )
        except Conflict:
            raise Conflict(
                f"a token named {name!r} exists already",
                hint=f"revoke it first (prism token revoke {name}) or pick another name",
            ) from None
        return {**record.public(), "secret": secret}

    async def list(self) -> list[dict[str, Any]]:
        """Every named token (never a secret or digest), by name."""
        records = await self._records()
        return [r.public() for r in sorted(records.values(), key=lambda r: r.name)]

    async def revoke(self, name: str, *, actor: str) -> dict[str, Any]:
        """Delete a token: its next request is refused (401) on every control plane."""
        names.check(TOKEN_NAME, name, "token name")
        key = token_key(name)
        entry = await self.store.get(key)
        if entry is None:
            raise NotFound(f"no token named {name!r}", hint="see prism token list")
        record = parse_model(TokenRecord, json.loads(entry.value), source=f"stored {key}")
        await self.store.commit(
            [Delete(key)],
            expect=[Compare(key, entry.mod_revision)],
            audit=AuditDraft(actor, "token.revoked", detail={"name": name, "role": record.role}),
        )
        return {"revoked": name, "role": record.role}

    async def resolve(self, secret: str) -> TokenRecord | None:
        """The named token whose secret this is, or None (unknown or revoked)."""
        return await self.resolve_digest(digest(secret))

    async def resolve_digest(self, token_digest: str) -> TokenRecord | None:
        """The named token with this digest, or None (a dashboard session holds only it)."""
        return (await self._records_by_digest()).get(token_digest)

    async def _records(self) -> dict[str, TokenRecord]:
        return {r.name: r for r in (await self._records_by_digest()).values()}

    async def _records_by_digest(self) -> dict[str, TokenRecord]:
        stamp = await self.store.stamp(TOKENS)
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        by_digest: dict[str, TokenRecord] = {}
        for entry in await self.store.list(TOKENS):
            record = parse_model(TokenRecord, json.loads(entry.value), source=f"stored {entry.key}")
            by_digest[record.digest] = record
        self._cache = (stamp, by_digest)
        return by_digest
