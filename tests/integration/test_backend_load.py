"""The load generator against real demo backends, and the process helpers behind them."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from prism.errors import PrismError
from prism.testing.load import run_load, run_load_in_thread
from prism.testing.processes import (
    Backend,
    BackendSpec,
    ManagedProcess,
    backends,
    free_port,
    start_backend,
)
from prism.testing.wait import wait_for


@pytest.fixture
def blue() -> Iterator[Backend]:
    """A blue backend, stopped by its PID in teardown whatever the test did."""
    with backends([BackendSpec("blue", "v1")]) as (b,):
        yield b


def set_fault(backend: Backend, doc: dict[str, object]) -> None:
    """POST a fault document to the backend's control route."""
    req = urllib.request.Request(
        f"{backend.url}/_fault", data=json.dumps(doc).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


async def test_keepalive_load_has_no_failures_and_one_color(blue: Backend) -> None:
    """Keep-alive load gets every request answered by blue, exactly `total` of them."""
    report = await run_load(blue.host, blue.port, total=3000, concurrency=8, keepalive=True)
    assert report.total == 3000
    assert report.failures == [], report.summary()
    assert report.ok == 3000
    assert report.by_color == {"blue": 3000}
    assert report.rps > 0


async def test_one_connection_per_request_load(blue: Backend) -> None:
    """Without keep-alive every request gets its own connection and still succeeds."""
    report = await run_load(blue.host, blue.port, total=500, concurrency=8, keepalive=False)
    assert report.failures == [], report.summary()
    assert report.by_color == {"blue": 500}


async def test_two_colors_loaded_concurrently_from_a_thread() -> None:
    """A load in its own thread and one on this loop each see only their own color."""
    with backends([BackendSpec("blue", "v1"), BackendSpec("green", "v2")]) as (blue, green):
        future = run_load_in_thread(green.host, green.port, total=1000, concurrency=4)
        here = await run_load(blue.host, blue.port, total=1000, concurrency=4)
        there = await asyncio.wrap_future(future)
    assert here.by_color == {"blue": 1000}
    assert there.by_color == {"green": 1000}
    assert here.failures == there.failures == []


async def test_duration_bound_stops_the_run(blue: Backend) -> None:
    """A duration-bounded run stops by itself shortly after its duration."""
    t0 = time.monotonic()
    report = await run_load(blue.host, blue.port, total=None, duration=0.5, concurrency=4)
    assert 0.5 <= time.monotonic() - t0 < 2.0
    assert report.total > 0
    assert max(s.start for s in report.samples) < report.started + 0.5


async def test_run_without_any_bound_is_refused() -> None:
    """run_load refuses to start a run that could never end."""
    with pytest.raises(ValueError, match="never stop"):
        await run_load("127.0.0.1", 1, total=None, duration=None)


async def test_hung_backend_yields_timeout_samples(blue: Backend) -> None:
    """Requests that outlive `timeout` become status-0 samples, and the run still ends."""
    set_fault(blue, {"status": None, "delay_ms": 3000})
    t0 = time.monotonic()
    report = await run_load(blue.host, blue.port, total=4, concurrency=2, timeout=0.3)
    assert time.monotonic() - t0 < 2.0
    assert [(s.status, s.error) for s in report.samples] == [(0, "timeout")] * 4


async def test_faulted_answers_count_as_failures_with_their_color(blue: Backend) -> None:
    """5xx answers are failures, yet still attributed to the color that gave them."""
    set_fault(blue, {"status": 500, "ratio": 0.5})
    report = await run_load(blue.host, blue.port, total=1000, concurrency=4)
    assert set(report.by_status) == {200, 500}
    assert report.ok + len(report.failures) == 1000
    assert all(s.color == "blue" for s in report.failures)


async def test_killed_backend_shows_up_as_failures_not_gaps(blue: Backend) -> None:
    """SIGKILL mid-load turns into status-0 samples; the count of samples stays exact."""
    # 20 ms per answer with 8 workers: 1000 requests need >= 2.5 s, so the kill
    # at 0.5 s lands mid-run however fast this machine is.
    set_fault(blue, {"status": None, "delay_ms": 20})
    task = asyncio.create_task(
        run_load(blue.host, blue.port, total=1000, duration=20, concurrency=8)
    )
    await asyncio.sleep(0.5)  # not a wait: part of the load runs, then the kill (see above)
    killed_at = time.monotonic()
    blue.kill9()
    assert not blue.alive
    report = await task
    assert report.total == 1000, report.summary()  # every request made has a sample
    assert 0 < report.ok < 1000, report.summary()
    after = [s for s in report.samples if s.start > killed_at + 0.05]
    assert after, report.summary()
    assert all(s.status == 0 and s.error for s in after), report.summary()
    assert all(s.status == 0 and s.error for s in report.failures)


async def test_dead_port_from_a_thread_is_all_failures() -> None:
    """Refused connections are recorded one sample each, in a thread as on a loop."""
    port = free_port()
    report = await asyncio.wrap_future(run_load_in_thread("127.0.0.1", port, total=50))
    assert report.total == 50
    assert report.ok == 0
    assert all(s.status == 0 and "Refused" in (s.error or "") for s in report.samples)


def test_start_backend_reports_stderr_on_failure() -> None:
    """A backend that cannot start raises PrismError carrying its stderr."""
    with pytest.raises(PrismError, match="failed to start: exited before it was ready") as info:
        start_backend("not a color!", "v1")
    assert "must match" in info.value.detail["stderr"]


def test_start_backend_on_a_taken_port_fails(blue: Backend) -> None:
    """Asking for a port already in use fails fast with the bind error."""
    with pytest.raises(PrismError, match="exited before it was ready"):
        start_backend("green", "v2", port=blue.port)


def test_backends_stops_everything_on_error() -> None:
    """`backends` stops every process it started when the body raises."""
    kept: list[Backend] = []

    def body() -> None:
        with backends([BackendSpec("blue", "v1"), BackendSpec("green", "v2")]) as started:
            kept.extend(started)
            assert all(b.alive for b in started)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    assert len(kept) == 2
    assert [b.alive for b in kept] == [False, False]


def test_stop_escalates_to_sigkill_and_is_idempotent() -> None:
    """A child that ignores SIGTERM is SIGKILLed after the timeout; stop() can repeat."""
    # The child sleeps (not a wait: it only has to outlive the stop) with SIGTERM ignored.
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring', flush=True); time.sleep(60)"
    )
    proc = ManagedProcess([sys.executable, "-c", code], name="stubborn", pipe_stdout=True)
    try:
        assert proc.stdout.readline() == b"ignoring\n"  # the handler is in place
        assert proc.alive
        assert proc.stop(timeout=0.5) == -9
        assert proc.stop() == -9
        assert not proc.alive
    finally:
        proc.stop()


def test_chatty_child_never_blocks_and_its_output_is_kept() -> None:
    """Output far beyond a pipe's capacity goes to a file and is readable after exit."""
    code = "import sys; sys.stdout.write('x' * 500_000); sys.stderr.write('last words\\n')"
    proc = ManagedProcess([sys.executable, "-c", code], name="chatty")
    try:
        wait_for(lambda: not proc.alive, timeout=10, interval=0.02, what="the chatty child to exit")
        assert proc.stop() == 0
        assert proc.stderr_text().endswith("last words\n")
    finally:
        proc.stop()
