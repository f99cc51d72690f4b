"""The use cases Prism offers, one small service each; the API calls only these.

* :mod:`.spec` — read and apply the whole desired spec;
* :mod:`.routing` — shift weights, roll back;
* :mod:`.pins` — pin keys to colors;
* :mod:`.servers` — add and remove servers at runtime;
* :mod:`.registrations` — servers registering themselves for a TTL;
* :mod:`.releases` — start and steer releases (the engine drives them);
* :mod:`.status` — app status, node health, the audit log;
* :mod:`.certs` — replace a TLS certificate at runtime; what each TLS listener serves;
* :mod:`.dns` — health-weighted DNS weights per node, and their Route 53 batch;
* :mod:`.tokens` — named API tokens with roles (digests in the store);
* :mod:`.telemetry` — snapshots for ``/metrics``, sampled rates for the dashboard.

Every change goes through :class:`prism.dataplane.change.Changes` (persist,
converge, revert if refused); nothing here knows whether the data plane is
one HAProxy or a fleet, or anything about HTTP.

May import: ``prism.release``, ``prism.dataplane`` (its interface and the change
path), ``prism.store`` (desired-state reads), ``prism.core``, top-level modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from prism.services.certs import CertService
from prism.services.dns import DnsService
from prism.services.pins import PinService
from prism.services.registrations import RegistrationService
from prism.services.releases import ReleaseService
from prism.services.routing import RoutingService
from prism.services.servers import ServerService
from prism.services.spec import SpecService
from prism.services.status import StatusService
from prism.services.telemetry import TelemetryService
from prism.services.tokens import TokenService

__all__ = [
    "CertService",
    "DnsService",
    "PinService",
    "RegistrationService",
    "ReleaseService",
    "RoutingService",
    "ServerService",
    "Services",
    "SpecService",
    "StatusService",
    "TelemetryService",
    "TokenService",
]


@dataclass(frozen=True)
class Services:
    """Every use case of one control plane, as the API sees it."""

    spec: SpecService
    routing: RoutingService
    pins: PinService
    servers: ServerService
    releases: ReleaseService
    status: StatusService
    registrations: RegistrationService
    dns: DnsService
    certs: CertService
    tokens: TokenService
    telemetry: TelemetryService
