"""Desired state in etcd v3: the fleet implementation of :class:`prism.types.Store`.

Open it with a URL naming one or more members and a key prefix::

    store = await EtcdStore.open("etcd://10.0.0.1:2379,10.0.0.2:2379/prism")

Key layout (every key lives under ``/<prefix>/``)::

    /<prefix>/kv<key>                          state: the Prism key, verbatim, after "kv"
                                               ("/apps/shop" is /prism/kv/apps/shop)
    /<prefix>/meta/revision                    put by every commit; its mod_revision is
                                               the revision of the newest commit
    /<prefix>/meta/audit-id                    the last audit id handed out (decimal)
    /<prefix>/audit/log/<rid>                  one audit record, JSON
    /<prefix>/audit/app/<app>/<rid>            the same record again, for its app
                                               (<app> %-quoted, so "/" cannot nest)
    /<prefix>/guard/<token>                    one per commit, on a 60 s lease (below)

``<rid>`` is ``9999999999999999 - id`` in 16 digits: etcd ranges sort by key,
ascending, and only then apply their limit cheaply, so ascending key order is
newest first and ``audit(app=..., limit=n)`` is one range read of ``n`` keys.
Ids come from ``meta/audit-id`` by compare-and-swap inside the transaction
that writes the record, so they are unique and increasing across every client.
Prefixes must not nest (``a`` and ``a/kvx`` would overlap).

Revisions are etcd's: ``commit`` is one etcd transaction and returns its
revision; it writes ``meta/revision`` and its guard, so every commit (even
one whose ops change nothing) gets a new, higher revision — except plain puts
of leased keys that compare and audit nothing (a node's report every
heartbeat), which are
idempotent, so they need no guard and do not move ``meta/revision``. Other writes
take etcd revisions too (audit records, lease expiry, other prefixes), so
revisions increase but are not consecutive. ``revision()`` is the cluster's
current revision: every change so far is at or below it, so a watch from it
misses nothing and is never compacted away (a resync is ``list`` plus a watch
from the ``revision()`` read before it). An audit record's ``revision`` is the
commit that wrote it; ``record()`` stores the newest commit's revision,
checked inside its transaction (exactly what SQLite stores).

Failure behaviour:

* Every call has a time budget (``timeout``, 5 s by default). On UNAVAILABLE,
  a deadline or a lost connection it retries on the next endpoint, with
  backoff, until the budget is spent, then raises StoreError "etcd at A, B
  unreachable: ..." naming each endpoint's last error. Other etcd errors
  (authentication, permission, no space, a request too large) raise at once
  with a hint. Nothing but :mod:`prism.errors` leaves this module.
* A commit is one transaction or nothing. A retry after a lost reply cannot
  apply it twice: each commit also creates ``guard/<token>``, and its compare
  says that key must be absent, so a second copy fails and reports the first
  one's revision instead. Guard keys live on a shared 60 s lease.
* ``watch`` reconnects (next endpoint, backoff) and re-watches from the last
  revision it saw + 1; if etcd compacted that revision it raises Compacted.
  If no endpoint answers within ``timeout`` it raises StoreError. gRPC
  keepalive pings an open watch every 2 s, so a frozen server (SIGSTOP, a dead
  link) fails the watch in ~3 s instead of hanging; etcd must permit that
  (``--grpc-keepalive-min-time 1s``). ``close`` ends every watch quietly.
* Username/password: the token etcd issues is renewed when etcd forgets it
  (restart, ``--auth-token-ttl``). TLS: ``cacert`` (and ``cert``/``key`` for
  client-certificate auth) open a TLS channel.

What aetcd lacks and this module adds: TLS channels, endpoint rotation,
token renewal, watch resumption, keepalive pings that catch a frozen server,
and a lease keepalive loop (:func:`keep_alive`). Prism uses aetcd's client for
its channel and its generated etcd stubs, and runs its own watch streams
(aetcd's shared watcher neither resumes nor reports a compaction on re-watch).
"""

from __future__ import annotations

import asyncio
import builtins
import ipaddress
import json
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import aetcd
import aetcd.exceptions
import aetcd.utils
import grpc
from aetcd import rpc

from prism.errors import Compacted, Conflict, InvalidInput, StoreError
from prism.types import (
    AuditDraft,
    AuditRecord,
    Clock,
    Compare,
    Delete,
    Entry,
    Lease,
    Put,
    WatchEvent,
    audits_of,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "EtcdLease",
    "EtcdStore",
    "EtcdURL",
    "KeepAlive",
    "keep_alive",
    "parse_store_url",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0  # seconds one store call may spend retrying before StoreError
MAX_KEY_LENGTH = 512  # as in SqliteStore
_PRINTABLE = re.compile(rf"[\x20-\x7e]{{0,{MAX_KEY_LENGTH}}}", re.ASCII)
_PAGE = 500  # keys per range read of list()
_CAS_ATTEMPTS = 50  # audit-id compare-and-swap rounds before giving up
_GUARD_TTL = 60  # seconds: a guard key outlives every retry of its commit
_BACKOFF_START = 0.05
_BACKOFF_MAX = 0.5
_ID_SPAN = 10**16  # audit ids are below this; keys hold _ID_SPAN - 1 - id
_ID_DIGITS = 16

# aetcd's generated protobuf and gRPC objects are untyped.
_Proto = Any

_CHANNEL_OPTIONS: dict[str, int] = {
    # Ping every 2 s while a call (a watch) is open and give up 1 s after an
    # unanswered ping: a frozen server fails the call in ~3 s. grpcio 1.6x+
    # times a ping out after ping_timeout_ms (default 60 s), so set both. No
    # pings without calls: etcd does not permit them (GOAWAY too_many_pings,
    # after which gRPC slows its pings down).
    "grpc.keepalive_time_ms": 2000,
    "grpc.keepalive_timeout_ms": 1000,
    "grpc.http2.ping_timeout_ms": 1000,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.http2.max_pings_without_data": 0,
    # Reconnect soon after a restart (gRPC's own backoff grows to 120 s).
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
}

_RETRY_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN}
)

_HINTS = (
    ("user name is empty", "etcd has authentication enabled: pass username and password"),
    ("authentication failed", "check the etcd username and password"),
    ("authentication is not enabled", "etcd has no authentication: pass no username/password"),
    ("permission denied", "grant the etcd user read and write access to the store prefix"),
    ("database space exceeded", "etcd is out of space: compact, defragment, disarm NOSPACE"),
    ("request is too large", "etcd limits a request (--max-request-bytes): commit less at once"),
    ("too many operations", "etcd limits ops per transaction (--max-txn-ops): commit fewer keys"),
    ("lease not found", "the lease expired or was revoked: grant a new one"),
)

T = TypeVar("T")


def _leased(op: Put | Delete) -> bool:
    return isinstance(op, Put) and op.lease is not None


# -- URLs ---------------------------------------------------------------------------------

_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z",
    re.ASCII,
)
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,63})*\Z")
_URL_FORM = "etcd://HOST:PORT[,HOST:PORT...]/PREFIX, e.g. etcd://127.0.0.1:2379/prism"


@dataclass(frozen=True, slots=True)
class EtcdURL:
    """A parsed store URL: the members to try, in order, and the key prefix."""

    endpoints: tuple[tuple[str, int], ...]
    prefix: str

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of each endpoint (IPv6 in brackets), as gRPC targets them."""
        return [f"{host}:{port}" for host, port in self.endpoints]

    def __str__(self) -> str:
        return f"etcd://{','.join(self.addresses)}/{self.prefix}"


def _bad_url(url: object, why: str) -> InvalidInput:
    return InvalidInput(f"invalid etcd store URL {url!r:.200}: {why}", hint=f"use {_URL_FORM}")


def _parse_endpoint(url: str, text: str) -> tuple[str, int]:
    if not text:
        raise _bad_url(url, "an empty address (a stray comma?)")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            sep = ""
        if not sep:
            raise _bad_url(url, f"{text!r} is not [IPv6]:PORT")
        host = f"[{host}]"
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise _bad_url(url, f"{text!r} has no port")
        if _HOSTNAME.fullmatch(host) is None:
            raise _bad_url(url, f"{host!r} is not a host name or IPv4 address")
        if host.replace(".", "").isdigit():
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise _bad_url(url, f"{host!r} is not an IPv4 address") from None
    if re.fullmatch(r"[0-9]{1,5}", port, re.ASCII) is None or not 0 < int(port) < 65536:
        raise _bad_url(url, f"port {port!r} is not a number from 1 to 65535")
    return host, int(port)


def parse_store_url(url: str) -> EtcdURL:
    """Parse ``etcd://host:port[,host:port...]/prefix`` strictly; InvalidInput says why not.

    Hosts are names, IPv4 or ``[IPv6]`` addresses, each with a port; the prefix
    is one or more ``/``-separated segments of letters, digits, ``.``, ``_`` and
    ``-``. No user name or password (pass them to :meth:`EtcdStore.open`, so they
    stay out of logs), no query, no fragment.
    """
    if not isinstance(url, str):
        raise _bad_url(url, "not a string")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "etcd":
        raise _bad_url(url, "it must start with etcd://")
    if any(c in rest for c in "?#@ \t\r\n\\"):
        why = (
            "credentials do not belong in the URL: pass username and password instead"
            if "@" in rest
            else "it may not contain ?, #, \\ or whitespace"
        )
        raise _bad_url(url, why)
    authority, slash, prefix = rest.partition("/")
    if not authority:
        raise _bad_url(url, "no host:port")
    if not slash or not prefix:
        raise _bad_url(url, "no key prefix after the addresses")
    if _PREFIX.fullmatch(prefix) is None or len(prefix) > 128:
        raise _bad_url(
            url,
            f"prefix {prefix!r} must be up to 128 characters of /-separated segments"
            " of letters, digits, '.', '_' and '-' (no empty segment, no leading or"
            " trailing '/')",
        )
    endpoints = tuple(_parse_endpoint(url, part) for part in authority.split(","))
    if len(set(endpoints)) != len(endpoints):
        raise _bad_url(url, "an endpoint is listed twice")
    return EtcdURL(endpoints, prefix)


# -- validation (the same rules as SqliteStore) -------------------------------------------


def _check_key(key: object, *, prefix: bool = False) -> None:
    """Keys (and prefixes, which may be empty) are printable ASCII, at most 512 long."""
    if not isinstance(key, str) or not (key or prefix) or _PRINTABLE.fullmatch(key) is None:
        raise InvalidInput(
            f"invalid store {'prefix' if prefix else 'key'}: {key!r:.80}",
            hint=f"use {0 if prefix else 1} to {MAX_KEY_LENGTH} printable ASCII characters",
        )


def _check_ops(ops: Sequence[Put | Delete], expect: Sequence[Compare]) -> None:
    seen: set[str] = set()
    for op in ops:
        if not isinstance(op, Put | Delete):
            raise InvalidInput(f"not a store operation: {op!r:.80}", hint="pass Put or Delete")
        _check_key(op.key)
        if isinstance(op, Put):
            if not isinstance(op.value, str):
                raise InvalidInput(f"value of {op.key!r} is not text", hint="store JSON text")
            lease = op.lease
            if lease is not None and (
                not isinstance(lease, int) or isinstance(lease, bool) or lease <= 0
            ):
                raise InvalidInput(
                    f"invalid lease for {op.key!r}: {lease!r:.40}", hint="use a granted Lease's id"
                )
        # Like etcd itself: one transaction touches a key once.
        if op.key in seen:
            raise InvalidInput(
                f"key {op.key!r} appears twice in one commit", hint="merge the operations"
            )
        seen.add(op.key)
    for cmp in expect:
        _check_key(cmp.key)
        if (
            not isinstance(cmp.mod_revision, int)
            or isinstance(cmp.mod_revision, bool)
            or cmp.mod_revision < 0
        ):
            raise InvalidInput(
                f"invalid expected revision for {cmp.key!r}: {cmp.mod_revision!r}",
                hint="use a mod_revision >= 0 (0: the key must not exist)",
            )


def _encode_value(key: str, value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"value of {key!r} is not valid text: {exc}", hint="store JSON") from exc


def _audit_body(audit: AuditDraft, at: float) -> dict[str, Any]:
    body = {
        "at": at,
        "actor": audit.actor,
        "action": audit.action,
        "app": audit.app,
        "detail": audit.detail,
        "reason": audit.reason,
    }
    if audit.request_id is not None:
        body["request_id"] = audit.request_id
    _audit_value(body)  # fail on bad detail before anything is sent
    return body


def _audit_value(body: dict[str, Any]) -> bytes:
    try:
        return json.dumps(body, sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"audit detail is not JSON: {exc}", hint="use str, numbers, lists and dicts"
        ) from exc


# -- etcd request building ----------------------------------------------------------------


def _prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix`` (etcd's convention)."""
    return bytes(aetcd.utils.prefix_range_end(prefix))


def _put(key: bytes, value: bytes, lease: int = 0) -> _Proto:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def _delete(key: bytes) -> _Proto:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def _get(key: bytes, range_end: bytes = b"") -> _Proto:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key, range_end=range_end))


def _mod_is(key: bytes, mod_revision: int) -> _Proto:
    """Compare: ``key`` was last modified at ``mod_revision``; 0 means it does not exist."""
    if mod_revision == 0:
        return rpc.Compare(key=key, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=0)
    return rpc.Compare(
        key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=mod_revision
    )


def _rid(audit_id: int) -> bytes:
    return f"{_ID_SPAN - 1 - audit_id:0{_ID_DIGITS}d}".encode()


# -- errors -------------------------------------------------------------------------------


def _details(exc: grpc.aio.AioRpcError) -> str:
    return str(exc.details() or exc.code().name)


def _summary(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {_details(exc)}"[:300]
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return (str(exc) or type(exc).__name__)[:300]


def _retryable(exc: grpc.aio.AioRpcError) -> bool:
    if exc.code() in _RETRY_CODES:
        return True
    # etcd's "too many requests" is load shedding: another member may take it
    return exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "too many" in _details(exc)


def _stale_token(text: str) -> bool:
    """etcd forgot our auth token (restart, expiry) or our auth revision is old."""
    return "invalid auth token" in text or "revision of auth store is old" in text


def _rpc_error(doing: str, endpoint: str, exc: grpc.aio.AioRpcError) -> StoreError:
    details = _details(exc)
    hint = next((h for marker, h in _HINTS if marker in details.lower()), "check etcd's logs")
    return StoreError(
        f"could not {doing}: etcd at {endpoint} refused: {details}",
        hint=hint,
        detail={"grpc_code": exc.code().name, "etcd_error": details},
    )


def _closed_error() -> StoreError:
    return StoreError("the store is closed", hint="open it again")


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _StreamEnded(Exception):
    """etcd ended a watch stream without an error status."""


def _read_pem(path: str | Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the {what} {str(path)!r}: {exc.strerror}",
            hint="check the path and its permissions",
        ) from exc
    if b"-----BEGIN " not in data:
        raise InvalidInput(f"the {what} {str(path)!r} is not PEM", hint="give a PEM file")
    return data


# -- one endpoint -------------------------------------------------------------------------


class _Client(aetcd.Client):  # type: ignore[misc]  # aetcd is untyped
    """aetcd's client for one endpoint, on a TLS channel when given credentials.

    aetcd's ``connect`` opens an insecure channel only; this one is the same but
    for the channel, authenticates within a deadline, can renew its token, and
    keeps a WatchStub for Prism's own watch streams.
    """

    def __init__(
        self,
        address: str,
        *,
        username: str | None,
        password: str | None,
        credentials: grpc.ChannelCredentials | None,
    ) -> None:
        host, _, port = address.rpartition(":")
        super().__init__(
            host=host, port=int(port), username=username, password=password,
            options=_CHANNEL_OPTIONS,
        )  # fmt: skip
        self.address = address
        self._credentials = credentials
        self.watchstub: _Proto = None
        self.lock = asyncio.Lock()

    async def connect(self, budget: float = DEFAULT_TIMEOUT) -> None:
        if self._connected.is_set():
            return
        options = list(self._options.items())
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(self.address, options=options)
        else:
            channel = grpc.aio.secure_channel(self.address, self._credentials, options=options)
        try:
            metadata = await self._authenticate(channel, budget)
        except BaseException:
            await channel.close()
            raise
        self.channel = channel
        self.metadata = metadata
        self.kvstub = rpc.KVStub(channel)
        self.leasestub = rpc.LeaseStub(channel)
        self.clusterstub = rpc.ClusterStub(channel)
        self.maintenancestub = rpc.MaintenanceStub(channel)
        self.watchstub = rpc.WatchStub(channel)
        self._connected.set()

    async def reauthenticate(self, budget: float) -> None:
        """Ask for a fresh token on the open channel (streams already open keep theirs)."""
        self.metadata = await self._authenticate(self.channel, budget)

    async def _authenticate(self, channel: _Proto, budget: float) -> _Proto:
        if self._username is None:
            return None
        request = rpc.AuthenticateRequest(name=self._username, password=self._password)
        response = await rpc.AuthStub(channel).Authenticate(request, timeout=budget)
        return (("token", response.token),)


@dataclass(frozen=True, slots=True)
class _Meta:
    """What this store last knew of ``meta/``: the audit counter and the newest commit."""

    audit_id: int = 0
    audit_mod: int = 0
    commit_revision: int = 0

    def newer(self, other: _Meta) -> _Meta:
        audit = max((self.audit_mod, self.audit_id), (other.audit_mod, other.audit_id))
        return _Meta(audit[1], audit[0], max(self.commit_revision, other.commit_revision))


# -- the store ----------------------------------------------------------------------------


class EtcdStore:
    """The :class:`prism.types.Store` on etcd v3; see the module docstring for the layout.

    Build it with :meth:`open`; release it with :meth:`close` (or ``async with``).
    """

    def __init__(
        self, url: EtcdURL, clients: Sequence[_Client], *, clock: Clock | None, timeout: float
    ) -> None:
        """Internal: use :meth:`open`."""
        self.url = url
        root = f"/{url.prefix}/".encode()
        self._kv = root + b"kv"
        self._meta = root + b"meta/"
        self._marker = self._meta + b"revision"
        self._audit_id = self._meta + b"audit-id"
        self._audit_log = root + b"audit/log/"
        self._audit_app = root + b"audit/app/"
        self._guards = root + b"guard/"
        self._clients = list(clients)
        self._current = 0
        self._clock = clock
        self._timeout = timeout
        self._attempt = max(timeout / 3, 1.0)  # one try's deadline: leaves time to fail over
        self._closed = False
        self._closing = asyncio.Event()
        self._streams: set[_Proto] = set()  # open watch calls, cancelled by close()
        self._known = _Meta()
        self._guard: tuple[int, float] | None = None  # (lease id, monotonic time granted)
        self._guard_lock = asyncio.Lock()
        # Guarded writes of this store, one at a time: each compares meta/revision or
        # meta/audit-id, so concurrent ones from one process would only fail each
        # other's compare (a burst of audit records could starve a commit).
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        cacert: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (each call's budget, kept by the store)
    ) -> EtcdStore:
        """Connect to the etcd named by ``url`` (see :func:`parse_store_url`) and check it answers.

        ``username``/``password`` authenticate to etcd; ``cacert`` (a PEM CA file)
        turns on TLS, ``cert``/``key`` add a client certificate. ``clock`` stamps
        audit records. ``timeout`` bounds each call, retries included. Raises
        InvalidInput for bad arguments, StoreError if etcd cannot be used.
        """
        parsed = parse_store_url(url)
        if (username is None) != (password is None):
            raise InvalidInput(
                "etcd username and password go together", hint="pass both, or neither"
            )
        if username is not None and (not isinstance(username, str) or not username):
            raise InvalidInput("empty etcd username", hint="pass the etcd user's name")
        if (cert is None) != (key is None):
            raise InvalidInput(
                "a client certificate needs its key", hint="pass cert and key together"
            )
        if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
            raise InvalidInput(f"invalid timeout: {timeout!r}", hint="use e.g. 5 seconds")
        credentials = None
        if cacert is not None or cert is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read_pem(cacert, "CA certificate") if cacert else None,
                private_key=_read_pem(key, "client key") if key else None,
                certificate_chain=_read_pem(cert, "client certificate") if cert else None,
            )
        clients = [
            _Client(address, username=username, password=password, credentials=credentials)
            for address in parsed.addresses
        ]
        store = cls(parsed, clients, clock=clock, timeout=float(timeout))
        try:
            await store._read_meta()
        except BaseException:
            await store.close()
            raise
        return store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every channel and end every watch of this store quietly. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        for call in list(self._streams):
            call.cancel()
        for client in self._clients:
            try:
                await client.close()
            except (grpc.RpcError, aetcd.exceptions.ClientError) as exc:
                log.debug("closing the channel to %s: %s", client.address, exc)

    # -- reads ----------------------------------------------------------------------------

    async def revision(self) -> int:
        """etcd's current revision: every change so far has a revision at or below it."""
        response = await self._range(
            "read the revision", rpc.RangeRequest(key=self._marker, count_only=True)
        )
        return int(response.header.revision)

    async def get(self, key: str) -> Entry | None:
        """The entry at ``key``, or None."""
        _check_key(key)
        response = await self._range(f"read {key!r}", rpc.RangeRequest(key=self._kv + key.encode()))
        return self._entry(response.kvs[0]) if response.kvs else None

    async def list(self, prefix: str) -> list[Entry]:
        """Every entry whose key starts with ``prefix`` (taken literally), sorted by key.

        Read in pages of 500 keys, all at the revision of the first page, so the
        result is one consistent snapshot however long it is.
        """
        _check_key(prefix, prefix=True)
        start = self._kv + prefix.encode()
        end = _prefix_end(start)
        entries: list[Entry] = []
        at_revision = 0
        while True:
            request = rpc.RangeRequest(key=start, range_end=end, limit=_PAGE, revision=at_revision)
            response = await self._range(f"list {prefix!r}", request)
            entries.extend(self._entry(kv) for kv in response.kvs)
            if not response.more or not response.kvs:
                return entries
            at_revision = at_revision or int(response.header.revision)
            start = bytes(response.kvs[-1].key) + b"\0"

    async def stamp(self, prefix: str) -> tuple[int, int]:
        """``(entries, newest mod_revision)`` under ``prefix``; see :class:`prism.types.Store`."""
        _check_key(prefix, prefix=True)
        start = self._kv + prefix.encode()
        request = rpc.RangeRequest(
            key=start,
            range_end=_prefix_end(start),
            limit=1,
            keys_only=True,
            sort_order=rpc.RangeRequest.DESCEND,
            sort_target=rpc.RangeRequest.MOD,
        )
        response = await self._range(f"stamp {prefix!r}", request)
        newest = int(response.kvs[0].mod_revision) if response.kvs else 0
        return int(response.count), newest

    async def audit(
        self, *, app: str | None = None, limit: int = 100
    ) -> builtins.list[AuditRecord]:
        """Audit records, newest first, optionally only those of one app (one range read)."""
        if not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"invalid audit limit: {limit!r}", hint="use a limit >= 1")
        start = self._audit_log if app is None else self._app_index(app)
        request = rpc.RangeRequest(key=start, range_end=_prefix_end(start), limit=limit)
        response = await self._range("read the audit log", request)
        return [self._audit_record(kv) for kv in response.kvs]

    # -- writes ---------------------------------------------------------------------------

    async def commit(
        self,
        ops: Sequence[Put | Delete],
        *,
        expect: Sequence[Compare] = (),
        audit: AuditDraft | Sequence[AuditDraft] | None = None,
    ) -> int:
        """Apply ``ops`` in one etcd transaction if every ``expect`` holds; return its revision.

        Raises Conflict (changing nothing) when a compared key's mod_revision
        differs, naming the key, the expected and the actual revision. Every
        commit takes a new revision, even one with no ops at all (only an audit).
        """
        _check_ops(ops, expect)
        drafts = audits_of(audit)
        bodies = [(d.app, _audit_body(d, self._now())) for d in drafts]
        state = [
            _put(self._kv + op.key.encode(), _encode_value(op.key, op.value), op.lease or 0)
            if isinstance(op, Put)
            else _delete(self._kv + op.key.encode())
            for op in ops
        ]
        leases = sorted({op.lease for op in ops if isinstance(op, Put) and op.lease})
        if not drafts and not expect and ops and all(_leased(op) for op in ops):
            return await self._plain_puts(state, leases)
        guard = self._guards + secrets.token_hex(16).encode()
        reads = [_get(self._kv + cmp.key.encode()) for cmp in expect]
        async with self._write_lock:
            return await self._guarded_commit(expect, bodies, state, guard, reads, leases)

    async def _guarded_commit(
        self,
        expect: Sequence[Compare],
        bodies: builtins.list[tuple[str | None, dict[str, Any]]],
        state: builtins.list[_Proto],
        guard: bytes,
        reads: builtins.list[_Proto],
        leases: builtins.list[int],
    ) -> int:
        for _ in range(_CAS_ATTEMPTS):
            known = self._known
            compare = [_mod_is(self._kv + c.key.encode(), c.mod_revision) for c in expect]
            compare.append(_mod_is(guard, 0))
            success = [*state, _put(self._marker, b"")]
            audit_id = known.audit_id + len(bodies)
            if bodies:
                compare.append(_mod_is(self._audit_id, known.audit_mod))
                success += self._audit_ops(known.audit_id + 1, bodies)
            response = await self._transaction("commit", compare, success, guard, reads, leases)
            if response is None:
                continue  # the guard lease had ended; a new one is granted
            revision = int(response.header.revision)
            if response.succeeded:
                learned = _Meta(audit_id, revision, revision) if bodies else _Meta(0, 0, revision)
                self._known = self._known.newer(learned)
                return revision
            landed = response.responses[0].response_range.kvs
            if landed:  # an earlier try of this very commit landed; its reply was lost
                return int(landed[0].create_revision)
            self._check_conflicts(expect, response.responses[2:])
            self._learn(response.responses[1].response_range.kvs)
        raise StoreError(
            "could not commit: other writers kept taking the next audit id",
            hint="retry; many control planes writing audited changes at once contend here",
        )

    async def _plain_puts(self, puts: builtins.list[_Proto], leases: builtins.list[int]) -> int:
        """Leased puts that compare and audit nothing (a node's report, every heartbeat):
        applying one twice after a lost reply changes nothing, so they go without a guard
        and leave ``meta/revision`` alone (audit records are not held back by them)."""
        request = rpc.TxnRequest(compare=[], success=puts, failure=[])
        try:
            response = await self._call(
                "put", lambda c, t: c.kvstub.Txn(request, timeout=t, metadata=c.metadata)
            )
        except StoreError as exc:
            if leases and "lease not found" in str(exc):
                raise StoreError(
                    f"lease {leases[0]:x} has ended",
                    hint="grant a new lease",
                    detail={"ended": True},
                ) from exc
            raise
        return int(response.header.revision)

    async def record(self, audit: AuditDraft) -> AuditRecord:
        """Store an audit entry carrying the newest commit's revision, changing no state."""
        body = _audit_body(audit, self._now())
        guard = self._guards + secrets.token_hex(16).encode()
        async with self._write_lock:
            return await self._guarded_record(audit, body, guard)

    async def _guarded_record(
        self, audit: AuditDraft, body: dict[str, Any], guard: bytes
    ) -> AuditRecord:
        for _ in range(_CAS_ATTEMPTS):
            known = self._known
            audit_id = known.audit_id + 1
            body["revision"] = known.commit_revision
            compare = [
                _mod_is(self._marker, known.commit_revision),
                _mod_is(self._audit_id, known.audit_mod),
                _mod_is(guard, 0),
            ]
            success = self._audit_ops(audit_id, [(audit.app, body)])
            response = await self._transaction(
                "record an audit entry", compare, success, guard, [], []
            )
            if response is None:
                continue
            if response.succeeded:
                revision = int(response.header.revision)
                self._known = self._known.newer(_Meta(audit_id, revision, 0))
            elif not response.responses[0].response_range.kvs:
                self._learn(response.responses[1].response_range.kvs)
                continue
            return self._record_from(audit_id, body)
        raise StoreError(
            "could not record the audit entry: other writers kept committing",
            hint="retry; many control planes writing at once contend here",
        )

    async def _transaction(
        self,
        doing: str,
        compare: builtins.list[_Proto],
        success: builtins.list[_Proto],
        guard: bytes,
        reads: builtins.list[_Proto],
        leases: builtins.list[int],
    ) -> _Proto | None:
        """One guarded transaction; None if the guard lease had ended (so: try again)."""
        lease = await self._guard_lease()
        request = rpc.TxnRequest(
            compare=compare,
            success=[*success, _put(guard, b"", lease)],
            failure=[_get(guard), _get(self._meta, _prefix_end(self._meta)), *reads],
        )
        try:
            return await self._call(
                doing, lambda c, t: c.kvstub.Txn(request, timeout=t, metadata=c.metadata)
            )
        except StoreError as exc:
            if exc.detail.get("grpc_code") != "NOT_FOUND":
                raise
            if await self._lease_gone(lease):
                self._guard = None  # ours ended (etcd down for a minute?): grant another
                return None
            if not leases:
                raise
            raise StoreError(
                f"could not {doing}: lease {', '.join(f'{x:x}' for x in leases)} not found",
                hint="the lease expired or was revoked: grant a new one and put its keys again",
                detail={"leases": leases},
            ) from exc

    def _check_conflicts(self, expect: Sequence[Compare], reads: Sequence[_Proto]) -> None:
        failed = []
        for cmp, read in zip(expect, reads, strict=True):
            kvs = read.response_range.kvs
            actual = int(kvs[0].mod_revision) if kvs else 0
            if actual != cmp.mod_revision:
                failed.append({"key": cmp.key, "expected": cmp.mod_revision, "actual": actual})
        if failed:
            first = failed[0]
            raise Conflict(
                f"key {first['key']!r} changed: expected mod_revision {first['expected']},"
                f" found {first['actual']} (0 = absent)",
                hint="re-read the current state and retry",
                detail={"conflicts": failed},
            )

    def _audit_ops(
        self, first_id: int, bodies: Sequence[tuple[str | None, dict[str, Any]]]
    ) -> builtins.list[_Proto]:
        """Entries ``first_id``, ``first_id + 1``, ... and the new ``meta/audit-id``
        (put once: etcd refuses a key twice in one transaction)."""
        last_id = first_id + len(bodies) - 1
        if not 0 < first_id <= last_id < _ID_SPAN:
            raise StoreError(f"audit id {last_id} is out of range", hint="check meta/audit-id")
        ops = [_put(self._audit_id, str(last_id).encode())]
        for audit_id, (app, body) in enumerate(bodies, start=first_id):
            value = _audit_value({**body, "id": audit_id})
            ops.append(_put(self._audit_log + _rid(audit_id), value))
            if app is not None:
                ops.append(_put(self._app_index(app) + _rid(audit_id), value))
        return ops

    def _app_index(self, app: str) -> bytes:
        return self._audit_app + quote(app, safe="").encode() + b"/"

    # -- leases ---------------------------------------------------------------------------

    async def grant(self, ttl: float) -> EtcdLease:
        """A lease of ``ttl`` seconds (etcd rounds up to whole seconds, and to its minimum)."""
        if (
            not isinstance(ttl, int | float)
            or isinstance(ttl, bool)
            or not math.isfinite(ttl)
            or ttl <= 0
        ):
            raise InvalidInput(f"invalid lease ttl: {ttl!r}", hint="use a number of seconds > 0")
        seconds = max(1, math.ceil(ttl))
        response = await self._grant(seconds, f"grant a {seconds}s lease")
        return EtcdLease(self, int(response.ID), float(response.TTL))

    async def _grant(self, seconds: int, doing: str) -> _Proto:
        request = rpc.LeaseGrantRequest(TTL=seconds)
        response = await self._call(
            doing, lambda c, t: c.leasestub.LeaseGrant(request, timeout=t, metadata=c.metadata)
        )
        if response.error:
            raise StoreError(f"could not {doing}: {response.error}", hint="check etcd's logs")
        return response

    async def _refresh(self, lease_id: int) -> None:
        async def once(client: _Client, budget: float) -> _Proto:
            call = client.leasestub.LeaseKeepAlive(timeout=budget, metadata=client.metadata)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                await call.done_writing()
                return await call.read()
            finally:
                call.cancel()

        reply = await self._call(f"refresh lease {lease_id:x}", once)
        if reply is grpc.aio.EOF or reply.TTL <= 0:
            raise StoreError(
                f"lease {lease_id:x} has ended: it expired or was revoked",
                hint="grant a new lease and put its keys again",
                detail={"lease": lease_id, "ended": True},
            )

    async def _revoke(self, lease_id: int) -> None:
        async def once(client: _Client, budget: float) -> None:
            request = rpc.LeaseRevokeRequest(ID=lease_id)
            try:
                await client.leasestub.LeaseRevoke(
                    request, timeout=budget, metadata=client.metadata
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:  # already gone: fine
                    raise

        await self._call(f"revoke lease {lease_id:x}", once)

    async def lease(self, lease_id: int, ttl: float) -> EtcdLease:
        """A handle on a lease granted before (by this process or another)."""
        return EtcdLease(self, lease_id, ttl)

    async def _remaining(self, lease_id: int) -> float | None:
        request = rpc.LeaseTimeToLiveRequest(ID=lease_id)
        response = await self._call(
            f"read lease {lease_id:x}",
            lambda c, t: c.leasestub.LeaseTimeToLive(request, timeout=t, metadata=c.metadata),
        )
        ttl = int(response.TTL)
        return float(ttl) if ttl > 0 else None

    async def _lease_gone(self, lease_id: int) -> bool:
        request = rpc.LeaseTimeToLiveRequest(ID=lease_id)
        response = await self._call(
            "check the guard lease",
            lambda c, t: c.leasestub.LeaseTimeToLive(request, timeout=t, metadata=c.metadata),
        )
        return int(response.TTL) <= 0

    async def _guard_lease(self) -> int:
        """The lease guard keys go on: granted for 60 s, replaced once half of that passed."""
        async with self._guard_lock:
            now = time.monotonic()
            if self._guard is None or now - self._guard[1] > _GUARD_TTL / 2:
                response = await self._grant(_GUARD_TTL, "grant the commit guard lease")
                self._guard = (int(response.ID), now)
            return self._guard[0]

    # -- watch ----------------------------------------------------------------------------

    def watch(self, prefix: str, *, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        """Yield every change under ``prefix`` with a revision above ``from_revision``.

        Past changes first, in revision order (ops of one commit in the order
        given), then live ones. It survives etcd restarts and member failures
        (see the module docstring), raises Compacted when the history it needs
        is gone, StoreError when no endpoint answers within ``timeout``, and
        ends when the store is closed. Wrap it in ``contextlib.aclosing``.
        """
        _check_key(prefix, prefix=True)
        if (
            not isinstance(from_revision, int)
            or isinstance(from_revision, bool)
            or from_revision < 0
        ):
            raise InvalidInput(
                f"invalid from_revision: {from_revision!r}", hint="use a revision >= 0"
            )
        return self._watch(prefix, from_revision)

    async def _watch(self, prefix: str, seen: int) -> AsyncGenerator[WatchEvent, None]:
        failing_since: float | None = None
        errors: dict[str, str] = {}
        delay = _BACKOFF_START
        renew: set[int] = set()  # endpoints whose auth token etcd forgot
        last: BaseException | None = None
        while not self._closed:
            index = self._current
            client = self._clients[index]
            call: _Proto = None
            try:
                call = await self._open_watch(index, prefix, seen, renew)
                failing_since, delay = None, _BACKOFF_START
                errors.clear()
                while True:
                    response = await call.read()
                    self._check_watch_response(response, prefix, seen)
                    if not response.events:  # progress: the watch is synced up to here
                        seen = max(seen, int(response.header.revision))
                    for event in response.events:
                        watched = self._event(event)
                        seen = watched.revision
                        yield watched
            except asyncio.CancelledError:
                if self._closed and not _cancelling():
                    return  # close() cancelled the stream: the end of the watch
                raise
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    return
                if _stale_token(_details(exc)):
                    renew.add(index)
                elif not _retryable(exc):
                    raise _rpc_error(f"watch {prefix!r}", client.address, exc) from exc
                errors[client.address] = _summary(exc)
                last = exc
            except (TimeoutError, _StreamEnded) as exc:
                if self._closed:
                    return
                errors[client.address] = _summary(exc)
                last = exc
            finally:
                if call is not None:
                    call.cancel()
                    self._streams.discard(call)
            now = time.monotonic()
            failing_since = failing_since or now
            if now + delay - failing_since > self._timeout:
                raise self._unreachable(f"watch {prefix!r}", errors) from last
            log.info("etcd watch of %r lost (%s); resuming after %d", prefix, errors, seen)
            self._rotate(index)
            if await self._sleep_unless_closed(delay):
                return
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _open_watch(self, index: int, prefix: str, seen: int, renew: set[int]) -> _Proto:
        """A watch stream on endpoint ``index`` from ``seen + 1``, once etcd confirmed it."""
        client = self._clients[index]
        start = self._kv + prefix.encode()
        async with asyncio.timeout(self._attempt):
            await self._connect(client, self._attempt)
            if index in renew:
                await client.reauthenticate(self._attempt)
                renew.discard(index)
            call = client.watchstub.Watch(metadata=client.metadata)
            self._streams.add(call)
            try:
                if self._closed:
                    raise _StreamEnded("the store was closed")
                request = rpc.WatchCreateRequest(
                    key=start,
                    range_end=_prefix_end(start),
                    start_revision=seen + 1,
                    progress_notify=True,
                )
                await call.write(rpc.WatchRequest(create_request=request))
                response = await call.read()
                self._check_watch_response(response, prefix, seen)
                if not response.created:
                    raise StoreError(
                        "etcd answered a new watch with events before confirming it",
                        hint="check the etcd version (Prism needs 3.4 or newer)",
                    )
            except BaseException:
                call.cancel()
                self._streams.discard(call)
                raise
        return call

    def _check_watch_response(self, response: _Proto, prefix: str, seen: int) -> None:
        if response is grpc.aio.EOF:
            raise _StreamEnded("etcd ended the watch stream")
        if response.compact_revision:
            oldest = int(response.compact_revision)
            error = Compacted(
                f"the history of {prefix!r} after revision {seen} is gone:"
                f" etcd compacted it (it keeps revisions from {oldest} on)",
                revision=seen + 1,
                hint="read the current state again (list), then watch from revision()",
            )
            error.detail["compact_revision"] = oldest
            raise error
        if response.canceled:
            reason = str(response.cancel_reason)
            if _stale_token(reason):
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    details=reason,
                )
            raise StoreError(
                f"etcd cancelled the watch of {prefix!r}: {reason or 'no reason given'}",
                hint=next((h for m, h in _HINTS if m in reason.lower()), "check etcd's logs"),
            )

    async def _sleep_unless_closed(self, seconds: float) -> bool:
        """Sleep, or return True at once when the store is closed meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        except TimeoutError:
            return False
        return True

    # -- plumbing -------------------------------------------------------------------------

    async def _call(self, doing: str, request: Callable[[_Client, float], Awaitable[T]]) -> T:
        """Run ``request`` on the current endpoint; on connection trouble, on the next one.

        Retries with backoff until ``timeout`` is spent, then raises StoreError
        naming every endpoint's last error. Requests must be safe to repeat:
        reads, lease calls, and guarded transactions (see :meth:`commit`).
        """
        deadline = time.monotonic() + self._timeout
        errors: dict[str, str] = {}
        delay = _BACKOFF_START
        renewed = False
        last: BaseException | None = None
        while True:
            if self._closed:
                raise _closed_error() from last
            index = self._current
            client = self._clients[index]
            budget = max(min(deadline - time.monotonic(), self._attempt), 0.05)
            try:
                await self._connect(client, budget)
                return await request(client, budget)
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    raise _closed_error() from exc
                if _stale_token(_details(exc)) and not renewed and client.metadata:
                    renewed = True
                    try:
                        await client.reauthenticate(budget)
                        continue
                    except grpc.aio.AioRpcError as again:
                        exc = again
                if not _retryable(exc):
                    raise _rpc_error(doing, client.address, exc) from exc
                errors[client.address] = _summary(exc)
                last = exc
            except asyncio.CancelledError:
                if self._closed and not _cancelling():
                    # close() closed the channel under this call: not our task's cancellation
                    raise _closed_error() from None
                raise
            except (grpc.aio.UsageError, aetcd.exceptions.ClientError) as exc:
                if self._closed:
                    raise _closed_error() from exc
                raise StoreError(f"could not {doing}: {exc}", hint="check etcd's logs") from exc
            if time.monotonic() + delay >= deadline:
                raise self._unreachable(doing, errors) from last
            self._rotate(index)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _connect(self, client: _Client, budget: float) -> None:
        async with client.lock:
            await client.connect(budget)

    def _rotate(self, failed: int) -> None:
        if self._current == failed and len(self._clients) > 1:
            self._current = (failed + 1) % len(self._clients)
            log.info(
                "etcd at %s failed; trying %s",
                self._clients[failed].address,
                self._clients[self._current].address,
            )

    def _unreachable(self, doing: str, errors: dict[str, str]) -> StoreError:
        why = "; ".join(f"{address}: {error}" for address, error in errors.items())
        if re.search(r"ssl|tsi_|handshake|certificate", why, re.IGNORECASE):
            hint = (
                "the TLS handshake failed: check that cacert signed etcd's certificate, that"
                " it names this host, and that cert/key are a client certificate etcd trusts"
            )
        else:
            hint = (
                "check that etcd runs there and is healthy (GET /health), the network, and that"
                " TLS (cacert, cert, key) and username/password match how etcd serves clients"
            )
        return StoreError(
            f"etcd at {', '.join(self.url.addresses)} unreachable: could not {doing}"
            f" within {self._timeout:g}s ({why or 'no answer'})",
            hint=hint,
            detail={"endpoints": self.url.addresses, "errors": dict(errors)},
        )

    async def _read_meta(self) -> None:
        request = rpc.RangeRequest(key=self._meta, range_end=_prefix_end(self._meta))
        self._learn((await self._range("read the store's metadata", request)).kvs)

    async def _range(self, doing: str, request: _Proto) -> _Proto:
        return await self._call(
            doing, lambda c, t: c.kvstub.Range(request, timeout=t, metadata=c.metadata)
        )

    def _learn(self, kvs: Sequence[_Proto]) -> None:
        """Take in ``meta/`` as read (the audit counter, the newest commit's revision)."""
        audit_id = audit_mod = commit_revision = 0
        for kv in kvs:
            if bytes(kv.key) == self._audit_id:
                try:
                    audit_id, audit_mod = int(bytes(kv.value)), int(kv.mod_revision)
                except ValueError:
                    raise StoreError(
                        f"{self._audit_id.decode()} holds {bytes(kv.value)[:40]!r}, not a number",
                        hint="something other than Prism wrote under the store prefix",
                    ) from None
            elif bytes(kv.key) == self._marker:
                commit_revision = int(kv.mod_revision)
        self._known = self._known.newer(_Meta(audit_id, audit_mod, commit_revision))

    def _now(self) -> float:
        return self._clock.now() if self._clock else time.time()

    def _key(self, raw: bytes) -> str:
        try:
            return raw[len(self._kv) :].decode("ascii")
        except UnicodeDecodeError:
            raise StoreError(
                f"etcd key {raw[:80]!r} is not ASCII",
                hint="something other than Prism wrote under the store prefix",
            ) from None

    def _text(self, raw: bytes, key: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError(
                f"the value of {key!r} is not UTF-8",
                hint="something other than Prism wrote under the store prefix",
            ) from None

    def _entry(self, kv: _Proto) -> Entry:
        key = self._key(bytes(kv.key))
        value = self._text(bytes(kv.value), key)
        return Entry(key, value, int(kv.create_revision), int(kv.mod_revision))

    def _event(self, event: _Proto) -> WatchEvent:
        key = self._key(bytes(event.kv.key))
        kind: Literal["put", "delete"] = "put" if event.type == rpc.Event.PUT else "delete"
        value = self._text(bytes(event.kv.value), key) if kind == "put" else None
        return WatchEvent(kind, key, value, int(event.kv.mod_revision))

    def _audit_record(self, kv: _Proto) -> AuditRecord:
        try:
            body = json.loads(bytes(kv.value))
            revision = body.get("revision")
            return AuditRecord(
                id=int(body["id"]),
                # A commit's record carries no revision: it is the record's own.
                revision=int(kv.mod_revision) if revision is None else int(revision),
                at=float(body["at"]),
                actor=body["actor"],
                action=body["action"],
                app=body["app"],
                detail=body["detail"],
                reason=body["reason"],
                # absent from records written before Prism kept it
                request_id=body.get("request_id"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(
                f"audit record {bytes(kv.key)[:80]!r} is damaged: {exc}",
                hint="something other than Prism wrote under the store prefix",
            ) from exc

    @staticmethod
    def _record_from(audit_id: int, body: dict[str, Any]) -> AuditRecord:
        # Through JSON, so the record returned equals what audit() will list.
        stored = json.loads(_audit_value(body))
        return AuditRecord(
            audit_id,
            stored["revision"],
            stored["at"],
            stored["actor"],
            stored["action"],
            stored["app"],
            stored["detail"],
            stored["reason"],
        )


class EtcdLease:
    """A :class:`prism.types.Lease` granted by an :class:`EtcdStore`."""

    __slots__ = ("_id", "_store", "_ttl")

    def __init__(self, store: EtcdStore, lease_id: int, ttl: float) -> None:
        self._store = store
        self._id = lease_id
        self._ttl = ttl

    @property
    def id(self) -> int:
        return self._id

    @property
    def ttl(self) -> float:
        """The TTL etcd granted (whole seconds, at least etcd's minimum)."""
        return self._ttl

    async def refresh(self) -> None:
        """Extend the lease by ``ttl``; StoreError (``detail["ended"]``) if it already ended."""
        await self._store._refresh(self._id)

    async def revoke(self) -> None:
        """End the lease now, deleting its keys; a lease already gone is no error."""
        await self._store._revoke(self._id)

    async def remaining(self) -> float | None:
        """Seconds until it expires (etcd counts whole seconds), or None once it has ended."""
        return await self._store._remaining(self._id)

    def keep_alive(
        self, *, interval: float | None = None
    ) -> AbstractAsyncContextManager[KeepAlive]:
        """``async with lease.keep_alive():`` refreshes it meanwhile; see :func:`keep_alive`."""
        return keep_alive(self, interval=interval)

    def __repr__(self) -> str:
        return f"<EtcdLease {self._id:x} ttl={self._ttl:g}s>"


class KeepAlive:
    """What :func:`keep_alive` yields: whether the lease is still held."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.lost = asyncio.Event()  # set once the lease ended or could not be refreshed in time
        self.error: StoreError | None = None
        self.refreshes = 0

    @property
    def held(self) -> bool:
        return not self.lost.is_set()


async def _keep_refreshing(handle: KeepAlive, interval: float) -> None:
    lease = handle.lease
    last_ok = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        try:
            await lease.refresh()
        except StoreError as exc:
            if exc.detail.get("ended") or time.monotonic() - last_ok >= lease.ttl:
                log.warning("lost lease %x: %s", lease.id, exc)
                handle.error = exc
                handle.lost.set()
                return
            log.warning("could not refresh lease %x, retrying: %s", lease.id, exc)
            continue
        last_ok = time.monotonic()
        handle.refreshes += 1


@asynccontextmanager
async def _keep_alive(lease: Lease, interval: float | None) -> AsyncIterator[KeepAlive]:
    every = lease.ttl / 3 if interval is None else interval
    if not every > 0:
        raise InvalidInput(f"invalid keep-alive interval: {every!r}", hint="use seconds > 0")
    handle = KeepAlive(lease)
    task = asyncio.create_task(_keep_refreshing(handle, every), name=f"keep lease {lease.id:x}")
    try:
        yield handle
    finally:
        task.cancel()
        await asyncio.wait([task])  # (not suppress(): a cancellation of *our* task propagates)


def keep_alive(
    lease: Lease, *, interval: float | None = None
) -> AbstractAsyncContextManager[KeepAlive]:
    """Refresh ``lease`` every ``interval`` (default ``ttl / 3``) until the block exits.

    ::

        lease = await store.grant(10)
        async with keep_alive(lease) as held:
            await store.commit([Put("/nodes/n1", report, lease=lease.id)])
            ...                      # held.lost is set if the lease ends meanwhile

    A failed refresh is retried at the next tick; once the lease has ended (or
    ``ttl`` passed since the last refresh that worked) ``held.lost`` is set and
    refreshing stops. Exiting stops the refreshing; it does not revoke the lease.
    """
    return _keep_alive(lease, interval)
