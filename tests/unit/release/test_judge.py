"""The statistical judge over per-tick series: identical colors pass with score 100, a real
shift fails, a significant but negligible one passes, too few ticks are not judged; in the
machine it fails a step the thresholds would pass, and shows its score while it runs."""

from __future__ import annotations

import random

from prism.core.readings import Counters
from prism.release.events import Began, ShareSet, Tick
from prism.release.gates import GateResult
from prism.release.judge import judge_series
from prism.release.machine import Phase, propose, step
from prism.release.plan import Judge, ReleasePlan
from prism.release.record import ReleaseRecord

JUDGE = Judge()
T0 = 1_700_000_000.0
UP = GateResult("health", True, "all 1 server(s) of 'green' are UP")


def ticks(rng: random.Random, n: int, ms: float, spread: float, bad: float = 0.0) -> list[Counters]:
    """n ticks of 100 requests, mean response ~ms (+-spread), a ``bad`` share of 5xx."""
    return [Counters(100, round(100 * bad), max(1, round(rng.gauss(ms, spread)))) for _ in range(n)]


def test_identical_colors_pass_with_a_full_score() -> None:
    rng = random.Random(1)
    found = judge_series(JUDGE, ticks(rng, 10, 50, 5), ticks(rng, 10, 50, 5))
    assert found.score == 100
    assert found.failures == ()
    assert {m["outcome"] for m in found.metrics.values()} == {"pass"}


def test_a_slower_target_fails_the_response_metric() -> None:
    """+50% median response over 10 ticks: p < 0.05 and effect 0.5 > 0.2."""
    rng = random.Random(2)
    found = judge_series(JUDGE, ticks(rng, 10, 75, 5), ticks(rng, 10, 50, 5))
    response = found.metrics["response"]
    assert response["outcome"] == "fail"
    assert response["p"] < 0.01
    assert response["effect"] > 0.4
    assert found.score == 50
    assert found.failures[0].startswith("judge: response worse than stable (+")


def test_a_significant_but_negligible_difference_passes() -> None:
    """+4% slower, very consistently: the test is sure, the effect is below 20%: pass."""
    rng = random.Random(3)
    found = judge_series(JUDGE, ticks(rng, 30, 104, 0.5), ticks(rng, 30, 100, 0.5))
    response = found.metrics["response"]
    assert response["p"] < 0.001
    assert response["outcome"] == "pass"


def test_more_5xx_than_stable_fails_the_5xx_metric() -> None:
    rng = random.Random(4)
    found = judge_series(JUDGE, ticks(rng, 10, 50, 5, bad=0.04), ticks(rng, 10, 50, 5))
    assert found.metrics["5xx_ratio"]["outcome"] == "fail"
    assert found.metrics["5xx_ratio"]["effect"] == 0.04


def test_too_few_ticks_are_not_judged() -> None:
    """5 ticks a side under min_samples 8: every metric n/a, no score, no failure."""
    rng = random.Random(5)
    found = judge_series(JUDGE, ticks(rng, 5, 500, 5), ticks(rng, 5, 50, 5))
    assert found.score is None
    assert found.failures == ()
    assert {m["outcome"] for m in found.metrics.values()} == {"n/a"}


def in_pause() -> ReleaseRecord:
    """Green at 10% in a 10-minute pause, judged, with the relative thresholds off."""
    analysis = {
        "tick_ms": 1000,
        "min_requests": 20,
        "max_response_vs_stable": None,
        "judge": {"min_samples": 5},
    }
    plan = ReleasePlan.model_validate(
        {
            "to": "green",
            "steps": [{"weight": 10}, {"pause": "10m"}, {"weight": 100}],
            "analysis": analysis,
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
        at=T0 - 2,
    )
    record = step(record, Began(T0 - 2, (UP,))).record
    record = step(record, Tick(T0 - 1, weights={"blue": 100}, health=UP)).record
    zero = Counters(0, 0, 0)
    return step(
        record, ShareSet(T0, "step", {"blue": 90, "green": 10}, target=zero, baseline=zero)
    ).record


def test_the_machine_rolls_back_on_the_judge_and_shows_its_score_meanwhile() -> None:
    """Green answers in ~30 ms against blue's ~10 ms (under every threshold): the score shows
    while too few ticks are judged, then the judge fails the step."""
    record = in_pause()
    rng = random.Random(6)
    green = blue = Counters(0, 0, 0)
    phases = []
    for second in range(1, 9):
        green = Counters(green.requests + 30, 0, round(rng.gauss(30, 2)))
        blue = Counters(blue.requests + 270, 0, round(rng.gauss(10, 2)))
        weights = {"blue": 90, "green": 10}
        result = step(
            record, Tick(T0 + second, weights=weights, health=UP, target=green, baseline=blue)
        )
        record = result.record
        phases.append(record.phase)
        if second == 2:
            assert record.verdict is not None
            assert record.verdict["message"].endswith("judge score n/a")
            assert record.verdict["readings"]["judge"]["score"] is None
    assert phases[:4] == [Phase.RUNNING] * 4
    assert record.phase is Phase.ROLLING_BACK
    cause = record.steps[-1]
    assert cause.message.startswith("analysis failed: judge: response worse than stable")
    assert cause.readings["judge"]["metrics"]["response"]["outcome"] == "fail"
