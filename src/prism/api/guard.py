"""The request guard: the ASGI layer every API request passes before any handler.

In order, for each request:

1. a **request id**, taken from ``X-Request-Id`` when it is a short token of
   safe characters, else generated; set for the request's duration
   (:mod:`prism.context`, so audit records and log lines carry it) and echoed
   in the answer's ``X-Request-Id``;
2. **header size**: more than ``max_headers`` bytes of headers is refused (431);
3. **credentials out of place** are refused (422) and never logged: a query
   parameter named like one, or the token anywhere but the ``Authorization``
   header (path, query, another header, the body), where it would end up in
   logs, histories or audit records;
4. **the body** is read whole, at most ``max_body`` bytes (``max_config_body``
   for ``PUT /api/v1/config``; 413 past it, before reading when
   ``Content-Length`` says so) within ``body_timeout`` seconds (408), and only
   then handed to the app: a refused request never reaches a handler, so it
   changes nothing;
5. every answer gets ``X-Request-Id``, and ``Strict-Transport-Security`` when
   the API is served over TLS;
6. one **access log** line per request (``prism.api.access``): method, path
   (never the query string), status, duration and request id; and, for
   ``/metrics``, its duration by method, route template and status.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prism import context
from prism.api.auth import NAMED_SECRET
from prism.api.problems import internal_error, problem
from prism.errors import (
    HeadersTooLarge,
    InvalidInput,
    PrismError,
    RequestTimeout,
    TooLarge,
)

__all__ = ["ApiLimits", "Guard"]

MIB = 1024 * 1024

access_log = logging.getLogger("prism.api.access")
log = logging.getLogger(__name__)

_NAMED_SECRET_BYTES = re.compile(NAMED_SECRET.pattern.encode(), re.ASCII)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)
# query parameters that look like someone put a credential in the URL
_CREDENTIAL_PARAMS = frozenset(
    {"token", "access_token", "api_key", "apikey", "authorization", "bearer"}
)
HSTS = "max-age=31536000"


@dataclass(frozen=True)
class ApiLimits:
    """What one API request may weigh and how long it may take to arrive."""

    max_body: int = 1 * MIB
    #: ``PUT /api/v1/config`` carries a whole spec
    max_config_body: int = 10 * MIB
    max_headers: int = 16 * 1024
    body_timeout: float = 10.0
    #: answers carry Strict-Transport-Security (the API is served over TLS)
    hsts: bool = False

    def body_limit(self, method: str, path: str) -> int:
        if method == "PUT" and path.rstrip("/") == "/api/v1/config":
            return self.max_config_body
        return self.max_body


class _Refused(Exception):
    def __init__(self, error: PrismError) -> None:
        self.error = error


class _Disconnected(Exception):
    pass


class Guard:
    """ASGI middleware applying :class:`ApiLimits` and request ids; see the module doc."""

    def __init__(
        self,
        app: ASGIApp,
        limits: ApiLimits,
        secrets: Callable[[], Iterable[str]],
        observe: Callable[[str, str, int, float], None] | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.secrets = secrets
        #: called with (method, route template, status, seconds) after every request
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        token = context.request_id.set(rid)
        status = 0

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = rid
                if self.limits.hsts:
                    headers["Strict-Transport-Security"] = HSTS
            await send(message)

        try:
            try:
                self._check_head(scope)
                body = await self._read_body(scope, receive)
            except _Refused as refused:
                await problem(refused.error, request_id=rid)(scope, receive, answer)
            except _Disconnected:
                status = 499  # the client went away before its request was whole
            else:
                try:
                    await self.app(scope, _replay(body, receive), answer)
                except Exception:
                    log.exception("unexpected error answering %s %s", scope["method"], rid)
                    if status:
                        raise  # the answer had begun: all that is left is to drop it
                    await problem(internal_error(), request_id=rid)(scope, receive, answer)
        finally:
            elapsed = time.perf_counter() - started
            self._log(scope, status, elapsed, rid)
            if self.observe is not None:
                # the route's template, never the path: a label per pin key would not end
                route = getattr(scope.get("route"), "path", "unmatched")
                self.observe(scope["method"], route, status, elapsed)
            context.request_id.reset(token)

    def _check_head(self, scope: Scope) -> None:
        size = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))
        if size > self.limits.max_headers:
            raise _Refused(
                HeadersTooLarge(
                    f"the request headers are {size} bytes; at most"
                    f" {self.limits.max_headers} are accepted",
                    detail={"limit": self.limits.max_headers},
                )
            )
        query = scope.get("query_string", b"").decode("latin-1")
        names = {k.lower() for k, _ in parse_qsl(query, keep_blank_values=True)}
        url = unquote(scope["path"]) + "?" + unquote(query)
        if (
            names & _CREDENTIAL_PARAMS
            or any(s and s in url for s in self.secrets())
            or NAMED_SECRET.search(url)
        ):
            raise _Refused(
                InvalidInput(
                    "credentials are never accepted in a URL",
                    hint="send the token as 'Authorization: Bearer <token>'; and replace it,"
                    " since URLs end up in logs and histories",
                )
            )
        others = b"\n".join(v for k, v in scope.get("headers", ()) if k != b"authorization")
        self._check_no_secret(others, "a header other than Authorization")

    def _check_no_secret(self, data: bytes, where: str) -> None:
        held = [s.encode() for s in self.secrets() if s]
        if any(s in data for s in held) or _NAMED_SECRET_BYTES.search(data):
            raise _Refused(
                InvalidInput(
                    f"the API token is only accepted in the Authorization header, not in {where}",
                    hint="nothing was changed; what a request carries elsewhere may end up"
                    " in logs and the audit log",
                )
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.limits.body_limit(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            raise _Refused(_too_large(declared, limit))
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Disconnected
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise _Refused(_too_large(size, limit))
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        body = b"".join(chunks)
                        self._check_no_secret(body, "the body")
                        return body
        except TimeoutError:
            raise _Refused(
                RequestTimeout(
                    f"the request body did not arrive within {self.limits.body_timeout:g} s",
                    hint="nothing was changed; send the whole request at once",
                )
            ) from None

    def _log(self, scope: Scope, status: int, seconds: float, rid: str) -> None:
        path = scope["path"]
        for secret in self.secrets():
            if secret and secret in unquote(path):
                path = "[a path holding a credential]"
        if NAMED_SECRET.search(unquote(path)):
            path = "[a path holding a credential]"
        method = scope["method"]
        ms = round(seconds * 1000, 1)
        level = logging.WARNING if status >= 500 else logging.INFO
        access_log.log(
            level,
            "%s %s %s %.1f ms",
            method,
            path,
            status,
            ms,
            extra={
                "request_id": rid,
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": ms,
            },
        )


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(size: int, limit: int) -> TooLarge:
    return TooLarge(
        f"the request body is {size} bytes or more; at most {limit} are accepted here",
        hint="nothing was changed; send less (a spec: fewer apps or servers)",
        detail={"limit": limit},
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the already read body once, then the client's next messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
