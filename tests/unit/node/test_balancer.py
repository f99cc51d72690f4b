"""The node's balancer against a scripted HAProxy: weights set, recorded, repaired, audited."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prism.core.model import Spec
from prism.core.state import DesiredState
from prism.errors import StoreError
from prism.haproxy.runtime import RuntimeClient
from prism.node.balancer import Balancer
from prism.testing.clock import FakeClock
from prism.testing.fake_runtime import FakeTransport
from prism.types import AuditDraft
from tests.unit.core.test_balancing import Simulated
from tests.unit.haproxy.test_readouts import HEADER, server_line


@dataclass
class FakeServer:
    sim: Simulated
    ms: int = 5
    uweight: int = 100
    status: str = "UP"
    check: str = "L7OK"
    hanafail: int = 0
    last_chk: str = ""


class ScriptedHAProxy:
    """``show stat <backend> -1 -1`` from simulated servers; ``set server ... weight``."""

    def __init__(self, servers: dict[str, dict[str, FakeServer]]) -> None:
        self.servers = servers
        self.weights_set: list[str] = []

    def serve(self, per_server: int) -> None:
        for pool in self.servers.values():
            for server in pool.values():
                if server.status == "UP":
                    server.sim.serve(server.ms, max(1, per_server * server.uweight // 100))

    def __call__(self, text: str) -> str:
        if match := re.fullmatch(r"show stat (\S+) -1 -1", text):
            backend = match.group(1)
            if backend not in self.servers:
                return "No such proxy.\n\n"
            lines = [
                server_line(
                    backend,
                    name,
                    status=s.status,
                    check_status=s.check,
                    weight=s.uweight,
                    uweight=s.uweight,
                    rtime=s.sim.rtime,
                    req_tot=s.sim.requests,
                    hrsp_2xx=s.sim.responses,
                    hanafail=s.hanafail,
                    last_chk=s.last_chk,
                )
                for name, s in self.servers[backend].items()
            ]
            return HEADER + "".join(lines) + "\n"
        if match := re.fullmatch(r"set server (\S+)/(\S+) weight (\d+)", text):
            self.servers[match.group(1)][match.group(2)].uweight = int(match.group(3))
            self.weights_set.append(text)
            return "\n"
        raise AssertionError(f"unexpected command {text!r}")


def state(**app: Any) -> DesiredState:
    spec = Spec.model_validate(
        {
            "apps": [
                {
                    "name": "shop",
                    "bind": "127.0.0.1:8080",
                    "stable": "blue",
                    "colors": [
                        {"name": "blue", "servers": ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]}
                    ],
                    **app,
                }
            ]
        }
    )
    return DesiredState(spec=spec)


SLOW = {
    "slow_servers": {
        "enabled": True,
        "window_ms": "2s",
        "recover_after_ms": "2s",
        "min_requests": 10,
        "step": 50,
        "floor": 10,
    }
}


def pool() -> dict[str, dict[str, FakeServer]]:
    return {"shop.blue": {f"s{n}": FakeServer(Simulated()) for n in (1, 2, 3)}}


class Audits:
    def __init__(self) -> None:
        self.drafts: list[AuditDraft] = []
        self.down = False

    async def __call__(self, draft: AuditDraft) -> None:
        if self.down:
            raise StoreError("store unreachable")
        self.drafts.append(draft)


async def run(balancer: Balancer, haproxy: ScriptedHAProxy, desired: DesiredState, seconds: float):
    clock = balancer.clock
    assert isinstance(clock, FakeClock)
    for _ in range(round(seconds / 0.5)):
        haproxy.serve(40)
        clock.advance(0.5)
        await balancer.tick(desired)
        await balancer.flush()


def make(tmp_path: Path, haproxy: ScriptedHAProxy, **kw: Any) -> tuple[Balancer, Audits]:
    balancer = Balancer(
        RuntimeClient(FakeTransport(haproxy)), tmp_path / "weights.json", FakeClock(), **kw
    )
    audits = Audits()
    balancer.audit = audits
    return balancer, audits


async def test_slow_server_is_lowered_recorded_audited_and_shown(tmp_path: Path) -> None:
    """A slow server's weight goes down through `set server`, into weights.json, into the
    audit log (with the node's name) and onto its readings; the others are untouched."""
    haproxy = ScriptedHAProxy(pool())
    balancer, audits = make(tmp_path, haproxy, node="lb-1")
    desired = state(**SLOW)
    await run(balancer, haproxy, desired, 3)
    haproxy.servers["shop.blue"]["s2"].ms = 600
    await run(balancer, haproxy, desired, 5)
    assert haproxy.weights_set == [
        "set server shop.blue/s2 weight 50",
        "set server shop.blue/s2 weight 10",
    ]
    assert balancer.weights() == {"shop.blue": {"s2": 10}}
    record = json.loads((tmp_path / "weights.json").read_text())
    assert record["servers"]["shop.blue/s2"]["weight"] == 10
    assert [(d.action, d.detail["to"], d.detail["node"]) for d in audits.drafts] == [
        ("server.weight", 50, "lb-1"),
        ("server.weight", 10, "lb-1"),
    ]
    assert audits.drafts[0].reason is not None
    assert audits.drafts[0].reason.startswith("slow: ")
    readings = await balancer.runtime.show_stat("shop.blue")
    from prism.haproxy.readouts import server_readings

    shown = {r.server: r for r in balancer.annotate(server_readings(readings))}
    assert shown["s2"].slow.startswith("slow: ")
    assert (shown["s2"].user_weight, shown["s1"].slow) == (10, "")


async def test_record_survives_a_restart_and_lost_weights_are_set_again(tmp_path: Path) -> None:
    """A new balancer reads weights.json; a server HAProxy gives back weight 100 (a restart
    from an older state file) gets Prism's weight again, without a new audit."""
    haproxy = ScriptedHAProxy(pool())
    first, _ = make(tmp_path, haproxy)
    desired = state(**SLOW)
    haproxy.servers["shop.blue"]["s3"].ms = 900
    await run(first, haproxy, desired, 5)
    assert haproxy.servers["shop.blue"]["s3"].uweight == 10
    haproxy.servers["shop.blue"]["s3"].uweight = 100  # HAProxy lost it
    haproxy.weights_set.clear()
    second, audits = make(tmp_path, haproxy)
    assert second.weights() == {"shop.blue": {"s3": 10}}
    await run(second, haproxy, desired, 0.5)
    assert haproxy.weights_set == ["set server shop.blue/s3 weight 10"]
    assert audits.drafts == []


async def test_turning_the_feature_off_restores_full_weight(tmp_path: Path) -> None:
    """Lowered servers go back to 100 when the app turns slow-server weights off."""
    haproxy = ScriptedHAProxy(pool())
    balancer, audits = make(tmp_path, haproxy)
    haproxy.servers["shop.blue"]["s1"].ms = 900
    await run(balancer, haproxy, state(**SLOW), 3)
    assert haproxy.servers["shop.blue"]["s1"].uweight == 50
    await run(balancer, haproxy, state(), 0.5)
    assert haproxy.servers["shop.blue"]["s1"].uweight == 100
    assert audits.drafts[-1].reason == "slow-server weights are off for this app"
    assert balancer.weights() == {}
    assert json.loads((tmp_path / "weights.json").read_text())["servers"] == {}
    haproxy.weights_set.clear()
    await run(balancer, haproxy, state(), 2)
    assert haproxy.weights_set == []


async def test_audits_wait_while_the_store_is_down(tmp_path: Path) -> None:
    """Weights change with the store down; the audits go out, in order, once it is back."""
    haproxy = ScriptedHAProxy(pool())
    balancer, audits = make(tmp_path, haproxy)
    audits.down = True
    haproxy.servers["shop.blue"]["s2"].ms = 900
    await run(balancer, haproxy, state(**SLOW), 5)
    assert haproxy.servers["shop.blue"]["s2"].uweight == 10
    assert audits.drafts == []
    audits.down = False
    await balancer.flush()
    assert [d.detail["to"] for d in audits.drafts] == [50, 10]


async def test_circuit_trips_are_audited_as_episodes(tmp_path: Path) -> None:
    """hanafail going up opens one `circuit.tripped` record; ready and quiet closes it."""
    haproxy = ScriptedHAProxy(pool())
    balancer, audits = make(tmp_path, haproxy)
    desired = state(circuit={"error_limit": 5})
    await run(balancer, haproxy, desired, 1)
    s2 = haproxy.servers["shop.blue"]["s2"]
    s2.status, s2.check, s2.hanafail = "DOWN", "HANA", 1
    s2.last_chk = "Detected 5 consecutive errors, last one was: HTTP status 500"
    await run(balancer, haproxy, desired, 1)
    s2.hanafail = 2
    await run(balancer, haproxy, desired, 1)
    s2.status, s2.check = "UP", "L7OK"
    await run(balancer, haproxy, desired, 11)
    assert [(d.action, d.detail["trips"]) for d in audits.drafts] == [
        ("circuit.tripped", 1),
        ("circuit.closed", 2),
    ]
    assert audits.drafts[0].reason == s2.last_chk
    assert audits.drafts[0].detail["server"] == "s2"


@pytest.mark.parametrize("text", ["", "{", '{"servers": {"x": {"weight": 500}}}', "[]"])
def test_an_unreadable_record_is_ignored(tmp_path: Path, text: str) -> None:
    """A broken weights.json starts from nothing rather than from garbage."""
    (tmp_path / "weights.json").write_text(text)
    balancer, _ = make(tmp_path, ScriptedHAProxy(pool()))
    assert balancer.weights() == {}
