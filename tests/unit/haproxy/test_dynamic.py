"""Adding and removing servers at runtime, against a simulated HAProxy 2.8 on a fake clock.

:class:`SimHAProxy` answers the server commands of the Runtime API the way the
real 2.8 binary was seen to: health checks run every ``inter`` on the fake
clock (also in MAINT), leaving MAINT sets the check health to ``rise``, the
status string follows HAProxy's stats rules (``DRAIN 1/3``, ``DOWN``, ...),
MAINT purges idle pooled connections, and ``del server`` refuses with
HAProxy's own words.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from prism.core.model import HealthCheck, Server
from prism.core.readings import PASSED_CHECKS
from prism.errors import (
    Conflict,
    GateFailed,
    HAProxyError,
    InvalidInput,
    RuntimeAPIError,
    UnsafeArgument,
)
from prism.haproxy.dynamic import (
    LINGERING_REPLY,
    ServerOutcome,
    add_server,
    default_add_timeout,
    remove_server,
)
from prism.haproxy.runtime import RuntimeClient
from prism.testing import FakeTransport

BACKEND = "app"
PASSED = "L7OK"
REFUSED = "L4CON"
_DETAIL = {"L4CON": "Connection refused", "L7STS": "Service Unavailable", "L7OK": "OK"}
_STATE_HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
    "srv_agent_addr srv_agent_port"
)
_CONN_HEADER = (
    "# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est "
    "unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[2]"
)
_STAT_HEADER = "# pxname,svname,scur,stot,status,weight,check_status,last_chk,addr,type,"


class FakeClock:
    """A Clock whose time moves only when someone sleeps."""

    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return 1_700_000_000.0 + self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.t += seconds
        await asyncio.sleep(0)  # let other tasks (and cancellation) in


Probe = Callable[[float], str]


def passing(_: float) -> str:
    return PASSED


def refused(_: float) -> str:
    return REFUSED


@dataclass
class SimServer:
    """One server as HAProxy holds it: admin state, check health, connections."""

    sid: int
    name: str
    addr: str
    port: int
    admin: str = "maint"
    checks: bool = False
    rise: int = 2
    fall: int = 1
    inter: float = 0.1
    health: int = 0
    check_status: str = ""
    next_check: float = math.inf
    probe: Probe = passing
    used: int = 0
    used_until: float = math.inf
    idle: int = 0
    idle_until: float = math.inf

    @property
    def full(self) -> int:
        return self.rise + self.fall - 1

    @property
    def status(self) -> str:
        """The ``status`` column, by HAProxy 2.8's stats rules."""
        if self.admin == "maint":
            return "MAINT"
        if not self.checks:
            return "DRAIN" if self.admin == "drain" else "no check"
        if self.health < self.rise:
            return "DOWN" if self.health == 0 else f"DOWN {self.health}/{self.rise}"
        word = "DRAIN" if self.admin == "drain" else "UP"
        if self.health < self.full:
            return f"{word} {self.health - self.rise + 1}/{self.fall}"
        return word


@dataclass
class SimHAProxy:
    """Answers server commands of the Runtime API as HAProxy 2.8 does, on a fake clock."""

    clock: FakeClock
    servers: dict[str, SimServer] = field(default_factory=dict)
    #: a pooled connection outlives its request by this long (seen: ~15-25 s)
    idle_linger: float = 20.0
    #: health of each server at the moment it was set ready
    health_at_ready: dict[str, int] = field(default_factory=dict)
    #: called with the server when it is set ready
    on_ready: Callable[[SimServer], None] | None = None
    #: probes for servers added later, by name
    probes: dict[str, Probe] = field(default_factory=dict)
    #: replaces show stat's (status, check_status) of a server, one reading per call
    script: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    #: set when a server is put in drain
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    #: every (status, check_status) show stat gave for each server
    readings: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    _ids: int = 0

    def static(self, name: str, port: int, *, inflight: int = 0, until: float = math.inf) -> None:
        """A server from the configuration file: checked, UP, maybe busy until ``until``."""
        self._ids += 1
        server = SimServer(self._ids, name, "127.0.0.1", port, admin="ready", checks=True)
        server.health, server.check_status = server.full, PASSED
        server.next_check = self.clock.t + server.inter
        server.used, server.used_until = inflight, until
        self.servers[name] = server

    def _advance(self) -> None:
        now = self.clock.t
        for server in self.servers.values():
            while server.checks and server.next_check <= now:
                result = server.probe(server.next_check)
                server.check_status = result
                if result in PASSED_CHECKS:
                    server.health = min(server.health + 1, server.full)
                else:
                    server.health = server.health - 1 if server.health > server.rise else 0
                server.next_check += server.inter
            if server.used and server.used_until <= now:
                # a finished request's connection goes back to the server's pool
                server.idle, server.used = server.idle + server.used, 0
                server.idle_until = server.used_until + self.idle_linger
            if server.idle and server.idle_until <= now:
                server.idle = 0

    def __call__(self, text: str) -> str:
        self._advance()
        words = text.split()
        if text.startswith(("show servers state", "show servers conn")):
            if words[3:] != [BACKEND]:
                return "Can't find backend.\n\n"
            return self._show_state() if words[2] == "state" else self._show_conn()
        if text in ("show stat", f"show stat {BACKEND} -1 -1"):
            return self._show_stat()
        if text.startswith("show stat "):
            return "No such proxy.\n\n"
        if text.startswith("add server "):
            return self._add(words)
        backend, _, name = words[2].partition("/")
        server = self.servers.get(name) if backend == BACKEND else None
        if server is None:
            return "No such server.\n\n"
        if text.startswith("enable health "):
            server.checks, server.check_status = True, "INI"
            server.next_check = self.clock.t + server.inter
            return "\n"
        if text.startswith("set server ") and words[3] == "state":
            return self._set_state(server, words[4])
        if text.startswith("del server "):
            if server.admin != "maint":
                return "Only servers in maintenance mode can be deleted.\n\n"
            if server.used or server.idle:
                return LINGERING_REPLY + ", cannot remove it.\n\n"
            del self.servers[name]
            return "Server deleted.\n\n"
        return f"Unknown command: '{words[0]}'\n\n"

    def _add(self, words: list[str]) -> str:
        backend, _, name = words[2].partition("/")
        if backend != BACKEND:
            return "No such backend.\n\n"
        if name in self.servers:
            return "Already exists a server with the same name in backend.\n\n"
        host, _, port = words[3].rpartition(":")
        options = dict(zip(words[5::2], words[6::2], strict=True))
        self._ids += 1
        self.servers[name] = SimServer(
            self._ids,
            name,
            host,
            int(port),
            rise=int(options["rise"]),
            fall=int(options["fall"]),
            inter=int(options["inter"].removesuffix("ms")) / 1000,
            probe=self.probes.get(name, passing),
        )
        return "New server registered.\n\n"

    def _set_state(self, server: SimServer, state: str) -> str:
        if server.admin == "maint" and state != "maint" and server.checks:
            server.health = server.rise  # 2.8: "start OK but check immediately"
        if state == "maint" and server.admin != "maint":
            server.idle = 0  # entering MAINT purges the idle pool
        server.admin = state
        if state == "drain":
            self.drained.set()
        if state == "ready":
            self.health_at_ready[server.name] = server.health
            if self.on_ready:
                self.on_ready(server)
        return "\n"

    def _show_state(self) -> str:
        admin = {"ready": 0, "maint": 1, "drain": 8}
        rows = [
            f"3 {BACKEND} {s.sid} {s.name} {s.addr} {2 if s.health else 0} {admin[s.admin]} "
            f"1 1 0 0 0 {s.health} 0 0 0 0 - {s.port} - 0 0 - - 0"
            for s in self.servers.values()
        ]
        return "\n".join(["1", _STATE_HEADER, *rows]) + "\n\n"

    def _show_conn(self) -> str:
        rows = [
            f"{BACKEND}/{s.name} 3/{s.sid} {s.addr} {s.port} - 5000 {s.used} {s.used} 0 0 0 "
            f"-1 {s.idle} {s.idle} 0"
            for s in self.servers.values()
        ]
        return "\n".join([_CONN_HEADER, *rows]) + "\n\n"

    def _show_stat(self) -> str:
        rows = []
        for s in self.servers.values():
            status, check = s.status, s.check_status
            if self.script.get(s.name):
                status, check = self.script[s.name].pop(0)
            self.readings.setdefault(s.name, []).append((status, check))
            detail = _DETAIL.get(check, "")
            rows.append(f"{BACKEND},{s.name},{s.used},0,{status},1,{check},{detail},")
            rows[-1] += f"{s.addr}:{s.port},2,"
        rows.append(f"{BACKEND},BACKEND,0,0,UP,1,,,,1,")
        return "\n".join([_STAT_HEADER, *rows]) + "\n\n"


@dataclass
class Rig:
    clock: FakeClock
    sim: SimHAProxy
    transport: FakeTransport
    runtime: RuntimeClient

    def sent(self, prefix: str = "") -> list[str]:
        return [text for text in self.transport.sent if text.startswith(prefix)]

    def changes(self) -> list[str]:
        """Every command sent except the read-outs."""
        return [text for text in self.transport.sent if not text.startswith("show ")]


@pytest.fixture
def rig() -> Rig:
    clock = FakeClock()
    sim = SimHAProxy(clock)
    sim.static("s1", 8001)
    transport = FakeTransport(sim)
    return Rig(clock, sim, transport, RuntimeClient(transport))


NEW = Server(name="s2", host="127.0.0.1", port=8002)
FAST = HealthCheck(path="/healthz", inter_ms=100, rise=2, fall=1)


async def _add(rig: Rig, check: HealthCheck = FAST, **kwargs: float) -> ServerOutcome:
    return await add_server(rig.runtime, BACKEND, NEW, check, clock=rig.clock, **kwargs)


# -- adding ---------------------------------------------------------------


async def test_add_walks_maint_drain_ready_and_ends_up(rig: Rig) -> None:
    """A healthy server goes add -> enable health -> drain -> (checks pass) -> ready -> UP."""
    started = rig.clock.t
    change = await _add(rig)
    assert rig.changes() == [
        "add server app/s2 127.0.0.1:8002 check inter 100ms rise 2 fall 1",
        "enable health app/s2",
        "set server app/s2 state drain",
        "set server app/s2 state ready",
    ]
    assert rig.transport.sent[0] == "show servers state app"
    assert (change.action, change.status, change.check_status) == ("added", "UP", "L7OK")
    assert change.changed
    assert change.address == "127.0.0.1:8002"
    # one check to pass, then rise - 1 more held: about 2.5 intervals
    assert 0.25 <= change.health_wait <= 0.35
    assert change.elapsed == pytest.approx(rig.clock.t - started)
    assert rig.sim.servers["s2"].status == "UP"


async def test_drain_shown_before_any_check_is_not_accepted(rig: Rig) -> None:
    """fall 1 makes HAProxy show exactly DRAIN (check INI) at once; that alone never opens it."""
    rig.sim.probes["s2"] = refused
    pattern = r"server s2 \(127\.0\.0\.1:8002\) failed its health"
    with pytest.raises(GateFailed, match=pattern) as caught:
        await _add(rig)
    assert rig.sent("set server app/s2 state ready") == []
    assert rig.sim.readings["s2"][0] == ("DRAIN", "INI")  # shown, and refused
    assert set(rig.sim.servers) == {"s1"}
    assert str(caught.value).startswith(
        "server s2 (127.0.0.1:8002) failed its health checks: DOWN, "
        "last check L4CON (Connection refused); it was not added"
    )
    assert caught.value.detail["deleted"] is True
    assert rig.changes()[-2:] == ["set server app/s2 state maint", "del server app/s2"]


@pytest.mark.parametrize(
    "readings",
    [
        [("DRAIN", "INI")],
        [("DRAIN", "L4CON")],
        [("DRAIN", "* L7OK")],
        [("DRAIN 1/3", "L7OK")],
        [("UP 1/2", "L7OK")],
        [("UP", "L7OK")],
        [("DOWN", "L7OK")],
        [("MAINT", "L7OK")],
    ],
)
async def test_only_exact_drain_with_a_completed_passed_check_opens_the_gate(
    rig: Rig, readings: list[tuple[str, str]]
) -> None:
    """Near misses (INI, a failed or in-progress check, DRAIN x/y, UP ...) keep it out."""
    check = HealthCheck(inter_ms=100, rise=1, fall=1)  # rise 1: no hold, the reading decides
    rig.sim.probes["s2"] = passing
    rig.sim.script["s2"] = readings * 5
    ready_at: list[int] = []
    rig.sim.on_ready = lambda _: ready_at.append(len(rig.sent("show stat")))
    change = await _add(rig, check)
    assert change.action == "added"
    assert ready_at == [6]  # the five scripted readings were refused, the sixth accepted


async def test_rise_is_counted_even_though_leaving_maint_skips_it(rig: Rig) -> None:
    """With rise 3, one passed check followed by a failure never lets the server in."""
    check = HealthCheck(inter_ms=100, rise=3, fall=1)
    first = rig.clock.t + 0.1  # the first check after enable health
    rig.sim.probes["s2"] = lambda t: PASSED if t <= first + 0.01 else REFUSED
    with pytest.raises(GateFailed, match="failed its health checks: DOWN, last check L4CON"):
        await _add(rig, check)
    assert rig.sent("set server app/s2 state ready") == []


async def test_rise_passed_checks_are_held_before_ready(rig: Rig) -> None:
    """With rise 3 the passed state must hold ~2.5 intervals past the first pass."""
    check = HealthCheck(inter_ms=100, rise=3, fall=1)
    change = await _add(rig, check)
    assert change.action == "added"
    assert change.health_wait >= 0.1 + 0.25 - 1e-9


async def test_fall_above_one_waits_for_full_health(rig: Rig) -> None:
    """With fall 3 the server reads DRAIN 1/3 after drain; ready waits for exact DRAIN."""
    check = HealthCheck(inter_ms=100, rise=2, fall=3)
    change = await _add(rig, check)
    assert change.status == "UP"
    assert rig.sim.health_at_ready["s2"] == 4  # rise + fall - 1: no failure pending


async def test_a_server_that_fails_after_ready_is_taken_out_again(rig: Rig) -> None:
    """If it does not read UP after ready, it goes back to maint, is deleted, and GateFailed."""

    def dies(server: SimServer) -> None:
        server.health, server.check_status, server.probe = 0, REFUSED, refused

    rig.sim.on_ready = dies
    with pytest.raises(GateFailed, match="did not come UP after its checks passed") as caught:
        await _add(rig)
    assert "did not come UP after its checks passed: DOWN" in str(caught.value)
    assert "it was taken out again" in str(caught.value)
    assert "s2" not in rig.sim.servers


@pytest.mark.parametrize(
    ("check", "limit"),
    [
        (HealthCheck(inter_ms=100, rise=2, fall=1), 10.0),
        (HealthCheck(inter_ms=5000, rise=2, fall=1), 20.0),
    ],
)
async def test_default_timeout_is_max_10s_or_inter_times_rise_plus_2(
    rig: Rig, check: HealthCheck, limit: float
) -> None:
    """A server that never passes is rejected after max(10 s, inter x (rise + 2))."""
    assert default_add_timeout(check) == limit
    rig.sim.probes["s2"] = refused
    started = rig.clock.t
    with pytest.raises(GateFailed, match="failed its health checks: DOWN, last check L4CON"):
        await _add(rig, check)
    assert limit <= rig.clock.t - started <= limit + 0.1


async def test_an_explicit_timeout_is_honoured(rig: Rig) -> None:
    """timeout= bounds the wait for the checks."""
    rig.sim.probes["s2"] = refused
    started = rig.clock.t
    with pytest.raises(GateFailed, match="failed its health checks: DOWN, last check L4CON"):
        await _add(rig, timeout=1.5)
    assert 1.5 <= rig.clock.t - started <= 1.6


async def test_existing_server_at_the_same_address_is_left_alone(rig: Rig) -> None:
    """Adding a server that exists at that address changes nothing and says so."""
    same = Server(name="s1", host="127.0.0.1", port=8001)
    change = await add_server(rig.runtime, BACKEND, same, FAST, clock=rig.clock)
    assert (change.action, change.status, change.changed) == ("unchanged", "UP", False)
    assert rig.transport.sent == ["show servers state app", "show stat app -1 -1"]


async def test_existing_server_at_another_address_conflicts(rig: Rig) -> None:
    """A name already used for another address is a Conflict, and nothing is sent after."""
    other = Server(name="s1", host="127.0.0.1", port=9999)
    with pytest.raises(Conflict, match=r"already exists in backend app at 127\.0\.0\.1:8001"):
        await add_server(rig.runtime, BACKEND, other, FAST, clock=rig.clock)
    assert rig.transport.sent == ["show servers state app"]


async def test_cancelling_mid_check_withdraws_the_server(rig: Rig) -> None:
    """A cancelled add leaves no half-checked server behind."""
    rig.sim.probes["s2"] = refused
    task = asyncio.create_task(_add(rig))
    await rig.sim.drained.wait()
    # Not a wait: five turns of the loop put the add mid-check under the fake clock;
    # pausing in real time instead would let that clock run out the whole check.
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError, match=r"^$"):  # a bare cancel() carries no message
        await task
    assert "s2" not in rig.sim.servers
    assert rig.sent("set server app/s2 state ready") == []


async def test_unknown_backend_raises_before_any_change(rig: Rig) -> None:
    """HAProxy's "Can't find backend." surfaces as RuntimeAPIError; nothing is added."""
    with pytest.raises(RuntimeAPIError, match="Can't find backend"):
        await add_server(rig.runtime, "nope", NEW, FAST, clock=rig.clock)
    assert rig.changes() == []


#: (backend, server name, what the refusal names): the first unsafe argument.
HOSTILE_NAMES = [
    ("app;show info", "s2", "unsafe backend name"),
    ("app", "s2;del server app/s1", "unsafe server name"),
    ("app", "s2\nshutdown sessions server app/s1", "unsafe server name"),
    ("app", "s 2", "unsafe server name"),
    ("app", "#1", "unsafe server name"),
    ("app/s1", "s2", "unsafe backend name"),
]
HOSTILE_SERVERS = [
    *((backend, name, "127.0.0.1", refused) for backend, name, refused in HOSTILE_NAMES),
    ("app", "s2", "127.0.0.1:80 backup", "unsafe server address"),
    ("app", "s2", "127.0.0.1;clear map x", "unsafe server address"),
    ("app", "s2", "999.1.1.1", "invalid IPv4 address"),
]


@pytest.mark.parametrize(("backend", "name", "host", "refused"), HOSTILE_SERVERS)
async def test_hostile_add_sends_nothing(
    rig: Rig, backend: str, name: str, host: str, refused: str
) -> None:
    """An unsafe backend, name or address raises UnsafeArgument before any command is sent."""
    # model_construct skips the model's validation, as a careless caller might
    server = Server.model_construct(name=name, host=host, port=8002)
    with pytest.raises(UnsafeArgument, match=f"^{refused} for the Runtime API: "):
        await add_server(rig.runtime, backend, server, FAST, clock=rig.clock)
    assert rig.transport.sent == []


@pytest.mark.parametrize(("backend", "name", "refused"), HOSTILE_NAMES)
async def test_hostile_remove_sends_nothing(
    rig: Rig, backend: str, name: str, refused: str
) -> None:
    """remove_server validates its names before anything is sent."""
    with pytest.raises(UnsafeArgument, match=f"^{refused} for the Runtime API: "):
        await remove_server(rig.runtime, backend, name, clock=rig.clock)
    assert rig.transport.sent == []


@pytest.mark.parametrize("poll", [0.0, -1.0, math.nan])
async def test_poll_must_be_positive(rig: Rig, poll: float) -> None:
    """A non-positive poll interval is refused before anything is sent."""
    refused = f"poll must be a positive number of seconds, not {poll}$"
    with pytest.raises(InvalidInput, match=refused):
        await _add(rig, poll=poll)
    with pytest.raises(InvalidInput, match=refused):
        await remove_server(rig.runtime, BACKEND, "s1", clock=rig.clock, poll=poll)
    assert rig.transport.sent == []


# -- removing -------------------------------------------------------------


async def test_remove_drains_then_deletes(rig: Rig) -> None:
    """drain, wait for in-flight requests to end, maint, del: deleted at the first try."""
    rig.sim.servers["s1"].used = 2
    rig.sim.servers["s1"].used_until = rig.clock.t + 1.0
    change = await remove_server(rig.runtime, BACKEND, "s1", clock=rig.clock)
    assert rig.changes() == [
        "set server app/s1 state drain",
        "set server app/s1 state maint",
        "del server app/s1",
    ]
    assert (change.action, change.address, change.delete_attempts) == (
        "removed",
        "127.0.0.1:8001",
        1,
    )
    assert 1.0 <= change.drain_wait <= 1.06
    assert not change.drain_timed_out
    assert change.lingering == 0
    assert rig.sim.servers == {}


async def test_remove_goes_ahead_after_drain_timeout_and_retries_delete(rig: Rig) -> None:
    """Past drain_timeout it reports the lingering request, then retries del until it ends."""
    rig.sim.servers["s1"].used = 1
    rig.sim.servers["s1"].used_until = rig.clock.t + 5.0
    started = rig.clock.t
    change = await remove_server(rig.runtime, BACKEND, "s1", clock=rig.clock, drain_timeout=1.0)
    assert (change.drain_timed_out, change.lingering) == (True, 1)
    assert change.delete_attempts > 10
    # the finished request left a pooled connection; a drain/maint round trip purged it
    assert rig.changes()[-3:] == [
        "set server app/s1 state drain",
        "set server app/s1 state maint",
        "del server app/s1",
    ]
    assert 5.0 <= rig.clock.t - started <= 5.2  # not the ~20 s the pool would linger
    assert rig.sim.servers == {}


async def test_remove_gives_up_after_delete_timeout(rig: Rig) -> None:
    """A connection that never ends makes it raise HAProxyError; the server stays in maint."""
    rig.sim.servers["s1"].used = 1
    with pytest.raises(HAProxyError, match="could not be deleted: HAProxy still reports") as caught:
        await remove_server(
            rig.runtime, BACKEND, "s1", clock=rig.clock, drain_timeout=0.5, delete_timeout=2.0
        )
    assert "server s1 in backend app could not be deleted" in str(caught.value)
    assert "(1 in use, 0 idle)" in str(caught.value)
    assert caught.value.detail["reply"].startswith(LINGERING_REPLY)
    assert rig.sim.servers["s1"].status == "MAINT"


async def test_remove_of_an_absent_server_is_a_noop(rig: Rig) -> None:
    """Removing a server that does not exist only looks, and says so."""
    change = await remove_server(rig.runtime, BACKEND, "s9", clock=rig.clock)
    assert (change.action, change.changed) == ("absent", False)
    assert rig.transport.sent == ["show servers state app"]


async def test_remove_of_a_server_in_maint_skips_draining(rig: Rig) -> None:
    """A server already in MAINT takes no traffic: it is deleted without a drain."""
    rig.sim.servers["s1"].admin = "maint"
    change = await remove_server(rig.runtime, BACKEND, "s1", clock=rig.clock)
    assert change.action == "removed"
    assert rig.changes() == ["del server app/s1"]


async def test_add_then_remove_round_trip(rig: Rig) -> None:
    """A server added by add_server is removed by remove_server, leaving the original."""
    await _add(rig)
    change = await remove_server(rig.runtime, BACKEND, "s2", clock=rig.clock)
    assert change.action == "removed"
    assert set(rig.sim.servers) == {"s1"}
