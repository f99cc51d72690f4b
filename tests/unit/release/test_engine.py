"""The release engine with no I/O: in-memory store, fake clock, fake data plane, mock webhooks.

Time is a :class:`FakeClock`, so a 30 s pause passes at once; waits poll the
store with a real deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from prism.core.keys import dump, release_key, routing_key
from prism.core.model import Spec, parse_model
from prism.core.readings import Counters
from prism.core.state import DesiredState
from prism.dataplane.change import Changes
from prism.errors import ConfigRejected, Conflict, GateFailed, HAProxyError, IllegalTransition
from prism.release import machine
from prism.release.engine import ReleaseEngine
from prism.release.gates import GateResult
from prism.release.machine import Began, Phase, ShareSet, Tick
from prism.release.plan import ReleasePlan
from prism.release.record import ReleaseRecord
from prism.release.traffic import Traffic
from prism.release.webhooks import WebhookSender
from prism.services.spec import SpecService
from prism.store.desired import load_state
from prism.store.sqlite import SqliteStore
from prism.testing.clock import FakeClock
from prism.testing.dataplane import FakeDataPlane
from prism.testing.memory_store import memory_store
from prism.types import Put, audits_of

FAST = {"tick_ms": 1000, "min_requests": 20}
HOOKS = "http://hooks.test"


class Plane(FakeDataPlane):
    """A fake data plane with users: every counters read adds requests to each color of the
    converged state in proportion to its weight (``bad`` percent of them 5xx per backend),
    and ``after_converge`` lets a test break things at a chosen moment."""

    def __init__(self) -> None:
        super().__init__()
        self.bad: dict[str, int] = {}
        self.after_converge: Callable[[Plane, DesiredState], None] | None = None
        #: set: reading counters fails, as with HAProxy's socket gone
        self.unreadable = False

    async def converge(self, state: DesiredState) -> Any:
        done = await super().converge(state)
        if self.after_converge is not None:
            self.after_converge(self, state)
        return done

    async def counters(self, backends: Any) -> Any:
        if self.unreadable:
            raise HAProxyError("admin socket: connection refused")
        if self.converged:
            state = self.last
            for app in state.spec.apps:
                for color, weight in state.routing_for(app).weights.items():
                    backend = f"{app.name}.{color}"
                    self.add_requests(backend, weight, weight * self.bad.get(backend, 0) // 100)
        return await super().counters(backends)


@dataclass
class Hooks:
    """A webhook receiver behind httpx.MockTransport: records events, answers confirms."""

    confirm_status: int = 503
    confirms: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/confirm":
            self.confirms += 1
            return httpx.Response(self.confirm_status)
        self.events.append(json.loads(request.content))
        return httpx.Response(200)


@dataclass
class World:
    clock: FakeClock
    store: SqliteStore
    plane: Plane
    hooks: Hooks
    sender: WebhookSender
    engine: ReleaseEngine
    engines: list[ReleaseEngine]

    def make_engine(self, *, drive: bool = True) -> ReleaseEngine:
        """Another control plane on the same store and data plane (another process, or the
        same one after a restart)."""
        traffic = Traffic(self.store, Changes(self.store, self.plane), self.plane, self.clock)
        engine = ReleaseEngine(
            self.store, traffic, self.plane, self.clock, self.sender, drive=drive
        )
        self.engines.append(engine)
        return engine

    async def weights(self) -> dict[str, int]:
        state = await load_state(self.store)
        return state.routing_for(state.spec.app("shop")).weights

    async def record(self, color: str = "green") -> ReleaseRecord:
        found = await self.engine.get("shop", color)
        assert found is not None
        return found[0]

    async def until(self, phases: set[Phase], color: str = "green") -> ReleaseRecord:
        """The record once it is in one of ``phases`` (a real 5 s deadline)."""
        found: ReleaseRecord = await poll(lambda: self._in(color, phases))
        return found

    async def _in(self, color: str, phases: set[Phase]) -> ReleaseRecord | None:
        found = await self.engine.get("shop", color)
        return found[0] if found is not None and found[0].phase in phases else None

    async def actions(self, prefix: str) -> list[dict[str, Any]]:
        """Audit entries of shop whose action starts with ``prefix``, oldest first."""
        entries = await self.store.audit(app="shop", limit=1000)
        return [
            {"action": e.action, **e.detail}
            for e in reversed(entries)
            if e.action.startswith(prefix)
        ]


async def poll(probe: Callable[[], Awaitable[Any]], within: float = 5.0) -> Any:
    """``probe()`` once it is truthy; fails after ``within`` real seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0)


async def now(value: bool) -> bool:
    """A plain condition, for :func:`poll`."""
    return value


ENDED = {Phase.COMPLETED, Phase.ROLLED_BACK, Phase.FAILED, Phase.REFUSED}
SPEC = {
    "apps": [
        {
            "name": "shop",
            "bind": "127.0.0.1:8080",
            "stable": "blue",
            "colors": [
                {"name": c, "servers": [f"127.0.0.1:{9000 + i}"]}
                for i, c in enumerate(("blue", "green", "red"))
            ],
        }
    ]
}


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    store = await memory_store(clock=clock)
    plane = Plane()
    for color in ("blue", "green", "red"):
        plane.set_servers(f"shop.{color}", "s1")
    await SpecService(store, Changes(store, plane)).apply(
        parse_model(Spec, SPEC), actor="test", reason=None
    )
    hooks = Hooks()
    sender = WebhookSender(clock, transport=httpx.MockTransport(hooks))
    built = World(clock, store, plane, hooks, sender, None, [])  # type: ignore[arg-type]
    built.engine = built.make_engine()
    await built.engine.resume_all()
    try:
        yield built
    finally:
        for engine in built.engines:
            await engine.close()
        await sender.close()
        await store.close()


def canary(*weights: int, pause: str = "30s", **extra: Any) -> ReleasePlan:
    steps: list[dict[str, Any]] = []
    for index, weight in enumerate(weights):
        steps.append({"weight": weight})
        if index < len(weights) - 1:
            steps.append({"pause": pause})
    return ReleasePlan.model_validate(
        {"to": "green", "steps": steps, "analysis": FAST, "smoke": False, **extra}
    )


async def start(world: World, plan: ReleasePlan, *, wait: bool = False) -> ReleaseRecord:
    return await world.engine.start("shop", plan, actor="ci", reason="ship", wait=wait)


# -- releases under the fake clock -------------------------------------------


async def test_a_canary_with_pauses_completes_at_100(world: World) -> None:
    """10 -> 30 s -> 50 -> 30 s -> 100: each pause passes on analysis, then the old color drains."""
    record = await start(world, canary(10, 50, 100), wait=True)
    assert record.phase is Phase.COMPLETED, record.steps
    assert await world.weights() == {"green": 100}
    names = [e.name for e in record.steps]
    assert names == ["health", "weight", "pause", "weight", "pause", "weight", "drain"]
    assert all("analysis passed" in e.message for e in record.steps if e.name == "pause")
    steps = await world.actions("release.step")
    assert [s["to_weights"] for s in steps] == [
        {"blue": 90, "green": 10},
        {"blue": 50, "green": 50},
        {"green": 100},
    ]
    assert [a["action"] for a in await world.actions("release.")] == [
        "release.started",
        "release.step",
        "release.step",
        "release.step",
        "release.completed",
    ]
    assert world.clock.t >= 160  # two 30 s pauses passed on the fake clock


async def test_a_failing_analysis_rolls_back_in_one_change(world: World) -> None:
    """Green answering 50% 5xx at 10%: one change puts it back to its share before the release."""
    world.plane.bad["shop.green"] = 50
    record = await start(world, canary(10, 50, 100), wait=True)
    assert record.phase is Phase.ROLLED_BACK
    assert await world.weights() == {"blue": 100}
    cause = next(e for e in record.steps if e.name == "rollback")
    assert cause.message.startswith("analysis failed: 5xx ratio")
    rollbacks = await world.actions("release.rollback")
    assert [(r["from_weights"], r["to_weights"]) for r in rollbacks] == [
        ({"blue": 90, "green": 10}, {"blue": 100})
    ]
    done = await world.actions("release.rolled_back")
    assert done[0]["step"]["message"] == cause.message


async def test_the_target_going_down_during_a_pause_rolls_back(world: World) -> None:
    """Green's server going DOWN once it has 25%: the next tick of the pause rolls back."""

    def break_green(plane: Plane, state: DesiredState) -> None:
        if state.routing_for(state.spec.app("shop")).weights.get("green") == 25:
            plane.set_servers("shop.green", "s1", status="DOWN", check_status="L4CON")

    world.plane.after_converge = break_green
    record = await start(world, canary(25, 100, pause="1h"), wait=True)
    assert record.phase is Phase.ROLLED_BACK
    cause = next(e for e in record.steps if e.name == "rollback")
    assert cause.message.startswith("target unhealthy: color 'green' is not ready: s1 is DOWN")
    assert await world.weights() == {"blue": 100}
    assert world.clock.t < 100 + 3600  # well before the hour was up


async def test_a_manual_pause_waits_for_promote(world: World) -> None:
    """A manual pause waits (ticking, watching health) until promote; then the plan goes on."""
    record = await start(world, canary(10, 50, pause="manual"), wait=True)
    assert record.phase is Phase.WAITING
    assert record.steps[-1].message == "waiting for promote"
    assert await world.weights() == {"blue": 90, "green": 10}
    later = world.clock.t + 60
    await poll(lambda: now(world.clock.t > later))  # a minute of ticks passes
    assert (await world.record()).phase is Phase.WAITING
    promoted = await world.engine.promote("shop", None, full=False, actor="ann")
    assert promoted.steps[-1].message == "promoted by ann"
    record = await world.until(ENDED)
    assert record.phase is Phase.COMPLETED
    assert await world.weights() == {"blue": 50, "green": 50}
    assert [a["action"] for a in await world.actions("release.")][-2:] == [
        "release.step",
        "release.completed",
    ]


async def test_a_confirm_hook_saying_no_holds_the_release(world: World) -> None:
    """503 from the confirm hook holds before the first step; 200 lets every step through."""
    plan = canary(
        10,
        100,
        pause="5s",
        webhooks=[{"url": f"{HOOKS}/events"}],
        confirm={"url": f"{HOOKS}/confirm"},
    )
    record = await start(world, plan, wait=True)
    assert record.phase is Phase.HOLDING
    assert record.steps[-1].message == "held by the confirm hook: 503 Service Unavailable"
    await poll(lambda: now(world.hooks.confirms >= 3))  # asked again each tick
    assert await world.weights() == {"blue": 100}
    world.hooks.confirm_status = 200
    record = await world.until(ENDED)
    assert record.phase is Phase.COMPLETED
    assert await world.sender.flush(5)
    kinds = [e["event"] for e in world.hooks.events]
    assert kinds == ["started", "step.advanced", "step.advanced", "completed"]
    assert [e["seq"] for e in world.hooks.events] == [1, 2, 3, 4]
    assert [a["action"] for a in await world.actions("release.held")] == ["release.held"]


async def test_a_person_pauses_resumes_and_aborts(world: World) -> None:
    """Pause keeps the pause's remaining time across the stop; abort rolls back to blue."""
    await start(world, canary(10, 100, pause="1h"))
    record = await poll(lambda: _step_at_least(world, 1))
    paused = await world.engine.pause("shop", None, actor="ann")
    assert paused.phase is Phase.PAUSED
    world.clock.advance(7200)
    resumed = await world.engine.resume("shop", "green", actor="bob")
    assert resumed.step_started_at == pytest.approx(record.step_started_at + 7200, abs=60)
    assert (await world.record()).phase is Phase.RUNNING
    aborted = await world.engine.abort("shop", None, actor="ann", reason="not today")
    assert aborted.phase is Phase.ROLLING_BACK
    record = await world.until(ENDED)
    assert record.phase is Phase.ROLLED_BACK
    assert await world.weights() == {"blue": 100}
    assert [e.message for e in record.steps if e.name in ("pause", "resume", "abort")] == [
        "paused by ann",
        "resumed by bob",
        "aborted by ann: not today",
    ]
    assert [a["action"] for a in await world.actions("release.")][-4:] == [
        "release.paused",
        "release.resumed",
        "release.rollback",
        "release.rolled_back",
    ]


async def _step_at_least(world: World, index: int) -> ReleaseRecord | None:
    record = await world.record()
    return record if record.step >= index and record.phase is Phase.RUNNING else None


async def test_promote_full_goes_straight_to_the_final_weight(world: World) -> None:
    """promote --full during the first manual pause skips every step left but the last."""
    await start(world, canary(10, 30, 60, 100, pause="manual"), wait=True)
    await world.engine.promote("shop", "green", full=True, actor="ann")
    record = await world.until(ENDED)
    assert record.phase is Phase.COMPLETED
    shares = [s["to_weights"] for s in await world.actions("release.step")]
    assert shares == [{"blue": 90, "green": 10}, {"green": 100}]


async def test_two_releases_of_different_colors_only_move_their_own_share(world: World) -> None:
    """Green to 20% and red to 30% at once: each step takes from blue only, never the other."""
    await start(world, canary(5, 10, 20, pause="2s"))
    red = ReleasePlan.model_validate(
        {
            "to": "red",
            "steps": [{"weight": 10}, {"pause": "2s"}, {"weight": 30}, {"pause": "manual"}],
            "analysis": FAST,
            "smoke": False,
        }
    )
    await world.engine.start("shop", red, actor="ci", reason=None, wait=False)
    assert (await world.until(ENDED)).phase is Phase.COMPLETED
    await world.until({Phase.WAITING}, color="red")
    await world.engine.promote("shop", "red", full=False, actor="ann")
    assert (await world.until(ENDED, color="red")).phase is Phase.COMPLETED
    assert await world.weights() == {"blue": 50, "green": 20, "red": 30}
    steps = await world.actions("release.step")
    assert len(steps) == 5
    for entry in steps:
        other = "red" if entry["color"] == "green" else "green"
        assert entry["from_weights"].get(other, 0) == entry["to_weights"].get(other, 0), entry


async def test_a_rollback_refused_by_the_data_plane_ends_failed(world: World) -> None:
    """Every convergence refused during an abort: after a few refused attempts, FAILED."""
    plan = canary(10, 100, pause="manual", webhooks=[{"url": f"{HOOKS}/events"}])
    await start(world, plan, wait=True)
    world.plane.refuse_next(ConfigRejected("haproxy -c: no"), times=1000)
    await world.engine.abort("shop", None, actor="ann", reason=None)
    record = await world.until(ENDED)
    assert record.phase is Phase.FAILED
    assert record.attempts == machine.ROLLBACK_ATTEMPTS
    retries = [e.message for e in record.steps if e.name == "retry"]
    assert len(retries) == machine.ROLLBACK_ATTEMPTS - 1
    assert "haproxy -c: no" in record.steps[-1].message
    assert await world.weights() == {"blue": 90, "green": 10}  # each refusal was reverted
    assert [a["action"] for a in await world.actions("release.failed")] == ["release.failed"]
    assert await world.sender.flush(5)
    assert world.hooks.events[-1]["event"] == "failed"


async def test_a_refused_step_is_retried_until_it_takes(world: World) -> None:
    """Two refused convergences at the first step: retried on later ticks, then completed."""
    world.plane.refuse_next(ConfigRejected("busy"), times=4)  # each refusal also reverts once
    record = await start(world, canary(100), wait=True)
    assert record.phase is Phase.COMPLETED
    assert [e.name for e in record.steps] == ["health", "retry", "weight", "drain"]
    assert await world.weights() == {"green": 100}


async def test_a_cutover_saves_its_record_and_the_new_routing_in_one_commit_first(
    world: World,
) -> None:
    """Blue/green: nothing is saved before the gates; then one commit holds the running
    record naming the share change in flight, the new routing and both audits, and the
    data plane converges only after it."""
    commits: list[tuple[list[str], list[str]]] = []
    at_converge: list[tuple[int, ReleaseRecord, dict[str, int]]] = []
    commit = world.store.commit

    async def logged(ops: Any, **kwargs: Any) -> int:
        drafts = audits_of(kwargs.get("audit"))
        commits.append(([op.key for op in ops], [d.action for d in drafts]))
        return await commit(ops, **kwargs)

    def seen(plane: Plane, state: DesiredState) -> None:
        entry = state.routing_for(state.spec.app("shop")).weights
        at_converge.append((len(commits), saved[0], dict(entry)))

    saved: list[ReleaseRecord] = []

    async def snapshot() -> None:
        saved.insert(0, await world.record())

    world.store.commit = logged  # type: ignore[method-assign]
    original = world.plane.converge

    async def converge(state: DesiredState) -> Any:
        await snapshot()
        return await original(state)

    world.plane.converge = converge  # type: ignore[method-assign]
    world.plane.after_converge = seen
    record = await start(world, canary(100), wait=True)
    assert record.phase is Phase.COMPLETED
    count, first, weights = at_converge[0]
    assert count == 1  # the first converge follows exactly one commit
    keys, actions = commits[0]
    assert release_key("shop", "green") in keys
    assert routing_key("shop") in keys
    assert actions == ["release.started", "release.step"]
    assert first.phase is Phase.RUNNING
    assert first.inflight == "step"
    assert [e.name for e in first.steps] == ["health"]
    assert weights == {"green": 100}


async def test_illegal_commands_raise_and_change_nothing(world: World) -> None:
    """Pause when paused, resume when running, promote when completed: each raises, no save."""
    key = release_key("shop", "green")
    await start(world, canary(10, 100, pause="1h"))
    await poll(lambda: _step_at_least(world, 1))
    await world.engine.pause("shop", None, actor="ann")
    before = await world.store.get(key)
    with pytest.raises(IllegalTransition, match="cannot go from 'paused' to 'paused'"):
        await world.engine.pause("shop", None, actor="ann")
    assert await world.store.get(key) == before
    # Nobody drives now, so a running record stays put while it is compared.
    await world.engine.close()
    steering = world.make_engine(drive=False)
    await steering.resume("shop", None, actor="ann")
    before = await world.store.get(key)
    with pytest.raises(IllegalTransition, match="the release is 'running', not paused"):
        await steering.resume("shop", "green", actor="ann")
    assert await world.store.get(key) == before
    await steering.promote("shop", None, full=True, actor="ann")
    world.engine = world.make_engine()
    await world.engine.resume_all()
    assert (await world.until(ENDED)).phase is Phase.COMPLETED
    before = await world.store.get(key)
    with pytest.raises(Conflict, match="phase 'completed' cannot be promoted"):
        await world.engine.promote("shop", "green", full=False, actor="ann")
    assert await world.store.get(key) == before


async def test_a_refused_gate_refuses_the_release_with_nothing_changed(world: World) -> None:
    """A target that is not exactly UP: GateFailed with today's words; traffic untouched."""
    world.plane.set_servers("shop.green", "s1", status="UP 1/2")
    with pytest.raises(GateFailed, match=r"^release of 'shop' to 'green' refused: color") as info:
        await start(world, canary(100), wait=True)
    assert info.value.hint == "nothing was changed; traffic stays as it was (blue=100)"
    assert info.value.detail["gate"] == "health"
    assert (await world.record()).phase is Phase.REFUSED
    assert [a["action"] for a in await world.actions("release.")] == ["release.refused"]
    assert await world.weights() == {"blue": 100}


async def test_starting_twice_is_a_conflict(world: World) -> None:
    """A second release of a color still being released is refused, naming its phase."""
    await start(world, canary(10, 100, pause="manual"), wait=True)
    with pytest.raises(Conflict, match="'green' of 'shop' is already being released"):
        await start(world, canary(100))


# -- crash after saving, then resume -----------------------------------------

UP = GateResult("health", True, "all 1 server(s) of 'green' are UP")
ZERO = Counters(0, 0, 0)


def seen(world: World, green: int, **extra: Any) -> Tick:
    """What an engine would have observed with green at ``green`` percent."""
    weights = {"blue": 100 - green, "green": green} if green < 100 else {"green": 100}
    return Tick(
        at=world.clock.now(),
        weights={c: w for c, w in weights.items() if w},
        health=UP,
        target=ZERO,
        baseline=ZERO,
        **extra,
    )


async def set_green(world: World, green: int) -> None:
    """Move green's share the way a release step does (audited release.step)."""
    state = await load_state(world.store)
    app = state.spec.app("shop")
    routing = state.routing_for(app)
    target = {"blue": 100 - green, "green": green} if green < 100 else {"green": 100}
    traffic = Traffic(world.store, Changes(world.store, world.plane), world.plane, world.clock)
    await traffic.set_weights(app, routing, target, actor="ci", action="release.step", reason=None)


async def crash_in(world: World, where: str) -> ReleaseRecord:
    """Save a release as a Prism that crashed right after saving it ``where`` left it (and
    the routing as it was then); the machine itself builds the record."""
    timed = canary(10, 100, pause="5s")
    manual = canary(10, 100, pause="manual")
    confirming = canary(10, 100, confirm={"url": f"{HOOKS}/confirm"})
    chosen = {"waiting": manual, "holding": confirming, "draining": canary(100)}.get(where, timed)
    record = machine.propose(
        id="crashed",
        app="shop",
        stable="blue",
        plan=chosen,
        weights={"blue": 100},
        actor="ci",
        reason=None,
        at=world.clock.now(),
    )

    def go(*events: machine.Event) -> ReleaseRecord:
        nonlocal record
        for event in events:
            record = machine.step(record, event).record
        return record

    at = world.clock.now()
    if where != "pending":
        go(Began(at, (UP,)))
    if where == "holding":
        go(seen(world, 0, confirm=(False, "503 Service Unavailable")))
    elif where == "draining":
        go(seen(world, 0), ShareSet(at, "step", {"green": 100}), seen(world, 100))
        await set_green(world, 100)
    elif where.startswith("step in flight"):
        go(seen(world, 0))
        if where.endswith("done"):
            await set_green(world, 10)  # the share was set; its outcome was never saved
    elif where != "pending":
        go(seen(world, 0), ShareSet(at - 3, "step", {"blue": 90, "green": 10}, target=ZERO))
        await set_green(world, 10)
        if where == "waiting":
            go(seen(world, 10))
        elif where == "paused":
            go(machine.Pause(at, "ann"))
        elif where == "rolling_back":
            go(machine.Abort(at, "ann", "crash test"))
    await world.store.commit([Put(release_key("shop", "green"), dump(record))])
    return record


CRASHES = [
    ("pending", None, Phase.REFUSED, {"blue": 100}),
    ("step in flight", None, Phase.COMPLETED, {"green": 100}),
    ("step in flight, done", None, Phase.COMPLETED, {"green": 100}),
    ("in a timed pause", None, Phase.COMPLETED, {"green": 100}),
    ("waiting", "promote", Phase.COMPLETED, {"green": 100}),
    ("holding", "confirm", Phase.COMPLETED, {"green": 100}),
    ("paused", "resume", Phase.COMPLETED, {"green": 100}),
    ("draining", None, Phase.COMPLETED, {"green": 100}),
    ("rolling_back", None, Phase.ROLLED_BACK, {"blue": 100}),
]


@pytest.mark.parametrize(
    ("where", "person", "end", "weights"), CRASHES, ids=[c[0] for c in CRASHES]
)
async def test_a_crash_after_saving_resumes_from_the_saved_record(
    world: World, where: str, person: str | None, end: Phase, weights: dict[str, int]
) -> None:
    """Saved in each phase, then a new engine on the same store: it resumes and ends right."""
    await world.engine.close()
    saved = await crash_in(world, where)
    engine = world.make_engine()
    world.engine = engine
    await engine.resume_all()
    if person == "promote":
        assert (await world.until({Phase.WAITING})).step == saved.step
        await engine.promote("shop", None, full=False, actor="ann")
    elif person == "resume":
        assert (await world.record()).phase is Phase.PAUSED
        await engine.resume("shop", None, actor="ann")
    elif person == "confirm":
        await poll(lambda: now(world.hooks.confirms >= 1))
        world.hooks.confirm_status = 200
    record = await world.until(ENDED)
    assert record.phase is end, record.steps
    assert await world.weights() == weights
    shares = [s["to_weights"] for s in await world.actions("release.step")]
    assert len(shares) == len({json.dumps(s, sort_keys=True) for s in shares})  # none twice
    if where == "pending":
        assert record.steps[-1].message == "Prism restarted before the release began"
    if where == "in a timed pause":
        pause = next(e for e in record.steps if e.name == "pause")
        assert pause.at - saved.step_started_at < 5 + 2  # the remaining time, not a new 5 s


# -- several control planes on one store -----------------------------------------


async def test_a_release_started_elsewhere_is_driven_by_the_leader(world: World) -> None:
    """A release a non-driving engine starts is driven by the leader; wait=True follows it."""
    follower = world.make_engine(drive=False)
    await follower.resume_all()  # a non-leader does nothing here
    record = await follower.start(
        "shop", canary(10, 100, pause="manual"), actor="ci", reason=None, wait=True
    )
    assert record.phase is Phase.WAITING  # driven by world.engine, the leader
    assert not follower._tasks
    promoted = await follower.promote("shop", None, full=False, actor="ann")
    assert promoted.phase is Phase.RUNNING
    record = await world.until(ENDED)
    assert record.phase is Phase.COMPLETED
    assert await world.weights() == {"green": 100}


async def test_an_abort_after_stable_lost_a_server_caps_stable_at_its_capacity(
    world: World,
) -> None:
    """Blue carried 100% on 2 ready servers; it lost one mid-release: the abort gives it 50%,
    green keeps the rest, and the rollback says so in its log, audit and webhook event."""
    world.plane.set_servers("shop.blue", "s1", "s2")
    await start(world, canary(10, 100, pause="1h", webhooks=[{"url": f"{HOOKS}/events"}]))
    record = await poll(lambda: _step_at_least(world, 1))
    assert record.initial_up == {"blue": 2, "green": 1, "red": 1}
    world.plane.set_servers("shop.blue", "s1")
    await world.engine.abort("shop", None, actor="ann", reason="bad canary")
    record = await world.until(ENDED)
    assert record.phase is Phase.ROLLED_BACK
    assert await world.weights() == {"blue": 50, "green": 50}
    done = record.steps[-1]
    assert done.message.startswith("green at 50%, not 0%")
    assert "blue has 1 of the 2 ready server(s)" in done.message
    audit = (await world.actions("release.rolled_back"))[-1]
    assert audit["readings"]["capped"] == [done.message.split(": ", 1)[1]]
    await poll(lambda: now(any(e["event"] == "rolled_back" for e in world.hooks.events)))
    event = next(e for e in world.hooks.events if e["event"] == "rolled_back")
    assert event["data"]["capped"] == audit["readings"]["capped"]


async def test_readings_that_keep_failing_hold_the_release(world: World) -> None:
    """Counters that cannot be read for more ticks than consecutive_error_limit: the release
    holds (audited), traffic stays where it is, and a promote lets it go on."""
    await start(world, canary(10, 100, pause="1h"))
    await poll(lambda: _step_at_least(world, 1))
    world.plane.unreadable = True
    record = await world.until({Phase.HOLDING})
    assert record.held == "errors"
    assert record.budget.errors == 5  # the default limit is 4 in a row
    assert await world.weights() == {"blue": 90, "green": 10}
    assert [a["action"] for a in await world.actions("release.held")] == ["release.held"]
    world.plane.unreadable = False
    promoted = await world.engine.promote("shop", None, actor="ann", full=False)
    assert promoted.held is None
    record = await world.until(ENDED)
    assert record.phase is Phase.COMPLETED


async def test_a_ramped_rollback_returns_the_share_as_servers_come_back(world: World) -> None:
    """rollback_ramp_ms: capped at 50% while blue has 1 of 2 servers, the rollback keeps
    rolling back; once s2 is ready again blue gets its whole 100% and the release ends."""
    world.plane.set_servers("shop.blue", "s1", "s2")
    await start(world, canary(10, 100, pause="1h", rollback_ramp_ms="1h"))
    await poll(lambda: _step_at_least(world, 1))
    world.plane.set_servers("shop.blue", "s1")
    await world.engine.abort("shop", None, actor="ann", reason="bad canary")

    async def capped() -> bool:
        record = await world.record()
        return any(e.name == "capped" for e in record.steps)

    await poll(capped)
    assert (await world.record()).phase is Phase.ROLLING_BACK
    assert await world.weights() == {"blue": 50, "green": 50}
    assert [a["action"] for a in await world.actions("release.capped")] == ["release.capped"]
    world.plane.set_servers("shop.blue", "s1", "s2")
    record = await world.until(ENDED)
    assert record.phase is Phase.ROLLED_BACK
    assert await world.weights() == {"blue": 100}
    assert record.steps[-1].message == "green back to 0% (blue=100)"
