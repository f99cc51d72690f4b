"""Release events POSTed as JSON to webhooks, in order, without slowing the release.

Two ways to talk to a receiver:

* :class:`WebhookSender` is fire-and-forget. ``emit`` only enqueues; one worker
  task per URL drains that URL's queue, so each receiver sees its events
  strictly in order, and a slow or dead receiver delays nobody but itself.
  A failed POST (connection error, timeout, non-2xx) is retried ``retries``
  times with exponential backoff through the injected :class:`~prism.types.Clock`,
  then given up with a warning on the ``prism.release.webhooks`` logger and counted
  in :meth:`WebhookSender.stats`.
* :func:`confirm` is a synchronous gate: one POST, no retries, and the answer
  decides whether the release may take its next step. It never raises for
  network problems; they mean "hold".

Every POST carries ``Content-Type: application/json``, ``User-Agent:
prism/<version>`` and ``X-Prism-Event: <kind>``. Redirects are not followed
(a 3xx is a failure) and at most :data:`BODY_LIMIT` bytes of a reply are read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypedDict

import httpx

from prism import __version__
from prism.clock import SystemClock
from prism.release.plan import Webhook
from prism.types import Clock

__all__ = [
    "BODY_LIMIT",
    "Event",
    "HookStats",
    "WebhookSender",
    "confirm",
]

logger = logging.getLogger(__name__)

BODY_LIMIT = 1024
"""Bytes of a reply body read at most, only to quote it in an error reason."""

_REASON_LIMIT = 200
_KIND = re.compile(r"[A-Za-z0-9_.:-]{1,64}", re.ASCII)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


@dataclass(frozen=True, slots=True)
class Event:
    """One release event: what happened (``kind``) to which app, color and release.

    ``seq`` numbers the events of one release so a receiver can spot gaps and
    duplicates; ``at`` is unix seconds.
    """

    kind: str
    app: str
    color: str
    release_id: str
    seq: int
    at: float
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The kind travels in the X-Prism-Event header, so it must be a header-safe token.
        if _KIND.fullmatch(self.kind) is None:
            raise ValueError(f"event kind {self.kind!r} is not a 1-64 character token")

    def to_json(self) -> dict[str, Any]:
        """The wire form; its field names are a public contract, so they never change."""
        return {
            "event": self.kind,
            "app": self.app,
            "color": self.color,
            "release": self.release_id,
            "seq": self.seq,
            "at": self.at,
            "data": self.data,
        }


class HookStats(TypedDict):
    """Delivery counters of one webhook URL, for status output.

    ``failed`` counts events given up after all retries (or dropped because the
    queue was full); ``last_error`` is the reason of the most recent failed
    attempt, kept after later successes so status can still show it.
    """

    delivered: int
    failed: int
    last_error: str | None


@dataclass(slots=True)
class _Counters:
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class _Job:
    hook: Webhook
    kind: str
    seq: int
    body: bytes


def _encode(event: Event) -> bytes:
    # Serialised once at emit time: the payload is a snapshot even if the caller
    # later mutates ``data``, and ``default=str`` means an odd value (a datetime,
    # a Path) can never make emit() raise inside a release.
    return json.dumps(event.to_json(), separators=(",", ":"), default=str).encode()


def _headers(kind: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": f"prism/{__version__}",
        "X-Prism-Event": kind,
        # Uncompressed replies, so reading BODY_LIMIT raw bytes bounds the work.
        "Accept-Encoding": "identity",
    }


def _printable(text: str) -> str:
    """Text from a receiver, made safe to put in one log line."""
    return _UNPRINTABLE.sub(" ", text).strip()[:_REASON_LIMIT]


async def _snippet(reply: httpx.Response) -> str:
    """The start of a reply body; the rest is never read."""
    try:
        data = reply.content  # already in memory when a transport pre-read it (mocks do)
    except httpx.ResponseNotRead:
        data = b""
        async for chunk in reply.aiter_raw():
            data += chunk
            if len(data) >= BODY_LIMIT:
                break
    return _printable(data[:BODY_LIMIT].decode("utf-8", errors="replace"))


async def _post(
    client: httpx.AsyncClient, hook: Webhook, kind: str, body: bytes
) -> tuple[bool, str]:
    """One POST of ``body`` to ``hook``: ``(True, "200 OK")`` or ``(False, reason)``.

    Never raises for network trouble: every way a receiver can fail becomes a reason.
    """
    seconds = hook.timeout_ms / 1000
    try:
        # httpx's timeout bounds each phase (connect, each read ...); the outer
        # one bounds the whole exchange, so a receiver trickling bytes cannot
        # stretch a POST past the hook's timeout.
        async with (
            asyncio.timeout(seconds),
            client.stream(
                "POST",
                hook.url,
                content=body,
                headers=_headers(kind),
                timeout=seconds,
                follow_redirects=False,
            ) as reply,
        ):
            status = f"{reply.status_code} {_printable(reply.reason_phrase)}".rstrip()
            if reply.is_success:
                return True, status
            if reply.is_redirect:
                return False, f"{status} (redirects are not followed)"
            text = await _snippet(reply)
            return False, f"{status}: {text}" if text else status
    except (TimeoutError, httpx.TimeoutException):
        return False, f"timed out after {hook.timeout_ms} ms"
    except httpx.HTTPError as exc:
        return False, _printable(f"{type(exc).__name__}: {exc}")
    except OSError as exc:  # the transport should wrap these, but a socket error is still "down"
        return False, _printable(f"{type(exc).__name__}: {exc}")


class WebhookSender:
    """Delivers release events to webhooks in the background, in order per URL.

    Owns one :class:`httpx.AsyncClient` (no proxies from the environment, no
    redirects). Use it as an async context manager, or call :meth:`close`.
    ``transport`` replaces the network, e.g. with :class:`httpx.MockTransport`.
    At most ``max_pending`` events wait per URL; more are dropped and counted as
    failed, so a dead receiver cannot grow memory without bound.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        max_pending: int = 1000,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self.client = httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False
        )
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._max_pending = max_pending
        self._queues: dict[str, asyncio.Queue[_Job]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._counters: dict[str, _Counters] = {}
        # Events enqueued but not yet delivered or given up, over all URLs.
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def emit(self, hooks: Sequence[Webhook], event: Event) -> None:
        """Queue ``event`` for every hook whose ``events`` filter admits it; return at once.

        Call it from the event loop. Never blocks and never raises for a slow,
        failing or full receiver. A URL listed twice gets the event once.
        """
        if self._closed:
            logger.warning(
                "webhook sender is closed; %s event seq %d dropped", event.kind, event.seq
            )
            return
        body: bytes | None = None
        seen: set[str] = set()
        for hook in hooks:
            if hook.events is not None and event.kind not in hook.events:
                continue
            if hook.url in seen:
                continue
            seen.add(hook.url)
            body = body if body is not None else _encode(event)
            self._enqueue(_Job(hook, event.kind, event.seq, body))

    def _enqueue(self, job: _Job) -> None:
        url = job.hook.url
        counters = self._counters.setdefault(url, _Counters())
        queue = self._queues.get(url)
        if queue is None:
            queue = self._queues[url] = asyncio.Queue(self._max_pending)
            self._workers[url] = asyncio.create_task(self._drain(url, queue), name=f"webhook {url}")
        try:
            queue.put_nowait(job)
        except asyncio.QueueFull:
            counters.failed += 1
            counters.last_error = f"queue full ({self._max_pending} events pending)"
            logger.warning(
                "webhook %s: %s event seq %d dropped, %d events already pending",
                url,
                job.kind,
                job.seq,
                self._max_pending,
            )
            return
        self._pending += 1
        self._idle.clear()

    async def _drain(self, url: str, queue: asyncio.Queue[_Job]) -> None:
        """The one worker of ``url``: delivering one job at a time is what keeps order."""
        while True:
            job = await queue.get()
            counters = self._counters[url]
            try:
                await self._deliver(job, counters)
            except Exception as exc:
                # A bug here must not kill the worker: every later event of this
                # URL would sit in the queue forever and flush() would hang.
                counters.failed += 1
                counters.last_error = _printable(f"{type(exc).__name__}: {exc}")
                logger.exception("webhook %s: %s event seq %d failed", url, job.kind, job.seq)
            finally:
                queue.task_done()
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()

    async def _deliver(self, job: _Job, counters: _Counters) -> None:
        attempts = job.hook.retries + 1
        for attempt in range(attempts):
            ok, reason = await _post(self.client, job.hook, job.kind, job.body)
            if ok:
                counters.delivered += 1
                return
            counters.last_error = reason
            if attempt + 1 < attempts:
                logger.debug(
                    "webhook %s: %s event seq %d attempt %d failed: %s",
                    job.hook.url,
                    job.kind,
                    job.seq,
                    attempt + 1,
                    reason,
                )
                await self._clock.sleep(self._backoff(attempt))
        counters.failed += 1
        logger.warning(
            "webhook %s: gave up on %s event seq %d after %d attempts: %s",
            job.hook.url,
            job.kind,
            job.seq,
            attempts,
            counters.last_error,
        )

    def _backoff(self, attempt: int) -> float:
        """0.2 s, 0.4 s, 0.8 s ... capped, so a flapping receiver is not hammered."""
        return float(min(self._backoff_s * 2**attempt, self._max_backoff_s))

    # A timeout parameter rather than asyncio.timeout() around the call: a
    # shutdown path wants a yes/no answer, not a TimeoutError to catch.
    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until every queued event was delivered or given up.

        Returns False if ``timeout`` (real seconds) ran out first. Events
        emitted while waiting are waited for too.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def stats(self) -> dict[str, HookStats]:
        """Per URL: events delivered, events failed, and the last error seen."""
        return {
            url: HookStats(delivered=c.delivered, failed=c.failed, last_error=c.last_error)
            for url, c in self._counters.items()
        }

    async def close(self) -> None:
        """Stop the workers (undelivered events are dropped) and close the client.

        Call :meth:`flush` first to deliver what is queued. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        # Awaiting the cancelled tasks is what keeps asyncio from complaining
        # about tasks destroyed while pending.
        await asyncio.gather(*workers, return_exceptions=True)
        if self._pending:
            logger.info("webhook sender closed with %d undelivered events", self._pending)
        self._workers.clear()
        self._queues.clear()
        self._pending = 0
        self._idle.set()
        await self.client.aclose()


async def confirm(
    client_or_sender: httpx.AsyncClient | WebhookSender, hook: Webhook, event: Event
) -> tuple[bool, str]:
    """POST ``event`` to ``hook`` once and wait: may the release take its next step?

    ``(True, "200 OK")`` on any 2xx; otherwise ``(False, reason)`` — a non-2xx,
    a timeout or a connection error all mean "hold the release before this
    step". No retries: the caller decides when to ask again. Never raises for
    network problems.
    """
    client = (
        client_or_sender.client if isinstance(client_or_sender, WebhookSender) else client_or_sender
    )
    return await _post(client, hook, event.kind, _encode(event))
