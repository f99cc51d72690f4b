"""Webhook delivery against httpx.MockTransport receivers, on a fake clock that never sleeps."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from prism import __version__
from prism.release.plan import Webhook
from prism.release.webhooks import BODY_LIMIT, Event, WebhookSender, confirm
from prism.testing.wait import eventually

URL = "http://hooks.example/release"
OTHER = "http://other.example/release"

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


class FakeClock:
    """A Clock that records every sleep and only yields to other tasks."""

    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return 1_700_000_000.0 + self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


class Receiver:
    """A scripted receiver: answers from ``script`` per attempt, then ``default``."""

    def __init__(self, script: list[int] | None = None, default: int = 200) -> None:
        self.script = list(script or [])
        self.default = default
        self.requests: list[httpx.Request] = []

    @property
    def seqs(self) -> list[int]:
        return [json.loads(r.content)["seq"] for r in self.requests]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.script.pop(0) if self.script else self.default
        return httpx.Response(status, text="" if status < 300 else "receiver says no")


def event(seq: int = 1, kind: str = "step.started", **data: Any) -> Event:
    return Event(kind, "shop", "green", "r-42", seq, 1_700_000_000.5, dict(data))


def hook(url: str = URL, **kwargs: Any) -> Webhook:
    return Webhook(url=url, **kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_sender(clock: FakeClock) -> AsyncIterator[Callable[..., WebhookSender]]:
    senders: list[WebhookSender] = []

    def make(handler: Handler, **kwargs: Any) -> WebhookSender:
        sender = WebhookSender(clock, transport=httpx.MockTransport(handler), **kwargs)
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        await sender.close()


def test_event_json_has_stable_field_names() -> None:
    """to_json uses the public wire names, not the attribute names."""
    assert event(3, reason="ok").to_json() == {
        "event": "step.started",
        "app": "shop",
        "color": "green",
        "release": "r-42",
        "seq": 3,
        "at": 1_700_000_000.5,
        "data": {"reason": "ok"},
    }


@pytest.mark.parametrize("kind", ["", "a b", "x\r\nInjected: 1", "k" * 65])
def test_event_rejects_kinds_unfit_for_a_header(kind: str) -> None:
    """A kind that could not travel in X-Prism-Event is refused when the Event is built."""
    with pytest.raises(ValueError, match="event kind"):
        event(kind=kind)


async def test_post_carries_json_and_prism_headers(
    make_sender: Callable[..., WebhookSender],
) -> None:
    """Each POST has the JSON body and the Content-Type, User-Agent and X-Prism-Event headers."""
    receiver = Receiver()
    sender = make_sender(receiver)
    sender.emit([hook()], event(7, kind="release.done", weight=100))
    assert await sender.flush(5)
    (request,) = receiver.requests
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"prism/{__version__}"
    assert request.headers["x-prism-event"] == "release.done"
    assert json.loads(request.content) == event(7, kind="release.done", weight=100).to_json()


async def test_payload_is_a_snapshot_taken_at_emit(
    make_sender: Callable[..., WebhookSender],
) -> None:
    """Mutating data after emit changes nothing sent, and odd values are sent as text."""
    receiver = Receiver()
    sender = make_sender(receiver)
    first = event(1, when=datetime(2024, 1, 2, tzinfo=UTC))
    sender.emit([hook()], first)
    first.data["when"] = "changed"
    assert await sender.flush(5)
    assert json.loads(receiver.requests[0].content)["data"] == {"when": "2024-01-02 00:00:00+00:00"}


async def test_events_stay_in_order_while_one_is_retried(
    make_sender: Callable[..., WebhookSender], clock: FakeClock
) -> None:
    """A receiver failing twice on event 1 gets 1 (three times), then 2..5 in order."""
    receiver = Receiver(script=[500, 503])
    sender = make_sender(receiver)
    for seq in range(1, 6):
        sender.emit([hook()], event(seq))
    assert await sender.flush(5)
    assert receiver.seqs == [1, 1, 1, 2, 3, 4, 5]
    assert clock.sleeps == [0.2, 0.4]
    assert sender.stats() == {
        URL: {
            "delivered": 5,
            "failed": 0,
            "last_error": "503 Service Unavailable: receiver says no",
        }
    }


async def test_retries_then_gives_up_with_a_warning(
    make_sender: Callable[..., WebhookSender],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """retries=3 means four attempts with doubling backoff, then a warning and a failed count."""
    receiver = Receiver(default=500)
    sender = make_sender(receiver)
    with caplog.at_level(logging.WARNING, logger="prism.release.webhooks"):
        sender.emit([hook(retries=3)], event(1))
        assert await sender.flush(5)
    assert receiver.seqs == [1, 1, 1, 1]
    assert clock.sleeps == [0.2, 0.4, 0.8]
    assert sender.stats()[URL]["failed"] == 1
    assert sender.stats()[URL]["delivered"] == 0
    assert sender.stats()[URL]["last_error"] == "500 Internal Server Error: receiver says no"
    (record,) = [r for r in caplog.records if r.name == "prism.release.webhooks"]
    assert record.levelno == logging.WARNING
    assert "gave up on step.started event seq 1 after 4 attempts" in record.getMessage()


async def test_backoff_is_capped(
    make_sender: Callable[..., WebhookSender], clock: FakeClock
) -> None:
    """The doubling backoff stops growing at max_backoff_s."""
    sender = make_sender(Receiver(default=500), max_backoff_s=1.0)
    sender.emit([hook(retries=5)], event(1))
    assert await sender.flush(5)
    assert clock.sleeps == [0.2, 0.4, 0.8, 1.0, 1.0]


async def test_retries_zero_means_one_attempt(
    make_sender: Callable[..., WebhookSender], clock: FakeClock
) -> None:
    """With retries=0 a failure is given up at once, without sleeping."""
    receiver = Receiver(default=500)
    sender = make_sender(receiver)
    sender.emit([hook(retries=0)], event(1))
    assert await sender.flush(5)
    assert receiver.seqs == [1]
    assert clock.sleeps == []


async def test_given_up_event_does_not_stop_the_next(
    make_sender: Callable[..., WebhookSender],
) -> None:
    """After giving up on event 1 the worker goes on to deliver event 2."""
    receiver = Receiver(script=[500, 500])
    sender = make_sender(receiver)
    sender.emit([hook(retries=1)], event(1))
    sender.emit([hook(retries=1)], event(2))
    assert await sender.flush(5)
    assert receiver.seqs == [1, 1, 2]
    assert sender.stats()[URL] == {
        "delivered": 1,
        "failed": 1,
        "last_error": "500 Internal Server Error: receiver says no",
    }


async def test_event_filter_selects_hooks(make_sender: Callable[..., WebhookSender]) -> None:
    """A hook gets an event only if its filter is None or names the event's kind."""
    seen: dict[str, list[str]] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.setdefault(request.url.host, []).append(request.headers["x-prism-event"])
        return httpx.Response(200)

    sender = make_sender(handler)
    hooks = [
        hook("http://all.example/"),
        hook("http://done.example/", events=("release.done",)),
        hook("http://none.example/", events=()),
    ]
    sender.emit(hooks, event(1, kind="step.started"))
    sender.emit(hooks, event(2, kind="release.done"))
    assert await sender.flush(5)
    assert seen == {
        "all.example": ["step.started", "release.done"],
        "done.example": ["release.done"],
    }
    assert set(sender.stats()) == {"http://all.example/", "http://done.example/"}


async def test_same_url_twice_gets_the_event_once(
    make_sender: Callable[..., WebhookSender],
) -> None:
    """A URL listed by two hooks receives each event once."""
    receiver = Receiver()
    sender = make_sender(receiver)
    sender.emit([hook(), hook(timeout_ms=500)], event(1))
    assert await sender.flush(5)
    assert receiver.seqs == [1]


async def test_emit_returns_while_receiver_hangs(make_sender: Callable[..., WebhookSender]) -> None:
    """emit() does not wait for delivery; a hung receiver only keeps flush() from finishing."""
    release = asyncio.Event()

    async def hung(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200)

    sender = make_sender(hung)
    sender.emit([hook(timeout_ms=60_000)], event(1))
    assert sender.stats()[URL]["delivered"] == 0
    assert not await sender.flush(0.05)
    release.set()
    assert await sender.flush(5)
    assert sender.stats()[URL]["delivered"] == 1


async def test_slow_url_does_not_delay_another(make_sender: Callable[..., WebhookSender]) -> None:
    """Each URL has its own worker: one hanging receiver does not hold another's events."""
    release = asyncio.Event()
    fast: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "hooks.example":
            await release.wait()
        else:
            fast.append(json.loads(request.content)["seq"])
        return httpx.Response(200)

    sender = make_sender(handler)
    for seq in (1, 2, 3):
        sender.emit([hook(timeout_ms=60_000), hook(OTHER)], event(seq))
    await eventually(lambda: len(fast) == 3, timeout=5, what="the other URL's three events")
    assert fast == [1, 2, 3]
    release.set()
    assert await sender.flush(5)


async def test_timeout_is_a_failure(make_sender: Callable[..., WebhookSender]) -> None:
    """A receiver slower than timeout_ms counts as a failed attempt."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)  # not a wait: a receiver far slower than timeout_ms
        return httpx.Response(200)

    sender = make_sender(slow)
    sender.emit([hook(timeout_ms=20, retries=1)], event(1))
    assert await sender.flush(5)
    assert sender.stats()[URL] == {
        "delivered": 0,
        "failed": 1,
        "last_error": "timed out after 20 ms",
    }


async def test_connection_error_is_a_failure(make_sender: Callable[..., WebhookSender]) -> None:
    """A refused connection is retried, then given up with the error as reason."""
    attempts = 0

    async def refused(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ConnectError("Connection refused", request=request)

    sender = make_sender(refused)
    sender.emit([hook(retries=2)], event(1))
    assert await sender.flush(5)
    assert attempts == 3
    assert sender.stats()[URL]["last_error"] == "ConnectError: Connection refused"


async def test_unexpected_error_does_not_kill_the_worker(
    make_sender: Callable[..., WebhookSender], caplog: pytest.LogCaptureFixture
) -> None:
    """A bug raised while delivering is logged and counted; later events still go out."""
    receiver = Receiver()

    async def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["seq"] == 1:
            raise RuntimeError("boom")
        return await receiver(request)

    sender = make_sender(handler)
    with caplog.at_level(logging.ERROR, logger="prism.release.webhooks"):
        sender.emit([hook()], event(1))
        sender.emit([hook()], event(2))
        assert await sender.flush(5)
    assert receiver.seqs == [2]
    assert sender.stats()[URL] == {"delivered": 1, "failed": 1, "last_error": "RuntimeError: boom"}


async def test_redirect_is_not_followed(make_sender: Callable[..., WebhookSender]) -> None:
    """A 3xx is a failure and its Location is never requested."""
    hosts: list[str] = []

    async def redirect(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(302, headers={"Location": "http://elsewhere.example/"})

    sender = make_sender(redirect)
    sender.emit([hook(retries=0)], event(1))
    assert await sender.flush(5)
    assert hosts == ["hooks.example"]
    assert sender.stats()[URL]["last_error"] == "302 Found (redirects are not followed)"


async def test_full_queue_drops_and_counts(make_sender: Callable[..., WebhookSender]) -> None:
    """Past max_pending queued events, emit drops the event and counts it failed."""
    release = asyncio.Event()

    async def hung(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200)

    sender = make_sender(hung, max_pending=2)
    for seq in range(1, 5):
        sender.emit([hook(timeout_ms=60_000)], event(seq))
    stats = sender.stats()[URL]
    assert stats["failed"] == 2
    assert stats["last_error"] == "queue full (2 events pending)"
    release.set()
    assert await sender.flush(5)
    assert sender.stats()[URL]["delivered"] == 2


async def test_close_cancels_workers_cleanly(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """close() with deliveries in flight leaves no pending task and a closed client."""
    started = asyncio.Event()

    async def hung(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.sleep(3600)  # not a wait: a receiver that never answers
        return httpx.Response(200)

    sender = WebhookSender(clock, transport=httpx.MockTransport(hung))
    sender.emit([hook(timeout_ms=60_000)], event(1))
    sender.emit([hook(timeout_ms=60_000)], event(2))
    sender.emit([hook(OTHER)], event(1))
    await started.wait()
    await sender.close()
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("webhook ")] == []
    assert sender.client.is_closed
    await sender.close()  # idempotent
    with caplog.at_level(logging.WARNING, logger="prism.release.webhooks"):
        sender.emit([hook()], event(3))
    assert "closed" in caplog.text
    assert await sender.flush(0.01)


async def test_context_manager_closes(clock: FakeClock) -> None:
    """Leaving ``async with`` closes the sender and its client."""
    async with WebhookSender(clock, transport=httpx.MockTransport(Receiver())) as sender:
        sender.emit([hook()], event(1))
        assert await sender.flush(5)
    assert sender.client.is_closed


async def test_flush_with_nothing_queued_returns_at_once(
    make_sender: Callable[..., WebhookSender],
) -> None:
    """An idle sender is flushed immediately."""
    assert await make_sender(Receiver()).flush(0)


# confirm ---------------------------------------------------------------------------------


def mock_client(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, "", (True, "200 OK")),
        (204, "", (True, "204 No Content")),
        (
            503,
            "change freeze\nuntil 18:00",
            (False, "503 Service Unavailable: change freeze until 18:00"),
        ),
        (500, "", (False, "500 Internal Server Error")),
        (301, "", (False, "301 Moved Permanently (redirects are not followed)")),
    ],
)
async def test_confirm_maps_status(status: int, body: str, expected: tuple[bool, str]) -> None:
    """confirm says go on any 2xx and hold, with the status and body start, otherwise."""

    async def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Location": "http://elsewhere.example/"} if status == 301 else {}
        return httpx.Response(status, text=body, headers=headers)

    async with mock_client(handler) as client:
        assert await confirm(client, hook(), event()) == expected


async def test_confirm_does_not_retry(make_sender: Callable[..., WebhookSender]) -> None:
    """confirm POSTs once even when the hook allows retries, using the sender's client."""
    receiver = Receiver(default=500)
    sender = make_sender(receiver)
    ok, _ = await confirm(sender, hook(retries=5), event(1, kind="step.confirm"))
    assert not ok
    assert receiver.seqs == [1]
    assert receiver.requests[0].headers["x-prism-event"] == "step.confirm"


async def test_confirm_timeout_holds() -> None:
    """A receiver slower than the hook's timeout means hold, not an exception."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)  # not a wait: a receiver far slower than timeout_ms
        return httpx.Response(200)

    async with mock_client(slow) as client:
        assert await confirm(client, hook(timeout_ms=20), event()) == (
            False,
            "timed out after 20 ms",
        )


@pytest.mark.parametrize(
    "error", [httpx.ConnectError("refused"), httpx.ReadError("reset"), httpx.ReadTimeout("slow")]
)
async def test_confirm_network_errors_hold(error: httpx.HTTPError) -> None:
    """Transport errors become a hold with a reason; confirm never raises for them."""

    async def broken(request: httpx.Request) -> httpx.Response:
        raise error

    async with mock_client(broken) as client:
        ok, reason = await confirm(client, hook(), event())
    assert not ok
    assert reason in {"ConnectError: refused", "ReadError: reset", "timed out after 3000 ms"}


async def test_confirm_reads_only_the_start_of_a_big_body() -> None:
    """A huge error body is read only up to BODY_LIMIT and quoted briefly."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(10_000):
            sent += 1
            yield b"x" * 512

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, content=chunks())

    async with mock_client(handler) as client:
        ok, reason = await confirm(client, hook(), event())
    assert not ok
    assert sent <= BODY_LIMIT // 512 + 1
    assert reason == "500 Internal Server Error: " + "x" * 200
