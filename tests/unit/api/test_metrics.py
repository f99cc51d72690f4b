"""``/metrics`` over the real API app: Prism's own series, in Prometheus's text format."""

from __future__ import annotations

import functools

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prism.core.readings import Counters
from prism.core.requestlog import Recorder
from tests.unit.api.conftest import Api


async def _samples(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = await api.client.get("http://prism.test/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _at(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_weights_active_color_and_revisions(api: Api) -> None:
    """A shift shows in the weight series; the active color and revisions are there."""
    before = await _samples(api)
    assert _at(before, "prism_app_weight", app="shop", color="blue") == 100
    assert _at(before, "prism_app_active_color", app="shop", color="blue") == 1
    infos = [dict(labels) for name, labels in before if name == "prism_color_info"]
    assert {(i["app"], i["color"]) for i in infos} == {
        ("shop", c) for c in ("blue", "green", "red")
    }
    assert all(i["version"] for i in infos)
    shifted = await api.change("PUT", "/apps/shop/weights", {"weights": {"blue": 80, "green": 20}})
    assert shifted.status_code == 200
    after = await _samples(api)
    assert _at(after, "prism_app_weight", app="shop", color="green") == 20
    assert _at(after, "prism_app_weight", app="shop", color="blue") == 80
    revision = _at(after, "prism_desired_revision")
    assert revision > _at(before, "prism_desired_revision")
    assert _at(after, "prism_applied_revision", node="fake") == revision


async def test_counters_and_server_health_as_haproxy_reported_them(api: Api) -> None:
    """Requests, 5xx and response time per color; each server's UP per node."""
    api.plane.add_requests("shop.green", 120, errors_5xx=6, mean_response_ms=42)
    api.plane.set_servers("shop.red", "s1", status="DOWN")
    samples = await _samples(api)
    assert _at(samples, "prism_backend_requests_total", app="shop", color="green") == 120
    assert _at(samples, "prism_backend_5xx_total", app="shop", color="green") == 6
    assert _at(samples, "prism_backend_response_ms", app="shop", color="green") == 42
    assert _at(samples, "prism_server_up", app="shop", color="blue", server="s1", node="local") == 1
    assert _at(samples, "prism_server_up", app="shop", color="red", server="s1", node="local") == 0


async def test_a_release_shows_its_phase_and_step(api: Api) -> None:
    """The latest release of a color: its phase as a label, its step as a value."""
    plan = {"to": "green", "steps": [{"weight": 10}, {"pause": "1h"}, {"weight": 100}]}
    started = await api.change("POST", "/apps/shop/releases", {"plan": plan})
    assert started.status_code == 200, started.text
    samples = await _samples(api)
    phases = {
        dict(labels)["phase"]
        for (name, labels), value in samples.items()
        if name == "prism_release_phase" and value == 1
    }
    assert len(phases) == 1
    assert _at(samples, "prism_release_step", app="shop", color="green") >= 0


async def test_api_latency_is_a_histogram_by_route_template(api: Api) -> None:
    """Requests are counted under their route's template, never their raw path."""
    await api.client.get("/apps/shop")
    samples = await _samples(api)
    count = _at(
        samples,
        "prism_api_request_duration_seconds_count",
        method="GET",
        route="/api/v1/apps/{app}",
        status="200",
    )
    assert count >= 1
    assert not any("shop" in dict(labels).get("route", "") for _, labels in samples)


async def test_request_log_as_counts_by_class_and_a_histogram(api: Api) -> None:
    """A color's request log: requests by status class, and a response-time histogram whose
    buckets are cumulative and whose count is every logged request."""
    recorder = Recorder()
    for ms in [3] * 50 + [40] * 40 + [900] * 10:
        recorder.add("shop.green", 503 if ms == 900 else 200, ms)
    api.plane.counters_by_backend["shop.green"] = Counters(
        100, 10, 90, recorder.snapshot("shop.green")
    )
    samples = await _samples(api)
    at = functools.partial(_at, samples, app="shop", color="green")
    assert at("prism_request_log_requests_total", **{"class": "2xx"}) == 90
    assert at("prism_request_log_requests_total", **{"class": "5xx"}) == 10
    name = "prism_request_log_response_seconds_bucket"
    assert at(name, le="0.005") == 50
    assert at(name, le="0.05") == 90
    assert at(name, le="0.5") == 90
    assert at(name, le="1.0") == 100
    assert at(name, le="+Inf") == 100
    assert at("prism_request_log_response_seconds_count") == 100
    assert at("prism_request_log_response_seconds_sum") == pytest.approx(10.75, rel=0.02)
    assert (
        "prism_request_log_response_seconds_count",
        (("app", "shop"), ("color", "blue")),
    ) not in samples
