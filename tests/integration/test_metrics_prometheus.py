"""A real Prometheus scrapes a real `prism serve`'s /metrics and answers queries on it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from prism.testing.processes import Backend, free_port
from prism.testing.prometheus import running_prometheus
from prism.testing.wait import wait_for
from tests.conftest import Server, shop_spec, wait_until_up

# the README's alert queries: they parse, and a healthy app trips none of them
ALERTS = [
    "sum by (app, color) (rate(prism_backend_5xx_total[5m]))"
    " / sum by (app, color) (rate(prism_backend_requests_total[5m])) > 0.05"
    " and on (app, color) prism_app_weight > 0",
    "sum by (app, color) (prism_server_up) == 0 and on (app, color) prism_app_weight > 0",
    "scalar(max(prism_desired_revision)) - prism_applied_revision > 0 or prism_node_drift == 1",
]

pytestmark = [
    pytest.mark.haproxy,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus"),
]


@pytest.fixture
def shop(server: Server, color_backends: dict[str, Backend]) -> dict[str, Any]:
    spec = shop_spec(free_port(), color_backends)
    reply = server.api("PUT", "/config", {"spec": spec, "reason": "set up"})
    assert reply.status_code == 200, reply.text
    wait_until_up(server, "shop", ["blue", "green"])
    return spec


def test_prometheus_scrapes_the_weight_series(
    server: Server, shop: dict[str, Any], tmp_path: Path
) -> None:
    """Prometheus's query API returns Prism's weight per color of the app, and follows a shift."""
    shifted = server.api("PUT", "/apps/shop/weights", {"weights": {"blue": 70, "green": 30}})
    assert shifted.status_code == 200, shifted.text
    target = urlsplit(server.url).netloc
    with running_prometheus(tmp_path / "prometheus", target) as prometheus:

        def weights() -> dict[str, float]:
            rows = prometheus.query('prism_app_weight{app="shop"}')
            return {row["metric"]["color"]: float(row["value"][1]) for row in rows}

        # the first scrape lands a few seconds after start (target sync)
        seen = wait_for(weights, timeout=30, interval=0.5, what="the weight series")
        assert seen == {"blue": 70.0, "green": 30.0, "red": 0.0}
        up = prometheus.query('up{job="prism"}')
        assert [float(r["value"][1]) for r in up] == [1.0]
        healthy = prometheus.query('sum(prism_server_up{app="shop",color="green"})')
        assert float(healthy[0]["value"][1]) >= 1
        latency = prometheus.query("prism_api_request_duration_seconds_count")
        assert any(r["metric"]["route"] == "/api/v1/apps/{app}/weights" for r in latency)
        for alert in ALERTS:
            assert prometheus.query(alert) == [], alert
