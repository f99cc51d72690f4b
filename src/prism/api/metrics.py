"""Prism's own Prometheus metrics, served at ``/metrics`` on the API port.

Everything but the API's latency is read at scrape time from one
:class:`~prism.services.telemetry.Snapshot` (so a scrape shows one moment,
and nothing is kept in between). Names::

    prism_app_weight{app,color}                     percent of new users routed to the color
    prism_app_active_color{app,color}               1 for the color serving as active
    prism_color_info{app,color,version}             1, labelled with the version
    prism_release_phase{app,color,phase}            1 for the phase of each color's latest release
    prism_release_step{app,color}                   the step index that release is at
    prism_release_reading{app,color,reading}        its latest gate and analysis readings
    prism_backend_requests_total{app,color}         HTTP answers HAProxy counted (all nodes)
    prism_backend_5xx_total{app,color}              of which 5xx
    prism_backend_response_ms{app,color}            HAProxy's mean server response time
    prism_request_log_requests_total{app,color,class}   requests in HAProxy's request log, by
                                                    status class (1xx..5xx, none)
    prism_request_log_response_seconds{app,color}   a histogram of their response times (%Ta)
    prism_server_up{app,color,server,node}          1 if the server is UP on that node
    prism_desired_revision                          the store's desired-state revision
    prism_applied_revision{node}                    what each node applied
    prism_node_drift{node}                          1 while a node's read-back disagrees
    prism_drift_repairs_total                       maps found changed behind Prism and restored
    prism_tls_cert_expiry_timestamp_seconds{owner,file}   when each served certificate lapses
    prism_api_request_duration_seconds{method,route,status}   a histogram
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from prism.services.telemetry import Snapshot

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _SnapshotCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        if snap is None:
            return
        yield from _state_metrics(snap)
        yield from _release_metrics(snap)
        yield from _traffic_metrics(snap)
        yield from _log_metrics(snap)
        yield from _node_metrics(snap)
        yield from _cert_metrics(snap)


def _state_metrics(snap: Snapshot) -> Iterator[Metric]:
    weight = GaugeMetricFamily(
        "prism_app_weight", "Percent of new users routed to the color", labels=["app", "color"]
    )
    active = GaugeMetricFamily(
        "prism_app_active_color", "1 for the app's active color", labels=["app", "color"]
    )
    info = GaugeMetricFamily(
        "prism_color_info", "A color and its version", labels=["app", "color", "version"]
    )
    for app in snap.state.spec.apps:
        routing = snap.state.routing_for(app)
        for color in app.colors:
            weight.add_metric([app.name, color.name], routing.weights.get(color.name, 0))
            active.add_metric([app.name, color.name], 1 if color.name == routing.active else 0)
            info.add_metric([app.name, color.name, color.version], 1)
    yield weight
    yield active
    yield info
    revision = GaugeMetricFamily("prism_desired_revision", "The desired state's revision")
    revision.add_metric([], snap.state.revision)
    yield revision


def _release_metrics(snap: Snapshot) -> Iterator[Metric]:
    phase = GaugeMetricFamily(
        "prism_release_phase",
        "1 for the phase of each color's latest release",
        labels=["app", "color", "phase"],
    )
    step = GaugeMetricFamily(
        "prism_release_step", "The step the latest release is at", labels=["app", "color"]
    )
    reading = GaugeMetricFamily(
        "prism_release_reading",
        "The latest gate and analysis readings of the latest release",
        labels=["app", "color", "reading"],
    )
    for record in snap.releases:
        labels = [record.app, record.to_color]
        phase.add_metric([*labels, str(record.phase)], 1)
        step.add_metric(labels, record.step)
        for name, value in _readings(record.steps[-1].readings if record.steps else {}):
            reading.add_metric([*labels, name], value)
    yield phase
    yield step
    yield reading


def _readings(readings: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numeric readings, flattened (``target_ratio_5xx``); text and lists are left out."""
    for key, value in sorted(readings.items()):
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            yield name, 1.0 if value else 0.0
        elif isinstance(value, int | float):
            yield name, float(value)
        elif isinstance(value, dict) and len(prefix) < 64:
            yield from _readings(value, f"{name}_")


def _traffic_metrics(snap: Snapshot) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "prism_backend_requests",
        "HTTP answers HAProxy counted for the color (summed over nodes)",
        labels=["app", "color"],
    )
    errors = CounterMetricFamily(
        "prism_backend_5xx", "5xx answers HAProxy counted for the color", labels=["app", "color"]
    )
    response = GaugeMetricFamily(
        "prism_backend_response_ms",
        "HAProxy's mean server response time for the color",
        labels=["app", "color"],
    )
    up = GaugeMetricFamily(
        "prism_server_up",
        "1 if the server is UP on the node",
        labels=["app", "color", "server", "node"],
    )
    for backend, counters in sorted(snap.counters.items()):
        app, _, color = backend.partition(".")
        if not color:
            continue
        requests.add_metric([app, color], counters.requests)
        errors.add_metric([app, color], counters.errors_5xx)
        response.add_metric([app, color], counters.mean_response_ms)
    for server in snap.servers:
        app, _, color = server.backend.partition(".")
        if color and not server.absent:
            up.add_metric(
                [app, color, server.server, server.node or "local"],
                1 if server.status == "UP" else 0,
            )
    yield requests
    yield errors
    yield response
    yield up


#: the request log's histogram bounds, in seconds (the log's own buckets are 2% wide)
_LOG_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")


def _log_metrics(snap: Snapshot) -> Iterator[Metric]:
    """Each color's request log (when the data plane receives one), since it started."""
    requests = CounterMetricFamily(
        "prism_request_log_requests",
        "Requests in HAProxy's request log for the color, by status class (sampled 1:N "
        "when sampling is on)",
        labels=["app", "color", "class"],
    )
    seconds = HistogramMetricFamily(
        "prism_request_log_response_seconds",
        "Response times (%Ta) of the logged requests of the color",
        labels=["app", "color"],
    )
    for backend, counters in sorted(snap.counters.items()):
        app, _, color = backend.partition(".")
        log = counters.log
        if not color or log is None:
            continue
        for name, count in zip(_CLASSES, log.classes, strict=True):
            requests.add_metric([app, color, name], count)
        below = log.at_most(b * 1000 for b in _LOG_BOUNDS)
        buckets = [(repr(b), float(n)) for b, n in zip(_LOG_BOUNDS, below, strict=True)]
        buckets.append(("+Inf", float(log.timed)))
        seconds.add_metric([app, color], buckets, log.total_ms() / 1000)
    yield requests
    yield seconds


def _node_metrics(snap: Snapshot) -> Iterator[Metric]:
    applied = GaugeMetricFamily(
        "prism_applied_revision", "The revision the node applied", labels=["node"]
    )
    drift = GaugeMetricFamily(
        "prism_node_drift", "1 while the node's read-back disagrees", labels=["node"]
    )
    for row in snap.nodes:
        if "applied_revision" in row:
            applied.add_metric([row["name"]], int(row["applied_revision"]))
            drift.add_metric([row["name"]], 1 if row.get("drift") else 0)
    yield applied
    yield drift
    repairs = CounterMetricFamily(
        "prism_drift_repairs", "Maps found changed behind Prism's back and restored"
    )
    repairs.add_metric([], snap.drift_repairs)
    yield repairs


def _cert_metrics(snap: Snapshot) -> Iterator[Metric]:
    expiry = GaugeMetricFamily(
        "prism_tls_cert_expiry_timestamp_seconds",
        "When the certificate HAProxy serves from the file lapses (Unix time)",
        labels=["owner", "file"],
    )
    for owner, file, at in snap.certificates:
        expiry.add_metric([owner, file], at)
    yield expiry


class Metrics:
    """The API's latency histogram, and the exposition of a snapshot."""

    def __init__(self) -> None:
        # one registry per app (never the process-wide default): apps in tests stay apart
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram(
            "prism_api_request_duration_seconds",
            "API requests by method, route template and status",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._collector = _SnapshotCollector()
        self.registry.register(self._collector)

    #: streams last as long as a browser stays: not a request's latency
    unobserved: frozenset[str] = frozenset({"/api/v1/events"})

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if route in self.unobserved:
            return
        self.latency.labels(method, route, str(status)).observe(seconds)

    def expose(self, snapshot: Snapshot) -> bytes:
        """The text exposition format; no await in between, so scrapes never mix."""
        self._collector.snapshot = snapshot
        try:
            return generate_latest(self.registry)
        finally:
            self._collector.snapshot = None
