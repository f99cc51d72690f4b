"""Slow-server judgements and circuit-trip episodes over simulated HAProxy readings."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import pytest

from prism.core.balancing import (
    RTIME_SAMPLES,
    Sample,
    Track,
    Trips,
    judge_color,
    restore,
    watch_trips,
    window_mean,
)
from prism.core.model import SlowServers

SETTINGS = SlowServers(
    enabled=True,
    factor=3.0,
    min_slow_ms=50,
    window_ms=2000,
    min_requests=20,
    step=30,
    floor=10,
    recover_after_ms=2000,
)


@dataclass
class Simulated:
    """One server's counters as HAProxy 2.8 keeps them (stream_update_time_stats)."""

    total: int = 0  # the running sum behind rtime
    requests: int = 0
    responses: int = 0

    def serve(self, ms: int, count: int = 1) -> None:
        for _ in range(count):
            window = RTIME_SAMPLES if self.requests > RTIME_SAMPLES else 0
            self.requests += 1
            self.responses += 1
            decay = (self.total + window - 1) // window if window else 0
            self.total = self.total - decay + ms

    @property
    def rtime(self) -> int:
        n = RTIME_SAMPLES if self.requests >= RTIME_SAMPLES else max(self.requests, 1)
        return (self.total + n - 1) // n

    def sample(self, at: float, ready: bool = True) -> Sample:
        return Sample(at, self.rtime, self.requests, self.responses, ready)


@pytest.mark.parametrize("warm", [0, 100, 5000])
def test_window_mean_recovers_the_window_from_the_moving_average(warm: int) -> None:
    """After any history, the mean of the next responses is recovered within a few ms,
    where rtime itself still shows mostly the past."""
    server = Simulated()
    server.serve(400, warm)
    before = server.sample(0.0)
    server.serve(10, 150)
    after = server.sample(1.0)
    mean = window_mean(before, after)
    assert mean is not None
    assert abs(mean - 10) <= 6, (mean, after.rtime_ms)
    if warm >= RTIME_SAMPLES:
        assert after.rtime_ms > 250  # the average alone would still call it slow


def test_window_mean_needs_responses_and_monotonic_counters() -> None:
    """No responses, or counters that went back (a reload), give no mean."""
    same = Sample(0.0, 10, 100, 100)
    assert window_mean(same, Sample(1.0, 10, 100, 100)) is None
    assert window_mean(Sample(0.0, 10, 900, 900), Sample(1.0, 3, 20, 20)) is None


class Color:
    """Three (or more) simulated servers of one color, read every 0.5 s."""

    def __init__(self, *names: str) -> None:
        self.servers = {name: Simulated() for name in names}
        self.tracks: dict[str, Track] = {}
        self.now = 0.0
        self.weights: dict[str, int] = dict.fromkeys(names, 100)
        self.ready = dict.fromkeys(names, True)
        self.log: list[tuple[float, str, int, int, str]] = []

    def run(self, seconds: float, ms: dict[str, int], rate: int = 100) -> None:
        """``rate`` requests per 0.5 s over the color, split by weight, each server at ``ms``."""
        for _ in range(round(seconds / 0.5)):
            self.now += 0.5
            total = sum(w for n, w in self.weights.items() if self.ready[n])
            for name, server in self.servers.items():
                if self.ready[name]:
                    server.serve(ms.get(name, 5), round(rate * self.weights[name] / total))
            samples = {n: s.sample(self.now, self.ready[n]) for n, s in self.servers.items()}
            self.tracks, changes = judge_color(SETTINGS, self.now, samples, self.tracks)
            for change in changes:
                self.weights[change.server] = change.new
                self.log.append((self.now, change.server, change.old, change.new, change.reason))


def test_slow_server_steps_down_to_the_floor_and_others_keep_theirs() -> None:
    """A server at 400 ms among 5 ms ones loses 30 points per window down to 10%."""
    color = Color("s1", "s2", "s3")
    color.run(5, {})
    assert color.log == []
    color.run(12, {"s2": 400})
    steps = [(server, old, new) for _, server, old, new, _ in color.log]
    assert steps == [("s2", 100, 70), ("s2", 70, 40), ("s2", 40, 10)]
    first = color.log[0]
    assert first[0] <= 5 + 2.5  # within the window after turning slow
    assert re.fullmatch(r"slow: \d+ ms vs 5 ms median", first[4]), first
    times = [t for t, *_ in color.log]
    assert all(b - a >= 2 for a, b in itertools.pairwise(times))
    assert color.weights == {"s1": 100, "s2": 10, "s3": 100}
    assert color.tracks["s2"].reason.startswith("slow: ")


def test_healed_server_steps_back_up_after_recover_after() -> None:
    """Once fast again it regains 30 points every recover_after, to 100, then is untouched."""
    color = Color("s1", "s2", "s3")
    color.run(14, {"s2": 400})
    assert color.weights["s2"] == 10
    color.log.clear()
    healed = color.now
    color.run(20, {})
    steps = [(old, new) for _, _, old, new, _ in color.log]
    assert steps == [(10, 40), (40, 70), (70, 100)]
    assert color.log[0][0] - healed <= 2 + 2.5
    assert re.fullmatch(r"fast again: [3-7] ms vs 5 ms median", color.log[-1][4])
    assert color.tracks["s2"].reason == ""
    assert color.weights == {"s1": 100, "s2": 100, "s3": 100}


def test_quiet_servers_are_never_judged() -> None:
    """Fewer than min_requests responses in its window: a server is not judged."""
    color = Color("s1", "s2", "s3")
    color.run(10, {"s2": 400}, rate=9)  # 3 per server per reading: 12 per window
    assert color.log == []


def test_only_server_or_only_ready_one_is_never_lowered() -> None:
    """A color's only server, or a server whose peers are not ready, keeps its weight."""
    alone = Color("s1")
    alone.run(10, {"s1": 900})
    assert alone.log == []
    pair = Color("s1", "s2")
    pair.ready["s1"] = False
    pair.run(10, {"s2": 900})
    assert pair.log == []
    pair.ready["s1"] = True
    pair.run(5, {"s2": 900})
    assert [(s, new) for _, s, _, new, _ in pair.log][:1] == [("s2", 70)]


def test_slow_is_relative_and_floored() -> None:
    """3x the median is needed, and min_slow_ms: 40 ms among 5 ms is not slow."""
    color = Color("s1", "s2", "s3")
    color.run(10, {"s2": 40, "s1": 5, "s3": 5})
    assert color.log == []
    color.run(10, {"s1": 120, "s2": 120, "s3": 100})
    assert color.log == []  # the color is slow, not a server


def test_a_reload_resets_the_history_and_nothing_is_lost() -> None:
    """Counters going back start the samples over; the weight stays as Prism set it."""
    track = Track(samples=(Sample(1.0, 300, 900, 900),), weight=40, changed_at=1.0, reason="x")
    tracks, changes = judge_color(SETTINGS, 2.0, {"s1": Sample(2.0, 0, 3, 3)}, {"s1": track})
    assert changes == []
    assert tracks["s1"].samples == (Sample(2.0, 0, 3, 3),)
    assert tracks["s1"].weight == 40


def test_restore_returns_every_lowered_server() -> None:
    """Turning the feature off restores exactly the lowered servers to 100."""
    changes = restore({"s1": Track(weight=40), "s2": Track()}, "slow-server weights are off")
    assert [(c.server, c.old, c.new) for c in changes] == [("s1", 40, 100)]


def test_trips_open_and_close_an_episode() -> None:
    """The first hanafail increase opens an episode; more add to it; quiet and ready closes."""
    trips, events = watch_trips(0.0, {"s1": (2, True, "")}, {}, quiet=10)
    assert events == []  # what happened before Prism looked is not news
    trips, events = watch_trips(1.0, {"s1": (3, False, "5 errors")}, trips, quiet=10)
    assert [(e.kind, e.trips, e.why) for e in events] == [("tripped", 1, "5 errors")]
    trips, events = watch_trips(3.0, {"s1": (5, False, "5 errors")}, trips, quiet=10)
    assert events == []
    trips, events = watch_trips(12.0, {"s1": (5, False, "")}, trips, quiet=10)
    assert events == []  # quiet, but not ready yet
    trips, events = watch_trips(13.5, {"s1": (5, True, "")}, trips, quiet=10)
    assert [(e.kind, e.trips) for e in events] == [("closed", 3)]
    assert trips["s1"] == Trips(seen=5)
    trips, events = watch_trips(14.0, {"s1": (0, True, "")}, trips, quiet=10)
    assert events == []  # a reload starts the counter over
    assert watch_trips(15.0, {}, trips, quiet=10) == ({}, [])
