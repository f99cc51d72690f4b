"""Webhook delivery and confirm gates against real HTTP receivers on 127.0.0.1.

Each receiver is a ``ThreadingHTTPServer`` speaking HTTP/1.1 (so httpx keeps
connections alive, as it would with a real receiver) on a free port, answering
from a script of status codes and recording every body it got. The fixture
closes the senders before it stops the receivers, so every handler thread ends
and is joined at teardown.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from prism import __version__
from prism.release.plan import Webhook
from prism.release.webhooks import Event, WebhookSender, confirm
from prism.testing.processes import free_port
from prism.testing.wait import eventually


class Receiver:
    """A real HTTP receiver: answers ``script`` then ``default``, records what it got."""

    def __init__(self, script: list[int], default: int, delay: float) -> None:
        self.script = list(script)
        self.default = default
        self.delay = delay
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = False  # server_close() joins handler threads
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def seqs(self) -> list[int]:
        with self.lock:
            return [body["seq"] for body in self.bodies]

    def _answer(self, body: dict[str, Any], headers: dict[str, str]) -> int:
        with self.lock:
            self.bodies.append(body)
            self.headers.append(headers)
            return self.script.pop(0) if self.script else self.default

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 5  # an idle keep-alive connection cannot pin a thread forever

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                status = receiver._answer(body, {k.lower(): v for k, v in self.headers.items()})
                if receiver.delay:
                    receiver.stopping.wait(receiver.delay)
                reply = b"" if status < 300 else b"not now"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client timed out and left: expected

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(script: list[int] | None = None, default: int = 200, delay: float = 0) -> Receiver:
        receiver = Receiver(script or [], default, delay)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
async def sender(receivers: Callable[..., Receiver]) -> AsyncIterator[WebhookSender]:
    # Depends on ``receivers`` so it is closed (connections dropped) before they stop.
    async with WebhookSender() as webhook_sender:
        yield webhook_sender


def event(seq: int, kind: str = "step.done") -> Event:
    return Event(kind, "shop", "green", "r-7", seq, time.time(), {"weight": seq * 5})


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/hook"


async def test_twenty_events_arrive_in_order(
    receivers: Callable[..., Receiver], sender: WebhookSender
) -> None:
    """20 events emitted back to back reach a real receiver as seq 1..20, with Prism's headers."""
    receiver = receivers()
    hook = Webhook(url=receiver.url)
    for seq in range(1, 21):
        sender.emit([hook], event(seq))
    assert await sender.flush(10)
    assert receiver.seqs == list(range(1, 21))
    assert receiver.bodies[0]["release"] == "r-7"
    assert receiver.headers[0]["content-type"] == "application/json"
    assert receiver.headers[0]["user-agent"] == f"prism/{__version__}"
    assert receiver.headers[0]["x-prism-event"] == "step.done"
    assert sender.stats() == {receiver.url: {"delivered": 20, "failed": 0, "last_error": None}}


async def test_event_delivered_after_two_500s(
    receivers: Callable[..., Receiver], sender: WebhookSender
) -> None:
    """A receiver answering 500 twice then 200 gets the event on the third try, before the next."""
    receiver = receivers(script=[500, 500])
    hook = Webhook(url=receiver.url, retries=3)
    sender.emit([hook], event(1))
    sender.emit([hook], event(2))
    assert await sender.flush(10)
    assert receiver.seqs == [1, 1, 1, 2]
    stats = sender.stats()[receiver.url]
    assert stats["delivered"] == 2
    assert stats["failed"] == 0
    assert stats["last_error"] == "500 Internal Server Error: not now"


async def test_down_receiver_does_not_block_emit(
    receivers: Callable[..., Receiver], sender: WebhookSender
) -> None:
    """With one receiver down, emit() returns at once and the live receiver is served meanwhile."""
    live = receivers()
    dead = closed_url()
    hooks = [Webhook(url=dead, retries=3), Webhook(url=live.url)]
    started = time.monotonic()
    for seq in range(1, 6):
        sender.emit(hooks, event(seq))
    assert time.monotonic() - started < 0.1
    await eventually(
        lambda: live.seqs,
        until=lambda seqs: len(seqs) == 5,
        timeout=2,
        interval=0.01,
        what="the live receiver's five events",
    )
    assert live.seqs == [1, 2, 3, 4, 5]
    # Each dead event takes 0.2 + 0.4 + 0.8 s of backoff: far from done yet.
    assert sender.stats()[dead]["failed"] == 0
    await sender.close()
    assert sender.stats()[dead]["delivered"] == 0
    assert sender.stats()[dead]["last_error"] is not None
    assert "ConnectError" in str(sender.stats()[dead]["last_error"])


async def test_down_receiver_is_given_up(sender: WebhookSender) -> None:
    """A receiver that stays down is retried, then given up and counted as failed."""
    dead = closed_url()
    sender.emit([Webhook(url=dead, retries=1)], event(1))
    assert await sender.flush(10)
    stats = sender.stats()[dead]
    assert stats["delivered"] == 0
    assert stats["failed"] == 1
    assert str(stats["last_error"]).startswith("ConnectError")


async def test_confirm_against_real_receivers(
    receivers: Callable[..., Receiver], sender: WebhookSender
) -> None:
    """confirm: 200 lets the release go on, 503 and a closed port hold it with a reason."""
    ok = receivers(default=200)
    busy = receivers(default=503)
    gate = event(1, kind="step.confirm")
    assert await confirm(sender, Webhook(url=ok.url), gate) == (True, "200 OK")
    assert await confirm(sender, Webhook(url=busy.url, retries=5), gate) == (
        False,
        "503 Service Unavailable: not now",
    )
    assert busy.seqs == [1]  # no retries
    held, reason = await confirm(sender, Webhook(url=closed_url()), gate)
    assert not held
    assert reason.startswith("ConnectError")
    assert ok.headers[0]["x-prism-event"] == "step.confirm"


async def test_confirm_times_out_on_a_slow_receiver(
    receivers: Callable[..., Receiver], sender: WebhookSender
) -> None:
    """A receiver slower than timeout_ms holds the release within about that time."""
    slow = receivers(delay=5)
    started = time.monotonic()
    result = await confirm(sender, Webhook(url=slow.url, timeout_ms=200), event(1))
    assert result == (False, "timed out after 200 ms")
    assert time.monotonic() - started < 2
