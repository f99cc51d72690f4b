"""The order of an apply: a desired state read before a newer one was applied never
puts HAProxy back on it, and a map is on disk before its runtime change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import prism.node.applier as applier_module
from prism.core.model import parse_model
from prism.core.state import DesiredState, Routing
from prism.dataplane.local import LocalDataPlane
from prism.haproxy.binary import find_haproxy
from prism.node.paths import StatePaths
from prism.node.settings import node_settings
from prism.testing.processes import free_port

pytestmark = pytest.mark.haproxy


def state(revision: int, weights: dict[str, int], port: int) -> DesiredState:
    """App ``shop`` (blue, green; no servers: only its map matters here) at ``revision``."""
    spec = {
        "apps": [
            {
                "name": "shop",
                "bind": f"127.0.0.1:{port}",
                "stable": "blue",
                "colors": [{"name": "blue", "servers": []}, {"name": "green", "servers": []}],
            }
        ]
    }
    routing = {"shop": Routing.moved(None, weights).model_dump()}
    return parse_model(DesiredState, {"spec": spec, "routing": routing, "revision": revision})


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[LocalDataPlane]:
    paths = StatePaths.at(tmp_path / "state")
    paths.root.mkdir(parents=True)
    local = LocalDataPlane.for_node(paths, node_settings(paths, None), find_haproxy())
    try:
        yield local
    finally:
        try:
            await local.supervisor.stop()
        finally:
            await local.close_sockets()


async def weights_map(plane: LocalDataPlane) -> list[tuple[str, str]]:
    path = plane.paths.weights_map("shop")
    return [(e.key, e.value) for e in await plane.runtime.show_map(str(path))]


async def test_stale_converge_and_reconcile_leave_the_newer_state(plane: LocalDataPlane) -> None:
    """Converge/reconcile of revision 2 after revision 3 was applied change nothing."""
    port = free_port()
    first = state(1, {"blue": 100}, port)
    await plane.start(first)
    await plane.converge(first)
    newer = state(3, {"green": 100}, port)
    await plane.converge(newer)
    assert await weights_map(plane) == [("0:99", "shop.green")]

    stale = state(2, {"blue": 50, "green": 50}, port)
    report = await plane.converge(stale)
    assert report.mode == "none"
    assert report.operations == ()
    await plane.reconcile(stale)
    assert await weights_map(plane) == [("0:99", "shop.green")]
    assert plane.applier.applied_revision == 3

    # The same revision again is applied (the reconciler repairs drift at it).
    await plane.runtime.set_map(str(plane.paths.weights_map("shop")), "0:99", "shop.blue")
    plane.applier._held.clear()
    await plane.reconcile(newer)
    assert await weights_map(plane) == [("0:99", "shop.green")]


async def test_a_change_planned_from_a_map_edited_behind_prisms_back_still_lands(
    plane: LocalDataPlane,
) -> None:
    """A map edited by hand since its last read-back: the change planned from what it was
    read back to hold fails its read-back, is planned again from HAProxy, and lands."""
    port = free_port()
    first = state(1, {"blue": 100}, port)
    await plane.start(first)
    await plane.converge(first)
    path = str(plane.paths.weights_map("shop"))
    # Behind Prism's back: a second entry that a `set map` of 0:99 leaves in place.
    await plane.runtime.add_map(path, "100:199", "shop.blue")
    report = await plane.converge(state(2, {"green": 100}, port))
    assert await weights_map(plane) == [("0:99", "shop.green")]
    assert report.mode == "runtime"
    assert len(report.operations) >= 2  # the change from memory, then the one from HAProxy
    assert plane.applier.last_error is None


async def test_a_map_is_written_before_its_runtime_change_and_synced_after(
    plane: LocalDataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new map file is in place (whole, by rename) before ``set map`` and made
    durable (fsynced with its directory) right after it, before the apply returns."""
    port = free_port()
    first = state(1, {"blue": 100}, port)
    await plane.start(first)
    await plane.converge(first)
    path = plane.paths.weights_map("shop")
    events: list[str] = []
    write, sync, set_map = applier_module.write_atomic, applier_module.sync, plane.runtime.set_map

    def recording_write(target: Path, text: str, **kwargs: Any) -> None:
        events.append(f"write {target.name} durable={kwargs.get('durable', True)}")
        write(target, text, **kwargs)

    def recording_sync(*targets: Path) -> None:
        events.append("sync " + " ".join(t.name for t in targets))
        sync(*targets)

    async def recording_set_map(map_path: str, key: str, value: str) -> None:
        on_disk = await asyncio.to_thread(Path(map_path).read_text)
        events.append(f"set map {key} {value} (file has {value}: {value in on_disk})")
        await set_map(map_path, key, value)

    monkeypatch.setattr(applier_module, "write_atomic", recording_write)
    monkeypatch.setattr(applier_module, "sync", recording_sync)
    monkeypatch.setattr(plane.runtime, "set_map", recording_set_map)
    report = await plane.converge(state(2, {"green": 100}, port))
    assert report.mode == "runtime"
    assert events == [
        f"write {path.name} durable=False",
        "set map 0:99 shop.green (file has shop.green: True)",
        f"sync {path.name}",
    ]
    assert await weights_map(plane) == [("0:99", "shop.green")]
