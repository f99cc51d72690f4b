"""How status and history show slow-server weights, tripped breakers and warm-ups, and
release status the judge's score and the step's reading counts."""

from __future__ import annotations

from typing import Any

from prism.cli.output import format_history, format_progress, format_status
from prism.release.machine import propose
from prism.release.plan import ReleasePlan
from prism.release.record import Budget, Phase


def app_status(**server: Any) -> dict[str, Any]:
    entry = {"name": "s2", "address": "10.0.0.2:80", "status": "UP", "in_use": 0, **server}
    return {
        "name": "shop",
        "bind": "127.0.0.1:8080",
        "weights": {"blue": 100},
        "stable": "blue",
        "desired_revision": 3,
        "applied_revision": 3,
        "stickiness": {"source": "none"},
        "colors": [
            {"name": "blue", "version": "v1", "weight": 100, "active": True, "servers": [entry]}
        ],
    }


def test_status_shows_weight_and_reason() -> None:
    """`weight 40% — slow: 730 ms vs 95 ms median`; a full weight says nothing."""
    text = format_status([app_status(weight=40, slow="slow: 730 ms vs 95 ms median")])
    assert "s2 10.0.0.2:80 UP weight 40% — slow: 730 ms vs 95 ms median" in text
    assert "weight" not in format_status([app_status(weight=100)]).split("SERVERS")[1]


def test_status_shows_a_tripped_breaker_and_a_warm_up() -> None:
    """A tripped circuit with HAProxy's words and the trip count; a slowstart ramp's share."""
    text = format_status([app_status(status="DOWN", circuit="Detected 5 errors", trips=3)])
    assert "s2 10.0.0.2:80 DOWN — circuit tripped: Detected 5 errors (3 circuit trips)" in text
    assert "— warming up, 63%" in format_status([app_status(warming=63)])


def test_fleet_status_names_the_nodes_that_lowered_a_server() -> None:
    """Weights differing per node are listed per node."""
    nodes = {
        "lb-1": {"status": "UP", "weight": 100},
        "lb-2": {"status": "UP", "weight": 70, "slow": "slow: 1 ms"},
    }
    text = format_status([app_status(weight=70, slow="slow: 1 ms", nodes=nodes)])
    assert "UP on 2/2 nodes weight 70% on lb-2 — slow: 1 ms" in text


def test_history_shows_weight_moves_and_trips() -> None:
    """A weight move names the server, both weights, the node and the reason."""
    records = [
        {
            "at": 0.0,
            "revision": 7,
            "actor": "prism",
            "action": "server.weight",
            "app": "shop",
            "detail": {"color": "blue", "server": "s2", "from": 100, "to": 70, "node": "lb-2"},
            "reason": "slow: 730 ms vs 95 ms median",
        },
        {
            "at": 0.0,
            "revision": 7,
            "actor": "haproxy",
            "action": "circuit.tripped",
            "app": "shop",
            "detail": {"color": "blue", "server": "s3", "trips": 1},
            "reason": None,
        },
    ]
    lines = format_history(records).splitlines()
    assert "blue/s2 weight 100% -> 70% on lb-2  reason: slow: 730 ms vs 95 ms median" in lines[0]
    assert "circuit.tripped" in lines[1]
    assert "blue/s3 1 trip(s)" in lines[1]


def test_release_status_shows_the_judge_score_and_the_step_counts() -> None:
    """While a judged step runs, status shows the score per metric and the budgets used."""
    plan = ReleasePlan.model_validate(
        {"to": "green", "steps": [{"weight": 10}, {"pause": "1m"}, {"weight": 100}]}
    )
    record = propose(
        id="r1",
        app="shop",
        stable="blue",
        plan=plan,
        weights={"blue": 100},
        actor="ci",
        reason=None,
        at=1_700_000_000.0,
    ).model_copy(
        update={
            "phase": Phase.HOLDING,
            "held": "inconclusive",
            "budget": Budget(failures=1, inconclusive=1),
            "verdict": {
                "outcome": "inconclusive",
                "message": "inconclusive: waiting for data: 3/20 requests after 60 s",
                "readings": {
                    "judge": {
                        "score": 50.0,
                        "failures": [],
                        "metrics": {
                            "5xx_ratio": {"outcome": "pass", "p": 0.4},
                            "response": {"outcome": "fail", "p": 0.001},
                        },
                    }
                },
            },
        }
    )
    shown = format_progress(record.summary())
    assert "last analysis: inconclusive: inconclusive: waiting for data" in shown
    assert "judge score: 50 (5xx_ratio pass (p=0.4), response fail (p=0.001))" in shown
    assert (
        "readings this step: 1 failed, 1 inconclusive, 0 missing in a row; "
        "holding (inconclusive)" in shown
    )


def test_release_status_shows_the_percentile_gates_and_each_colors_request_log() -> None:
    """With p99 ceilings set and log data in the verdict, status names the gates and shows
    the canary's and stable's logged counts and p50/p95/p99."""
    plan = ReleasePlan.model_validate(
        {
            "to": "green",
            "steps": [{"weight": 10}, {"pause": "1m"}, {"weight": 100}],
            "analysis": {"max_p99_response_ms": 300, "max_p99_vs_stable": 2},
        }
    )
    record = propose(
        id="r1",
        app="shop",
        stable="blue",
        plan=plan,
        weights={"blue": 100},
        actor="ci",
        reason=None,
        at=1_700_000_000.0,
    ).model_copy(
        update={
            "phase": Phase.RUNNING,
            "verdict": {
                "outcome": "fail",
                "message": "p99 response 412 ms > 300 ms (120 logged)",
                "readings": {
                    "log": {
                        "requests": 120,
                        "errors_5xx": 2,
                        "every": 1,
                        "p50_ms": 12.2,
                        "p95_ms": 380.5,
                        "p99_ms": 412.0,
                    },
                    "baseline_log": {
                        "requests": 0,
                        "errors_5xx": 0,
                        "every": 10,
                        "p50_ms": None,
                        "p95_ms": None,
                        "p99_ms": None,
                    },
                },
            },
        }
    )
    shown = format_progress(record.summary())
    assert ", p99 <= 300 ms, p99 <= 2x stable" in shown
    assert "request log, green: 120 requests, 2 5xx; p50 12.2 ms, p95 380.5 ms, p99 412 ms" in shown
    assert "request log, blue: 0 requests, 0 5xx (1 in 10 logged); p50 -, p95 -, p99 -" in shown


def test_status_shows_each_colors_request_log() -> None:
    """One app's status: each color with a request log gets a line of counts and p50/p95/p99;
    a color without one (the log off) gets none."""
    status = app_status()
    status["colors"][0]["requests"] = {
        "requests": 300,
        "errors_5xx": 31,
        "every": 1,
        "p50_ms": 0.0,
        "p95_ms": 51.5,
        "p99_ms": 51.5,
    }
    text = format_status([status])
    assert "request log, blue: 300 requests, 31 5xx; p50 0 ms, p95 51.5 ms, p99 51.5 ms" in text
    assert "request log" not in format_status([app_status()])
