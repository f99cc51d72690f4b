"""Run ``prism`` with timed spans around the pieces of a cutover.

``python -m bench.spans OUT prism-args...`` runs the ``prism`` command line in
this process after wrapping the coroutines a release goes through (the API's
release call, the engine's saves and steps, the gates, the smoke request, each
store commit, the apply with its map write, runtime commands and read-back)
with ``time.perf_counter_ns`` spans. Each span is one line in OUT, written
after the release call returns (so writing never delays a cutover):
``<name> <start ns> <end ns> <depth>``. The wrapping is by name and skips what
a version of Prism does not have, so the same launcher times old and new code
(``PYTHONPATH`` picks which). :func:`breakdown` sums the spans per release.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "breakdown", "call_starts", "install", "timeline"]

#: (module, class or None, attribute) -> span name
TARGETS: list[tuple[str, str | None, str, str]] = [
    ("prism.services.releases", "ReleaseService", "blue_green", "release call"),
    ("prism.release.engine", "ReleaseEngine", "_begin", "begin (pending, gates, running)"),
    ("prism.release.engine", "ReleaseEngine", "_commit", "engine save"),
    ("prism.release.engine", "ReleaseEngine", "_observe", "observe (tick readings)"),
    ("prism.release.engine", "ReleaseEngine", "_set_share", "set share"),
    ("prism.release.engine", "ReleaseEngine", "_drain", "drain"),
    ("prism.release.engine", "ReleaseEngine", "_settled", "wait for the end"),
    ("prism.release.engine", "ReleaseEngine", "_ready", "ready counts (show stat)"),
    ("prism.release.recorder", "Recorder", "commit", "engine save"),
    ("prism.release.acting", "Acting", "observe", "observe (tick readings)"),
    ("prism.release.acting", "Acting", "set_share", "set share"),
    ("prism.release.acting", "Acting", "drain", "drain"),
    ("prism.release.acting", "Acting", "ready", "ready counts (show stat)"),
    ("prism.release.traffic", "Traffic", "gates", "gates"),
    ("prism.release.traffic", "Traffic", "set_weights", "set weights"),
    ("prism.release.traffic", "Traffic", "releasing", "releasing (list)"),
    ("prism.dataplane.change", "Changes", "commit", "change commit"),
    ("prism.dataplane.local", "LocalDataPlane", "servers", "health (show stat)"),
    ("prism.dataplane.local", "LocalDataPlane", "smoke", "smoke request"),
    ("prism.dataplane.local", "LocalDataPlane", "counters", "counters (show stat)"),
    ("prism.dataplane.local", "LocalDataPlane", "converge", "converge"),
    ("prism.dataplane.local", "LocalDataPlane", "in_use", "in use (show servers conn)"),
    ("prism.node.applier", "Applier", "_runtime", "map write + runtime"),
    ("prism.node.applier", "Applier", "_verify", "read-back"),
    ("prism.node.applier", "Applier", "_runtime_maps", "show map (plan)"),
    ("prism.store.sqlite", "SqliteStore", "commit", "sqlite commit"),
    ("prism.store.sqlite", "SqliteStore", "get", "sqlite get"),
    ("prism.store.sqlite", "SqliteStore", "list", "sqlite list"),
    ("prism.store.desired", None, "load_state", "load state"),
    ("prism.haproxy.runtime", "RuntimeClient", "set_map", "set map (runtime)"),
    ("prism.haproxy.runtime", "RuntimeClient", "replace_map", "commit map (runtime)"),
    ("prism.haproxy.runtime", "RuntimeClient", "execute", "runtime command"),
    ("prism.node.files", None, "write_atomic", "write file"),
    ("os", None, "fsync", "fsync"),
]

_spans: list[tuple[str, int, int, int]] = []
_depth = [0]


def _wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if not inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        def timed_sync(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter_ns()
            _depth[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                _depth[0] -= 1
                _spans.append((name, began, time.perf_counter_ns(), _depth[0]))

        return timed_sync

    @functools.wraps(fn)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter_ns()
        _depth[0] += 1
        try:
            return await fn(*args, **kwargs)
        finally:
            _depth[0] -= 1
            _spans.append((name, began, time.perf_counter_ns(), _depth[0]))

    return timed


def install(out: Path) -> None:
    """Wrap every target this Prism has; spans go to ``out``."""
    for preload in ("prism.serve.lifespan", "prism.serve.http", "prism.api.app"):
        importlib.import_module(preload)
    wrapped: dict[int, Callable[..., Any]] = {}
    for module_name, owner, attribute, name in TARGETS:
        module = importlib.import_module(module_name)
        holder: Any = module if owner is None else getattr(module, owner, None)
        fn = getattr(holder, attribute, None) if holder is not None else None
        if fn is None:
            continue
        timed = _wrap(name, fn)
        wrapped[id(fn)] = timed
        setattr(holder, attribute, timed)
    # Modules that imported a wrapped function by name get the wrapped one too.
    for module in list(sys.modules.values()):
        if module is None or not getattr(module, "__name__", "").startswith("prism"):
            continue
        for key, value in list(vars(module).items()):
            if id(value) in wrapped and callable(value):
                setattr(module, key, wrapped[id(value)])

    import gc

    gc_began = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_began[0] = time.perf_counter_ns()
        else:
            name = f"gc gen{info['generation']}"
            _spans.append((name, gc_began[0], time.perf_counter_ns(), _depth[0]))

    gc.callbacks.append(on_gc)

    def flush() -> None:
        with out.open("a") as f:
            for span in _spans:
                f.write("{}\t{}\t{}\t{}\n".format(*span))
        _spans.clear()

    original = _find("prism.services.releases", "ReleaseService", "blue_green")

    async def release_then_flush(*args: Any, **kwargs: Any) -> Any:
        try:
            return await original(*args, **kwargs)
        finally:
            flush()

    if original is not None:
        import prism.services.releases as releases

        releases.ReleaseService.blue_green = release_then_flush  # type: ignore[method-assign]
    atexit.register(flush)


def _find(module: str, owner: str, attribute: str) -> Any:
    return getattr(getattr(importlib.import_module(module), owner, None), attribute, None)


def breakdown(path: Path) -> list[dict[str, float]]:
    """Per release call: milliseconds per span name (summed), plus offsets from the
    call's start of the first runtime map change (``switch at``)."""
    rows = [line.split("\t") for line in path.read_text().splitlines() if line]
    spans = [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]
    calls = sorted((s for s in spans if s[0] == "release call"), key=lambda s: s[1])
    out = []
    for _, start, end, _ in calls:
        inside = [s for s in spans if s[1] >= start and s[2] <= end and s[0] != "release call"]
        sums: dict[str, float] = {"release call": (end - start) / 1e6}
        for name, b, e, _ in inside:
            sums[name] = sums.get(name, 0.0) + (e - b) / 1e6
            sums[f"count {name}"] = sums.get(f"count {name}", 0) + 1
        switch = [b for n, b, _, _ in inside if n in ("set map (runtime)", "commit map (runtime)")]
        if switch:
            sums["switch at"] = (min(switch) - start) / 1e6
        out.append(sums)
    return out


def call_starts(path: Path) -> list[int]:
    """Start times (perf_counter ns) of the release calls, in order."""
    rows = [line.split("\t") for line in path.read_text().splitlines() if line]
    return sorted(int(r[1]) for r in rows if r[0] == "release call")


def timeline(path: Path, index: int) -> str:
    """Every span of the ``index``-th release call, in start order, as text."""
    rows = [line.split("\t") for line in path.read_text().splitlines() if line]
    spans = [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]
    calls = sorted((s for s in spans if s[0] == "release call"), key=lambda s: s[1])
    _, start, end, _ = calls[index]
    inside = sorted((s for s in spans if s[1] >= start and s[2] <= end), key=lambda s: s[1])
    return "\n".join(
        f"{(b - start) / 1e6:9.3f} {(e - b) / 1e6:9.3f}  {'  ' * d}{name}"
        for name, b, e, d in inside
    )


def main() -> None:
    if sys.argv[1] == "--timeline":
        print(timeline(Path(sys.argv[2]), int(sys.argv[3])))
        return
    out = Path(sys.argv[1])
    install(out)
    from prism.cli.main import main as prism_main

    sys.argv = ["prism", *sys.argv[2:]]
    prism_main()


if __name__ == "__main__":
    main()
