"""The FastAPI application. Handlers are thin: they validate, call one of the
use-case services (:class:`prism.services.Services`), and return JSON.

What the OpenAPI document says is what the API accepts: path parameters and
bodies carry the patterns, lengths and ranges of :mod:`prism.names` and the
model; bodies are validated strictly (:mod:`.bodies`); every operation lists
the problem statuses it can answer (:mod:`.openapi`). Errors map in
:mod:`.problems`; credentials in :mod:`.auth`; size, time and request ids in
:mod:`.guard`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from prism import __version__, names
from prism.api.auth import Admin, Auth, Operator, Viewer
from prism.api.bodies import body_doc, json_body
from prism.api.dashboard import install_dashboard
from prism.api.guard import ApiLimits, Guard
from prism.api.metrics import CONTENT_TYPE_LATEST, Metrics
from prism.api.openapi import MUTATION, READ, answers, build
from prism.api.problems import install_handlers
from prism.api.ratelimit import RateLimit, RateLimiter
from prism.core.model import HOSTPORT_PATTERN, DurationMs, Spec, json_pattern
from prism.core.pem import PEM_LIMIT
from prism.core.tls import Tls
from prism.core.tokens import TOKEN_NAME, Role
from prism.release.plan import ReleasePlan
from prism.services import Services
from prism.services.releases import Steer

__all__ = ["ApiLimits", "create_app"]

NAME = json_pattern(names.NAME)
SERVER = json_pattern(names.SERVER_NAME)
# A pin key is read from a header, cookie or query parameter, or is an address or network.
PIN_KEY = json_pattern(rf"{names.PIN_KEY.pattern}|[0-9A-Fa-f.:]{{1,45}}/\d{{1,3}}")

AppName = Annotated[str, Path(description="app name", pattern=NAME, examples=["shop"])]
ColorName = Annotated[str, Path(description="color name", pattern=NAME, examples=["green"])]
ServerName = Annotated[str, Path(description="server name", pattern=SERVER, examples=["s1"])]
NodeName = Annotated[str, Path(description="fleet node name", pattern=NAME, examples=["lb-1"])]
PinKey = Annotated[
    str,
    Path(
        description="a tenant, user or cookie value, or an address or network (10.0.0.0/8)",
        pattern=PIN_KEY,
        examples=["acme"],
    ),
]
TokenName = Annotated[
    str, Path(description="token name", pattern=json_pattern(TOKEN_NAME), examples=["ci"])
]
Limit = Annotated[int, Query(ge=1, le=10_000, description="at most this many records")]

Color = Annotated[str, Field(pattern=NAME, examples=["green"])]
Reason = Annotated[
    str | None,
    Field(
        pattern=json_pattern(names.TEXT),
        description="why (kept in the audit log): printable ASCII, 1-256 characters",
        examples=["ship v2"],
    ),
]
Weight = Annotated[int, Field(ge=0, le=100)]
_CERT_PATH_SCHEMA = Tls.model_json_schema()["properties"]["certs"]["items"]
OwnerName = Annotated[
    str, Path(description="an app or a shared listener", pattern=NAME, examples=["shop"])
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReleaseRequest(_Body):
    to: Color = Field(description="color to move all traffic to")
    reason: Reason = None
    smoke: bool = Field(default=True, description="run the app's smoke check before switching")
    drain_timeout: DurationMs | None = Field(default=None, description="e.g. '30s'")


class WeightsRequest(_Body):
    weights: dict[Color, Weight] = Field(
        min_length=1,
        max_length=32,
        description="color -> 0..100, summing to 100",
        json_schema_extra={"additionalProperties": False, "propertyNames": {"pattern": NAME}},
    )
    reason: Reason = None
    smoke: bool = True


class PinRequest(_Body):
    color: Color
    rule: Annotated[str, Field(pattern=NAME)] | None = Field(
        default=None, description="default: the first rule"
    )
    reason: Reason = None


class ServerRequest(_Body):
    address: str = Field(pattern=HOSTPORT_PATTERN, description="host:port")
    name: Annotated[str, Field(pattern=SERVER)] | None = Field(
        default=None, description="default: the first free s1, s2, ..."
    )
    reason: Reason = None


class RegistrationRequest(_Body):
    address: str = Field(pattern=HOSTPORT_PATTERN, description="host:port of the server")
    ttl: DurationMs = Field(
        default=10_000, description="e.g. '10s' (1 s to 24 h); renew before it passes"
    )


class StartRequest(_Body):
    plan: ReleasePlan
    reason: Reason = None
    wait: bool = Field(default=False, description="answer once the release ends or waits")


class SteerRequest(_Body):
    color: Color | None = None
    full: bool = Field(default=False, description="promote: go straight to the final weight")
    reason: Reason = None


class RollbackRequest(_Body):
    reason: Reason = None
    smoke: bool = True


class CertRequest(_Body):
    pem: str = Field(
        min_length=1,
        max_length=PEM_LIMIT,
        description="one PEM bundle: the certificate, its chain in order, and its "
        "unencrypted private key (no empty line)",
    )
    file: str | None = Field(
        default=None,
        description="the certificate file to replace (default: the only one, or the one "
        "whose names the new certificate shares)",
        json_schema_extra=_CERT_PATH_SCHEMA,
    )
    reason: Reason = None


class TokenRequest(_Body):
    name: str = Field(
        pattern=json_pattern(TOKEN_NAME), description="the token's name: the actor it acts as"
    )
    role: Role = Field(description="viewer: read; operator: steer traffic; admin: everything")


class ApplyRequest(_Body):
    spec: Spec
    reason: Reason = None


BODIES: tuple[type[BaseModel], ...] = (
    ApplyRequest,
    ReleaseRequest,
    RollbackRequest,
    StartRequest,
    SteerRequest,
    WeightsRequest,
    PinRequest,
    ServerRequest,
    RegistrationRequest,
    CertRequest,
    TokenRequest,
)

_SHOP = {
    "name": "shop",
    "bind": "127.0.0.1:8080",
    "stable": "blue",
    "check": {"path": "/healthz", "inter_ms": "1s"},
    "colors": [
        {"name": "blue", "version": "v1", "servers": ["127.0.0.1:9001"]},
        {"name": "green", "version": "v2", "servers": ["127.0.0.1:9002"]},
    ],
}


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


class _App(FastAPI):
    """FastAPI, whose OpenAPI document also holds the body and problem schemas."""

    def openapi(self) -> dict[str, Any]:
        if not self.openapi_schema:
            self.openapi_schema = build(self, BODIES)
        return self.openapi_schema


def create_app(
    services: Services,
    token: str,
    *,
    limits: ApiLimits | None = None,
    rate: RateLimit | None = None,
) -> FastAPI:
    """The API app over a control plane's services (whose lifespan the caller owns).

    ``rate`` paces each token's changes (None: unlimited); ``limits`` bounds
    each request's size and arrival time.
    """
    app = _App(
        title="Prism",
        version=__version__,
        description="Safe releases on HAProxy: blue/green, canaries, rainbow deployments. "
        "Reads need no token; changes need `Authorization: Bearer <token>`. Every error is "
        "`application/problem+json` whose `type` names its class "
        "(`https://prism.dev/problems/...`).",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.services = services
    limiter = None if rate is None else RateLimiter(rate, time.monotonic)
    auth = Auth(token, services.tokens, limiter)
    app.state.auth = auth
    metrics = Metrics()
    app.state.metrics = metrics
    install_handlers(app)
    app.add_middleware(
        Guard, limits=limits or ApiLimits(), secrets=auth.secrets, observe=metrics.observe
    )

    install_dashboard(app, services, auth)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        """Prism's own metrics, in Prometheus's text format (see :mod:`.metrics`)."""
        services = _services(request)
        snapshot = replace(
            await services.telemetry.snapshot(), certificates=await services.certs.expiries()
        )
        return Response(metrics.expose(snapshot), media_type=CONTENT_TYPE_LATEST)

    v1 = "/api/v1"

    @app.get(f"{v1}/health", tags=["node"], responses=answers(*READ))
    async def health(request: Request) -> dict[str, Any]:
        """Whether HAProxy runs and desired state is applied."""
        return {"version": __version__, **await _services(request).status.health()}

    @app.get(f"{v1}/apps", tags=["apps"], responses=answers(*READ))
    async def list_apps(request: Request) -> list[dict[str, Any]]:
        """Every app with routing, colors, servers' exact health and latest release."""
        return await _services(request).status.status()

    @app.get(f"{v1}/apps/{{app}}", tags=["apps"], responses=answers(*READ, 404))
    async def get_app(request: Request, app: AppName) -> dict[str, Any]:
        """One app's status."""
        return (await _services(request).status.status(app))[0]

    @app.get(f"{v1}/config", tags=["config"], responses=answers(*READ))
    async def get_config(request: Request) -> dict[str, Any]:
        """The desired spec, as `prism apply` takes it."""
        state = await _services(request).spec.state()
        return {"revision": state.revision, "spec": state.spec.model_dump(mode="json")}

    @app.put(
        f"{v1}/config",
        tags=["config"],
        responses=answers(*MUTATION),
        openapi_extra=body_doc(ApplyRequest, {"shop": {"spec": {"apps": [_SHOP]}}}),
    )
    async def put_config(request: Request, who: Admin) -> dict[str, Any]:
        """Replace the whole spec: validated, checked with `haproxy -c`, persisted, applied.

        Limits: 2,000 apps, 256 listeners, 32 colors an app, 1,000 servers a color,
        8 pin rules an app, 10 MiB of JSON."""
        body = await json_body(request, ApplyRequest)
        return await _services(request).spec.apply(body.spec, actor=who, reason=body.reason)

    @app.post(
        f"{v1}/apps/{{app}}/release",
        tags=["releases"],
        responses=answers(*MUTATION),
        openapi_extra=body_doc(ReleaseRequest, {"to green": {"to": "green", "reason": "v2"}}),
    )
    async def release(
        request: Request,
        app: AppName,
        who: Operator,
    ) -> dict[str, Any]:
        """Blue/green: gate on the target color, switch all traffic, read back, drain.

        The one-step plan ``[weight: 100]``; answers when the release has ended.
        """
        body = await json_body(request, ReleaseRequest)
        record = await _services(request).releases.blue_green(
            app,
            body.to,
            smoke=body.smoke,
            drain_timeout_ms=body.drain_timeout,
            actor=who,
            reason=body.reason,
        )
        return record.summary()

    @app.post(
        f"{v1}/apps/{{app}}/rollback",
        tags=["releases"],
        responses=answers(*MUTATION),
        openapi_extra=body_doc(RollbackRequest, {"rollback": {"reason": "errors up"}}),
    )
    async def rollback(
        request: Request,
        app: AppName,
        who: Operator,
    ) -> dict[str, Any]:
        """Return to the weights before the last change, through the same gates."""
        body = await json_body(request, RollbackRequest)
        return await _services(request).routing.rollback(
            app, actor=who, reason=body.reason, smoke=body.smoke
        )

    @app.post(
        f"{v1}/apps/{{app}}/releases",
        tags=["releases"],
        responses=answers(*MUTATION),
        openapi_extra=body_doc(
            StartRequest,
            {
                "canary": {
                    "plan": {
                        "to": "green",
                        "steps": [{"weight": 10}, {"pause": "30s"}, {"weight": 100}],
                    },
                    "reason": "v2 canary",
                }
            },
        ),
    )
    async def start_release(
        request: Request,
        app: AppName,
        who: Operator,
    ) -> dict[str, Any]:
        """Start a progressive release: weight steps, pauses, analysis, webhooks.

        Weight steps must not go down; at most 100 steps and 16 webhooks."""
        body = await json_body(request, StartRequest)
        record = await _services(request).releases.start(
            app, body.plan, actor=who, reason=body.reason, wait=body.wait
        )
        return record.summary()

    @app.get(f"{v1}/apps/{{app}}/releases", tags=["releases"], responses=answers(*READ, 404))
    async def list_releases(request: Request, app: AppName) -> list[dict[str, Any]]:
        """The latest release of each color of the app, newest first."""
        records = await _services(request).releases.records(app)
        return [r.summary() for r in records]

    @app.get(
        f"{v1}/apps/{{app}}/releases/history", tags=["releases"], responses=answers(*READ, 404)
    )
    async def release_history(
        request: Request, app: AppName, limit: Limit = 100
    ) -> list[dict[str, Any]]:
        """Release events from the audit log, newest first."""
        return await _services(request).releases.history(app, limit)

    def steer(action: Steer, summary: str) -> None:
        async def steer_release(request: Request, app: AppName, who: Operator) -> dict[str, Any]:
            body = await json_body(request, SteerRequest)
            record = await _services(request).releases.steer(
                app, action, color=body.color, full=body.full, actor=who, reason=body.reason
            )
            return record.summary()

        app.post(
            f"{v1}/apps/{{app}}/releases/{action}",
            tags=["releases"],
            name=f"{action}_release",
            summary=f"{action.capitalize()} a release",
            description=summary + " ``color`` picks the release when several are active.",
            responses=answers(*MUTATION),
            openapi_extra=body_doc(SteerRequest, {action: {"reason": "by hand"}}),
        )(steer_release)

    steer("promote", "Go to the next step now (``full``: straight to the final weight).")
    steer("pause", "Hold the release at its current weight.")
    steer("resume", "Carry on with a paused release.")
    steer("abort", "Roll the release back: the target returns to its share before it.")

    @app.put(
        f"{v1}/apps/{{app}}/weights",
        tags=["routing"],
        responses=answers(*MUTATION),
        openapi_extra=body_doc(WeightsRequest, {"split": {"weights": {"blue": 90, "green": 10}}}),
    )
    async def put_weights(
        request: Request,
        app: AppName,
        who: Operator,
    ) -> dict[str, Any]:
        """Split traffic over any number of colors, in one atomic map change (no reload).

        The weights must sum to 100."""
        body = await json_body(request, WeightsRequest)
        return await _services(request).routing.shift(
            app, dict(body.weights), actor=who, reason=body.reason, smoke=body.smoke
        )

    @app.get(f"{v1}/apps/{{app}}/pins", tags=["routing"], responses=answers(*READ, 404))
    async def list_pins(request: Request, app: AppName) -> list[dict[str, str]]:
        """Pinned keys per rule, and their colors."""
        return await _services(request).pins.pins(app)

    @app.put(
        f"{v1}/apps/{{app}}/pins/{{key:path}}",
        tags=["routing"],
        responses=answers(*MUTATION),
        openapi_extra=body_doc(PinRequest, {"to red": {"color": "red", "rule": "tenant"}}),
    )
    async def put_pin(
        request: Request,
        app: AppName,
        key: PinKey,
        who: Operator,
    ) -> dict[str, Any]:
        """Pin a key (tenant, user, network) to a color; pins win over weights.

        The key must suit the rule's source (an address rule takes an address or network);
        at most 10,000 pinned keys an app."""
        body = await json_body(request, PinRequest)
        return await _services(request).pins.pin(
            app, key, body.color, rule=body.rule, actor=who, reason=body.reason
        )

    @app.delete(
        f"{v1}/apps/{{app}}/pins/{{key:path}}", tags=["routing"], responses=answers(*MUTATION)
    )
    async def delete_pin(
        request: Request,
        app: AppName,
        key: PinKey,
        who: Operator,
        rule: Annotated[str | None, Query(pattern=NAME, description="default: the first")] = None,
    ) -> dict[str, Any]:
        """Unpin a key; it returns to weighted routing."""
        return await _services(request).pins.unpin(app, key, rule=rule, actor=who, reason=None)

    @app.post(
        f"{v1}/apps/{{app}}/colors/{{color}}/servers",
        tags=["servers"],
        responses=answers(*MUTATION),
        openapi_extra=body_doc(ServerRequest, {"add": {"address": "127.0.0.1:9003"}}),
    )
    async def post_server(
        request: Request,
        app: AppName,
        color: ColorName,
        who: Operator,
    ) -> dict[str, Any]:
        """Add a server without reload; it takes traffic only after its checks pass."""
        body = await json_body(request, ServerRequest)
        return await _services(request).servers.add(
            app, color, body.address, name=body.name, actor=who, reason=body.reason
        )

    @app.delete(
        f"{v1}/apps/{{app}}/colors/{{color}}/servers/{{server}}",
        tags=["servers"],
        responses=answers(*MUTATION),
    )
    async def delete_server(
        request: Request, app: AppName, color: ColorName, server: ServerName, who: Operator
    ) -> dict[str, Any]:
        """Drain a server until its in-use connections are 0, then remove it, without reload."""
        return await _services(request).servers.remove(app, color, server, actor=who, reason=None)

    @app.put(
        f"{v1}/apps/{{app}}/colors/{{color}}/registrations/{{name}}",
        tags=["servers"],
        responses=answers(*MUTATION),
        openapi_extra=body_doc(
            RegistrationRequest, {"join": {"address": "127.0.0.1:9003", "ttl": "10s"}}
        ),
    )
    async def put_registration(
        request: Request, app: AppName, color: ColorName, name: ServerName, who: Operator
    ) -> dict[str, Any]:
        """Register (or renew: the same PUT again) a server into a color for ``ttl``.

        A new one joins without reload through the DRAIN gate; it leaves by itself
        (drained, removed) when it stops renewing."""
        body = await json_body(request, RegistrationRequest)
        return await _services(request).registrations.register(
            app, color, name, body.address, ttl_ms=body.ttl, actor=who
        )

    @app.delete(
        f"{v1}/apps/{{app}}/colors/{{color}}/registrations/{{name}}",
        tags=["servers"],
        responses=answers(*MUTATION),
    )
    async def delete_registration(
        request: Request, app: AppName, color: ColorName, name: ServerName, who: Operator
    ) -> dict[str, Any]:
        """Deregister a server now: it is drained and removed, without reload."""
        return await _services(request).registrations.deregister(app, color, name, actor=who)

    @app.get(f"{v1}/apps/{{app}}/registrations", tags=["servers"], responses=answers(*READ, 404))
    async def list_registrations(request: Request, app: AppName) -> list[dict[str, Any]]:
        """Every server registered into the app's colors, with the seconds left on each."""
        return await _services(request).registrations.list(app)

    @app.get(f"{v1}/nodes", tags=["nodes"], responses=answers(*READ))
    async def list_nodes(request: Request) -> list[dict[str, Any]]:
        """Every HAProxy node: state, address, applied revision, lag, heartbeat, HAProxy,
        drift and last error."""
        return await _services(request).status.nodes()

    @app.delete(f"{v1}/nodes/{{node}}", tags=["nodes"], responses=answers(*MUTATION))
    async def forget_node(request: Request, node: NodeName, who: Admin) -> dict[str, Any]:
        """Forget a lost node: releases stop waiting for it (it rejoins by starting again)."""
        return await _services(request).status.forget(node, actor=who)

    @app.get(f"{v1}/dns-weights", tags=["apps"], responses=answers(*READ, 404))
    async def dns_weights(
        request: Request,
        app: Annotated[
            str | None, Query(pattern=NAME, description="one app (default: every app)")
        ] = None,
        format: Annotated[
            Literal["json", "route53"], Query(description="route53: a change batch")
        ] = "json",
    ) -> Any:
        """Per app and node, the share of healthy servers of the colors carrying traffic
        (0..100); ``format=route53``: a change batch of weighted records, one per node."""
        services = _services(request)
        if format == "route53":
            return await services.dns.route53(app)
        return await services.dns.weights(app)

    @app.get(f"{v1}/certificates", tags=["tls"], responses=answers(*READ))
    async def list_certificates(request: Request) -> list[dict[str, Any]]:
        """Every TLS listener and app: its certificates, and what HAProxy serves from each
        file (subject, names, serial, expiry, a warning 30 days ahead)."""
        return await _services(request).certs.list()

    @app.put(
        f"{v1}/certificates/{{name}}",
        tags=["tls"],
        responses=answers(*MUTATION),
        openapi_extra=body_doc(
            CertRequest,
            {
                "rotate": {
                    "pem": "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"
                    "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n",
                    "reason": "renewal",
                }
            },
        ),
    )
    async def put_certificate(request: Request, name: OwnerName, who: Admin) -> dict[str, Any]:
        """Replace a TLS certificate of an app or shared listener without a reload.

        The bundle is checked first (key matches, chain in order, valid now, nothing
        but PEM lines); then written to its file, swapped in (`set ssl cert`, `commit
        ssl cert`), read back and audited. A refused one changes nothing."""
        body = await json_body(request, CertRequest)
        return await _services(request).certs.set(
            name, body.pem, file=body.file, actor=who, reason=body.reason
        )

    @app.get(f"{v1}/apps/{{app}}/history", tags=["apps"], responses=answers(*READ, 404))
    async def app_history(
        request: Request, app: AppName, limit: Limit = 50
    ) -> list[dict[str, Any]]:
        """The app's audit log, newest first."""
        return await _services(request).status.history(app, limit)

    @app.get(f"{v1}/history", tags=["node"], responses=answers(*READ))
    async def history(request: Request, limit: Limit = 50) -> list[dict[str, Any]]:
        """The whole audit log, newest first."""
        return await _services(request).status.history(None, limit)

    @app.get(f"{v1}/whoami", tags=["tokens"], responses=answers(*READ, 401))
    async def whoami(caller: Viewer) -> dict[str, Any]:
        """The name and role of the token presented."""
        return {"name": caller.name, "role": caller.role}

    @app.get(f"{v1}/tokens", tags=["tokens"], responses=answers(*READ, 401, 403, 429))
    async def list_tokens(request: Request, who: Admin) -> list[dict[str, Any]]:
        """Every named token: name, role, when and by whom it was made (never a secret)."""
        del who
        return await _services(request).tokens.list()

    @app.post(
        f"{v1}/tokens",
        tags=["tokens"],
        responses=answers(*MUTATION),
        openapi_extra=body_doc(TokenRequest, {"ci": {"name": "ci", "role": "operator"}}),
    )
    async def create_token(request: Request, who: Admin) -> dict[str, Any]:
        """Make a named token; the answer's ``secret`` is shown this once and never stored
        (only its SHA-256 is)."""
        body = await json_body(request, TokenRequest)
        return await _services(request).tokens.create(body.name, body.role, actor=who)

    @app.delete(f"{v1}/tokens/{{name}}", tags=["tokens"], responses=answers(*MUTATION))
    async def revoke_token(request: Request, name: TokenName, who: Admin) -> dict[str, Any]:
        """Revoke a named token: every control plane refuses it from its next request (401)."""
        return await _services(request).tokens.revoke(name, actor=who)

    return app
