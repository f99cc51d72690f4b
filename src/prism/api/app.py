"""The FastAPI application. Handlers are thin: they validate, call one of the
use-case services (:class:`prism.services.Services`), and return JSON.
Errors map in :mod:`problems`.
"""

from __future__ import annotations

import hmac
import re
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from prism import __version__, names
from prism.api.problems import install_handlers
from prism.core.model import DurationMs, Spec
from prism.errors import InvalidInput, Unauthorized
from prism.release.plan import ReleasePlan
from prism.services import Services

__all__ = ["create_app"]

_ACTOR = re.compile(r"[A-Za-z0-9._@-]{1,64}", re.ASCII)
AppName = Annotated[str, Path(description="app name", max_length=64)]


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(description="color to move all traffic to", max_length=64)
    reason: str | None = Field(default=None, max_length=500)
    smoke: bool = Field(default=True, description="run the app's smoke check before switching")
    drain_timeout: DurationMs | None = Field(default=None, description="e.g. '30s'")


class WeightsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: dict[str, StrictInt] = Field(description="color -> 0..100, summing to 100")
    reason: str | None = Field(default=None, max_length=500)
    smoke: bool = True


class PinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    color: str = Field(max_length=64)
    rule: str | None = Field(default=None, max_length=64, description="default: the first rule")
    reason: str | None = Field(default=None, max_length=500)


class ServerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(max_length=300, description="host:port")
    name: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=500)


class RegistrationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(max_length=300, description="host:port of the server")
    ttl: DurationMs = Field(default=10_000, description="e.g. '10s'; renew before it passes")


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: ReleasePlan
    reason: str | None = Field(default=None, max_length=500)
    wait: bool = Field(default=False, description="answer once the release ends or waits")


class SteerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    color: str | None = Field(default=None, max_length=64)
    full: bool = Field(default=False, description="promote: go straight to the final weight")
    reason: str | None = Field(default=None, max_length=500)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)
    smoke: bool = True


class ApplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: Spec
    reason: str | None = Field(default=None, max_length=500)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _name(value: str, what: str) -> str:
    return names.check(names.NAME, value, what)


def _reason(value: str | None) -> str | None:
    if value is not None and names.TEXT.fullmatch(value) is None:
        raise InvalidInput("reason must be printable ASCII text of at most 256 characters")
    return value


def actor(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_prism_actor: Annotated[str | None, Header()] = None,
) -> str:
    """Mutations need the bearer token; the actor header names who acts (audit)."""
    token: str = request.app.state.token
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized(
            "a valid bearer token is required for changes",
            hint="the token is in the state directory's 'token' file, or set PRISM_TOKEN",
        )
    if x_prism_actor is None:
        return "api"
    if _ACTOR.fullmatch(x_prism_actor) is None:
        raise InvalidInput("X-Prism-Actor must be 1-64 characters of letters, digits . _ @ -")
    return x_prism_actor


Actor = Annotated[str, Depends(actor)]


def create_app(services: Services, token: str) -> FastAPI:
    """The API app over a control plane's services (whose lifespan the caller owns)."""
    app = FastAPI(
        title="Prism",
        version=__version__,
        description="Safe releases on HAProxy: blue/green, canaries, rainbow deployments.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.services = services
    app.state.token = token
    install_handlers(app)

    v1 = "/api/v1"

    @app.get(f"{v1}/health", tags=["node"])
    async def health(request: Request) -> dict[str, Any]:
        """Whether HAProxy runs and desired state is applied."""
        return {"version": __version__, **await _services(request).status.health()}

    @app.get(f"{v1}/apps", tags=["apps"])
    async def list_apps(request: Request) -> list[dict[str, Any]]:
        """Every app with routing, colors, servers' exact health and latest release."""
        return await _services(request).status.status()

    @app.get(f"{v1}/apps/{{app}}", tags=["apps"])
    async def get_app(request: Request, app: AppName) -> dict[str, Any]:
        """One app's status."""
        return (await _services(request).status.status(_name(app, "app name")))[0]

    @app.get(f"{v1}/config", tags=["config"])
    async def get_config(request: Request) -> dict[str, Any]:
        """The desired spec, as `prism apply` takes it."""
        state = await _services(request).spec.state()
        return {"revision": state.revision, "spec": state.spec.model_dump(mode="json")}

    @app.put(f"{v1}/config", tags=["config"])
    async def put_config(request: Request, body: ApplyRequest, who: Actor) -> dict[str, Any]:
        """Replace the whole spec: validated, checked with `haproxy -c`, persisted, applied."""
        return await _services(request).spec.apply(
            body.spec, actor=who, reason=_reason(body.reason)
        )

    @app.post(f"{v1}/apps/{{app}}/release", tags=["releases"])
    async def release(
        request: Request, app: AppName, body: ReleaseRequest, who: Actor
    ) -> dict[str, Any]:
        """Blue/green: gate on the target color, switch all traffic, read back, drain.

        The one-step plan ``[weight: 100]``; answers when the release has ended.
        """
        record = await _services(request).releases.blue_green(
            _name(app, "app name"),
            _name(body.to, "color"),
            smoke=body.smoke,
            drain_timeout_ms=body.drain_timeout,
            actor=who,
            reason=_reason(body.reason),
        )
        return record.summary()

    @app.post(f"{v1}/apps/{{app}}/rollback", tags=["releases"])
    async def rollback(
        request: Request, app: AppName, body: RollbackRequest, who: Actor
    ) -> dict[str, Any]:
        """Return to the weights before the last change, through the same gates."""
        return await _services(request).routing.rollback(
            _name(app, "app name"), actor=who, reason=_reason(body.reason), smoke=body.smoke
        )

    @app.post(f"{v1}/apps/{{app}}/releases", tags=["releases"])
    async def start_release(
        request: Request, app: AppName, body: StartRequest, who: Actor
    ) -> dict[str, Any]:
        """Start a progressive release: weight steps, pauses, analysis, webhooks."""
        record = await _services(request).releases.start(
            _name(app, "app name"),
            body.plan,
            actor=who,
            reason=_reason(body.reason),
            wait=body.wait,
        )
        return record.summary()

    @app.get(f"{v1}/apps/{{app}}/releases", tags=["releases"])
    async def list_releases(request: Request, app: AppName) -> list[dict[str, Any]]:
        """The latest release of each color of the app, newest first."""
        records = await _services(request).releases.records(_name(app, "app name"))
        return [r.summary() for r in records]

    @app.get(f"{v1}/apps/{{app}}/releases/history", tags=["releases"])
    async def release_history(
        request: Request, app: AppName, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[dict[str, Any]]:
        """Release events from the audit log, newest first."""
        return await _services(request).releases.history(_name(app, "app name"), limit)

    @app.post(f"{v1}/apps/{{app}}/releases/{{action}}", tags=["releases"])
    async def steer_release(
        request: Request,
        app: AppName,
        action: Literal["promote", "pause", "resume", "abort"],
        body: SteerRequest,
        who: Actor,
    ) -> dict[str, Any]:
        """Promote (``full``: straight to the final weight), pause, resume or abort
        (roll back) a release; ``color`` picks one when several are active."""
        record = await _services(request).releases.steer(
            _name(app, "app name"),
            action,
            color=None if body.color is None else _name(body.color, "color"),
            full=body.full,
            actor=who,
            reason=_reason(body.reason),
        )
        return record.summary()

    @app.put(f"{v1}/apps/{{app}}/weights", tags=["routing"])
    async def put_weights(
        request: Request, app: AppName, body: WeightsRequest, who: Actor
    ) -> dict[str, Any]:
        """Split traffic over any number of colors, in one atomic map change (no reload)."""
        weights = {_name(c, "color"): w for c, w in body.weights.items()}
        return await _services(request).routing.shift(
            _name(app, "app name"),
            weights,
            actor=who,
            reason=_reason(body.reason),
            smoke=body.smoke,
        )

    @app.get(f"{v1}/apps/{{app}}/pins", tags=["routing"])
    async def list_pins(request: Request, app: AppName) -> list[dict[str, str]]:
        """Pinned keys per rule, and their colors."""
        return await _services(request).pins.pins(_name(app, "app name"))

    @app.put(f"{v1}/apps/{{app}}/pins/{{key:path}}", tags=["routing"])
    async def put_pin(
        request: Request, app: AppName, key: str, body: PinRequest, who: Actor
    ) -> dict[str, Any]:
        """Pin a key (tenant, user, network) to a color; pins win over weights."""
        return await _services(request).pins.pin(
            _name(app, "app name"),
            key,
            _name(body.color, "color"),
            rule=None if body.rule is None else _name(body.rule, "pin rule"),
            actor=who,
            reason=_reason(body.reason),
        )

    @app.delete(f"{v1}/apps/{{app}}/pins/{{key:path}}", tags=["routing"])
    async def delete_pin(
        request: Request,
        app: AppName,
        key: str,
        who: Actor,
        rule: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        """Unpin a key; it returns to weighted routing."""
        return await _services(request).pins.unpin(
            _name(app, "app name"),
            key,
            rule=None if rule is None else _name(rule, "pin rule"),
            actor=who,
            reason=None,
        )

    @app.post(f"{v1}/apps/{{app}}/colors/{{color}}/servers", tags=["servers"])
    async def post_server(
        request: Request, app: AppName, color: str, body: ServerRequest, who: Actor
    ) -> dict[str, Any]:
        """Add a server without reload; it takes traffic only after its checks pass."""
        return await _services(request).servers.add(
            _name(app, "app name"),
            _name(color, "color"),
            body.address,
            name=body.name,
            actor=who,
            reason=_reason(body.reason),
        )

    @app.delete(f"{v1}/apps/{{app}}/colors/{{color}}/servers/{{server}}", tags=["servers"])
    async def delete_server(
        request: Request, app: AppName, color: str, server: str, who: Actor
    ) -> dict[str, Any]:
        """Drain a server until its in-use connections are 0, then remove it, without reload."""
        return await _services(request).servers.remove(
            _name(app, "app name"), _name(color, "color"), server, actor=who, reason=None
        )

    @app.put(f"{v1}/apps/{{app}}/colors/{{color}}/registrations/{{name}}", tags=["servers"])
    async def put_registration(
        request: Request,
        app: AppName,
        color: str,
        name: str,
        body: RegistrationRequest,
        who: Actor,
    ) -> dict[str, Any]:
        """Register (or renew: the same PUT again) a server into a color for ``ttl``.

        A new one joins without reload through the DRAIN gate; it leaves by itself
        (drained, removed) when it stops renewing."""
        return await _services(request).registrations.register(
            _name(app, "app name"),
            _name(color, "color"),
            names.check(names.SERVER_NAME, name, "server name"),
            body.address,
            ttl_ms=body.ttl,
            actor=who,
        )

    @app.delete(f"{v1}/apps/{{app}}/colors/{{color}}/registrations/{{name}}", tags=["servers"])
    async def delete_registration(
        request: Request, app: AppName, color: str, name: str, who: Actor
    ) -> dict[str, Any]:
        """Deregister a server now: it is drained and removed, without reload."""
        return await _services(request).registrations.deregister(
            _name(app, "app name"),
            _name(color, "color"),
            names.check(names.SERVER_NAME, name, "server name"),
            actor=who,
        )

    @app.get(f"{v1}/apps/{{app}}/registrations", tags=["servers"])
    async def list_registrations(request: Request, app: AppName) -> list[dict[str, Any]]:
        """Every server registered into the app's colors, with the seconds left on each."""
        return await _services(request).registrations.list(_name(app, "app name"))

    @app.get(f"{v1}/nodes", tags=["nodes"])
    async def list_nodes(request: Request) -> list[dict[str, Any]]:
        """Every HAProxy node: state, address, applied revision, lag, heartbeat, HAProxy,
        drift and last error."""
        return await _services(request).status.nodes()

    @app.delete(f"{v1}/nodes/{{node}}", tags=["nodes"])
    async def forget_node(
        request: Request, node: Annotated[str, Path(max_length=64)], who: Actor
    ) -> dict[str, Any]:
        """Forget a lost node: releases stop waiting for it (it rejoins by starting again)."""
        return await _services(request).status.forget(_name(node, "node name"), actor=who)

    @app.get(f"{v1}/dns-weights", tags=["apps"])
    async def dns_weights(
        request: Request,
        app: Annotated[str | None, Query(max_length=64)] = None,
        format: Literal["json", "route53"] = "json",
    ) -> Any:
        """Per app and node, the share of healthy servers of the colors carrying traffic
        (0..100); ``format=route53``: a change batch of weighted records, one per node."""
        services = _services(request)
        name = None if app is None else _name(app, "app name")
        if format == "route53":
            return await services.dns.route53(name)
        return await services.dns.weights(name)

    @app.get(f"{v1}/apps/{{app}}/history", tags=["apps"])
    async def app_history(
        request: Request, app: AppName, limit: Annotated[int, Query(ge=1, le=10_000)] = 50
    ) -> list[dict[str, Any]]:
        """The app's audit log, newest first."""
        return await _services(request).status.history(_name(app, "app name"), limit)

    @app.get(f"{v1}/history", tags=["node"])
    async def history(
        request: Request, limit: Annotated[int, Query(ge=1, le=10_000)] = 50
    ) -> list[dict[str, Any]]:
        """The whole audit log, newest first."""
        return await _services(request).status.history(None, limit)

    return app
