"""The registration use case: servers joining and leaving their color by themselves.

A registration is a store key put under a lease (``registrations/<app>/<color>/<name>``)
with the server's address; it is part of desired state, so it reaches HAProxy
the way a ``server add`` does: at runtime, through the DRAIN gate (no traffic
before a passed check), without a reload, and rendered into the config so
reloads and restarts keep it. Renewing is refreshing the lease (the same PUT
again); a server that stops renewing expires with its lease — etcd ends it by
itself, the SQLite store sweeps it — and is drained and removed.

:meth:`RegistrationService.follow_expiries` audits each expiry (who registered
it, when it expired) and, on a single node, converges HAProxy at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from prism import names
from prism.core.keys import REGISTRATIONS, dump, registration_key
from prism.core.model import SLOT_PREFIX, split_hostport
from prism.core.state import Registration, serve_registrations
from prism.dataplane.change import Changes
from prism.errors import Conflict, InvalidInput, NotFound, PrismError, StoreError
from prism.store.desired import load_state
from prism.types import AuditDraft, Clock, Delete, Put, Store

__all__ = ["MAX_TTL_MS", "MIN_TTL_MS", "RegistrationService", "default_name"]

log = logging.getLogger(__name__)

MIN_TTL_MS = 1_000
MAX_TTL_MS = 86_400_000
#: audit actions whose delete of a registration key is deliberate, not an expiry
_DELIBERATE = frozenset({"deregister", "register.reverted"})


def default_name(host: str, port: int) -> str:
    """``10.0.0.5_8080``: a registration's name when the server gives none."""
    return names.check(names.SERVER_NAME, f"{host.lower()}_{port}", "server name")


class RegistrationService:
    """``prism register``, ``prism deregister`` and the registrations of an app."""

    def __init__(self, store: Store, changes: Changes, clock: Clock) -> None:
        self.store = store
        self.changes = changes
        self.clock = clock

    async def register(
        self,
        app_name: str,
        color_name: str,
        name: str | None,
        address: str,
        *,
        ttl_ms: int,
        actor: str,
    ) -> dict[str, Any]:
        """Register (or renew) ``address`` as server ``name`` of a color for ``ttl_ms``.

        A new one joins at runtime through the DRAIN gate and is refused (nothing
        kept) if its checks fail; the same address and TTL again only renews it.
        """
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int):
            raise InvalidInput(f"invalid ttl {ttl_ms!r}", hint="e.g. 10s")
        if not MIN_TTL_MS <= ttl_ms <= MAX_TTL_MS:
            raise InvalidInput(
                f"a registration's ttl is 1 s to 24 h, not {ttl_ms} ms", hint="e.g. --ttl 10s"
            )
        try:
            host, port = split_hostport(address)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        name = default_name(host, port) if name is None else name
        names.check(names.SERVER_NAME, name, "server name")
        if name.startswith(SLOT_PREFIX) and name.removeprefix(SLOT_PREFIX).isdigit():
            raise InvalidInput(
                f"server name {name!r} is reserved for DNS discovery slots",
                hint="register under another --name",
            )
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        color = app.color(color_name)
        if any(s.name == name for s in color.servers):
            raise Conflict(
                f"color {color.name!r} of {app.name!r} declares a server {name!r} itself",
                hint="register under another --name",
            )
        key = registration_key(app.name, color.name, name)
        existing = await self.store.get(key)
        if existing is not None:
            held = Registration.model_validate_json(existing.value)
            if held.address == f"{host}:{port}" and held.ttl_ms == ttl_ms:
                lease = await self.store.lease(held.lease, ttl_ms / 1000)
                try:
                    await lease.refresh()
                except StoreError as exc:
                    if not exc.detail.get("ended"):
                        raise
                else:
                    return self._answer(app.name, color.name, name, held, renewed=True)
        registration = Registration(
            host=host,
            port=port,
            ttl_ms=ttl_ms,
            lease=1,  # replaced below, once the lease exists
            by=actor,
            at=self.clock.now(),
        )
        joined = {**state.registrations}
        joined.setdefault(app.name, {})
        joined[app.name] = {**joined[app.name]}
        joined[app.name][color.name] = {**joined[app.name].get(color.name, {}), name: registration}
        await self.changes.plane.admit(state.served, serve_registrations(state.spec, joined))
        lease = await self.store.grant(ttl_ms / 1000)
        registration = registration.model_copy(update={"lease": lease.id})
        try:
            await self.changes.commit(
                [Put(key, dump(registration), lease=lease.id)],
                before={key: existing},
                audit=AuditDraft(
                    actor=actor,
                    action="register",
                    app=app.name,
                    detail={
                        "color": color.name,
                        "server": name,
                        "address": registration.address,
                        "ttl_ms": ttl_ms,
                    },
                ),
            )
        except PrismError:
            with contextlib.suppress(PrismError):
                await lease.revoke()
            raise
        if existing is not None:  # the key moved to the new lease; the old one holds nothing
            with contextlib.suppress(PrismError):
                old = json.loads(existing.value)["lease"]
                await (await self.store.lease(int(old), ttl_ms / 1000)).revoke()
        return self._answer(app.name, color.name, name, registration, renewed=False)

    async def deregister(
        self, app_name: str, color_name: str, name: str, *, actor: str
    ) -> dict[str, Any]:
        """Leave now: the server is drained and removed."""
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        color = app.color(color_name)
        names.check(names.SERVER_NAME, name, "server name")
        key = registration_key(app.name, color.name, name)
        entry = await self.store.get(key)
        if entry is None:
            raise NotFound(
                f"no server {name!r} is registered in {color.name!r} of {app.name!r}",
                hint=f"prism registrations {app.name} lists them",
            )
        held = Registration.model_validate_json(entry.value)
        applied = await self.changes.commit(
            [Delete(key)],
            before={key: entry},
            audit=AuditDraft(
                actor=actor,
                action="deregister",
                app=app.name,
                detail={"color": color.name, "server": name, "address": held.address},
            ),
        )
        with contextlib.suppress(PrismError):
            await (await self.store.lease(held.lease, held.ttl_ms / 1000)).revoke()
        return {
            "app": app.name,
            "color": color.name,
            "server": name,
            "address": held.address,
            **applied.report(),
        }

    async def list(self, app_name: str) -> list[dict[str, Any]]:
        """Every registration of an app, with the seconds left on its lease."""
        state = await load_state(self.store)
        app = state.spec.app(app_name)
        rows = []
        for color in app.colors:
            for name, registration in sorted(state.registered(app.name, color.name).items()):
                rows.append(
                    {
                        **self._answer(app.name, color.name, name, registration, renewed=None),
                        "ttl_left": await self.remaining(registration),
                    }
                )
        return rows

    async def remaining(self, registration: Registration) -> float | None:
        """Seconds left before the registration expires (None: it has)."""
        lease = await self.store.lease(registration.lease, registration.ttl_ms / 1000)
        try:
            return await lease.remaining()
        except StoreError:
            return None

    async def follow_expiries(self, *, converge: bool) -> None:
        """Audit every registration that expires (run by one control plane: the leader);
        with ``converge``, also converge the data plane at once (a single node, which
        has no agent watching)."""
        revision = await self.store.revision()
        known = {e.key: e.value for e in await self.store.list(REGISTRATIONS)}
        async for event in self.store.watch(REGISTRATIONS, from_revision=revision):
            if event.kind == "put" and event.value is not None:
                known[event.key] = event.value
                continue
            value = known.pop(event.key, None)
            app, color, name = event.key[len(REGISTRATIONS) :].split("/", 2)
            if await self._deliberate(app, event.revision):
                continue
            detail: dict[str, Any] = {"color": color, "server": name}
            if value is not None:
                held = Registration.model_validate_json(value)
                detail.update(address=held.address, registered_by=held.by, since=held.at)
            log.info("registration %s expired", event.key)
            with contextlib.suppress(PrismError):
                await self.store.record(
                    AuditDraft(actor="prism", action="registration.expired", app=app, detail=detail)
                )
            if converge:
                try:
                    await self.changes.converge()
                except PrismError as exc:
                    log.warning("removing expired %s: %s", event.key, exc)

    async def _deliberate(self, app: str, revision: int) -> bool:
        records = await self.store.audit(app=app, limit=50)
        return any(r.revision == revision and r.action in _DELIBERATE for r in records)

    @staticmethod
    def _answer(
        app: str, color: str, name: str, registration: Registration, *, renewed: bool | None
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "app": app,
            "color": color,
            "server": name,
            "address": registration.address,
            "ttl_ms": registration.ttl_ms,
            "registered_by": registration.by,
            "since": registration.at,
        }
        if renewed is not None:
            answer["renewed"] = renewed
        return answer
