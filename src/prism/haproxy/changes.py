"""ApplyPlan an apply: which changes need a reload and which are runtime-only.

Pure. The rendered config decides. If it differs from what is live only in
``server`` lines, the change is runtime server operations (add, remove) and
the new config is written for the next reload to read. Any other config
difference (new app, color, listener, check settings, pages) needs a reload.
Map contents never need one: each changed map becomes the smallest safe
Runtime API change — ``set map`` when one key changes value (a blue/green
flip, a re-pin), ``add map`` / ``del map`` for one added or removed key (a
pin), and an atomic ``prepare``/``add @ver``/``commit`` transaction for
anything else (weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ApplyPlan",
    "MapAdd",
    "MapChange",
    "MapDel",
    "MapReplace",
    "MapSet",
    "ServerDiff",
    "map_change",
    "parse_map_text",
    "plan_apply",
    "server_diff",
    "servers_by_backend",
    "without_servers",
]

Entries = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MapSet:
    """Change one existing key's value (``set map``)."""

    key: str
    value: str


@dataclass(frozen=True)
class MapAdd:
    """Add one new key (``add map``)."""

    key: str
    value: str


@dataclass(frozen=True)
class MapDel:
    """Remove one key (``del map``: every entry with that key; keys are unique here)."""

    key: str


@dataclass(frozen=True)
class MapReplace:
    """Replace the whole map atomically (``prepare``/``add @ver``/``commit``)."""

    entries: Entries


MapChange = MapSet | MapAdd | MapDel | MapReplace


@dataclass(frozen=True)
class ServerDiff:
    """Servers to add to and remove from one backend at runtime."""

    backend: str
    add: tuple[str, ...]
    remove: tuple[str, ...]


@dataclass(frozen=True)
class ApplyPlan:
    reload: bool
    map_changes: Mapping[str, MapChange]
    server_changes: tuple[ServerDiff, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.reload and not self.map_changes and not self.server_changes


def parse_map_text(text: str) -> Entries:
    """Entries of a rendered map file (``key value`` lines)."""
    entries = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            entries.append((key, value.strip()))
    return tuple(entries)


def map_change(
    current: Sequence[tuple[str, str]], desired: Sequence[tuple[str, str]]
) -> MapChange | None:
    """The smallest safe runtime change turning ``current`` map entries into ``desired``."""
    current_t, desired_t = tuple(current), tuple(desired)
    # Every Prism map has unique keys and order-free lookups (exact keys, longest-prefix
    # networks, disjoint ranges), so the same entries in another order are the same map.
    if sorted(current_t) == sorted(desired_t):
        return None
    unique = len({k for k, _ in current_t}) == len(current_t)
    if unique and len({k for k, _ in desired_t}) == len(desired_t):
        before, after = dict(current_t), dict(desired_t)
        if len(after) == len(before) + 1 and all(after.get(k) == v for k, v in before.items()):
            (key,) = set(after) - set(before)
            return MapAdd(key, after[key])
        if len(after) == len(before) - 1 and all(before.get(k) == v for k, v in after.items()):
            (key,) = set(before) - set(after)
            return MapDel(key)
    same_keys = sorted(k for k, _ in current_t) == sorted(k for k, _ in desired_t)
    old_values = dict(current_t)
    differing = [(k, v) for k, v in desired_t if old_values.get(k) != v]
    if same_keys and len(differing) == 1 and len({k for k, _ in desired_t}) == len(desired_t):
        key, value = differing[0]
        return MapSet(key, value)
    return MapReplace(desired_t)


def plan_apply(
    live_config: str | None,
    live_maps: Mapping[str, Sequence[tuple[str, str]]],
    config: str,
    maps: Mapping[str, str],
    *,
    servers_only: bool = False,
) -> ApplyPlan:
    """Compare live files with rendered ones; ``live_maps`` are what HAProxy holds now.

    ``servers_only`` says the two configs are equal once their ``server`` lines
    are left out (the caller renders both that way); then server differences
    are runtime operations.
    """
    server_changes: tuple[ServerDiff, ...] = ()
    if live_config != config:
        if not servers_only or live_config is None:
            return ApplyPlan(reload=True, map_changes={})
        server_changes = server_diff(live_config, config)
    changes: dict[str, MapChange] = {}
    for name, text in sorted(maps.items()):
        change = map_change(live_maps.get(name, ()), parse_map_text(text))
        if change is not None:
            changes[name] = change
    return ApplyPlan(reload=False, map_changes=changes, server_changes=server_changes)


def servers_by_backend(config: str) -> dict[str, dict[str, str]]:
    """``backend -> server name -> its whole server line`` from a rendered config."""
    found: dict[str, dict[str, str]] = {}
    backend: str | None = None
    for raw in config.splitlines():
        line = raw.strip()
        if not raw[:1].isspace():
            backend = line.split()[1] if line.startswith("backend ") else None
            if backend is not None:
                found.setdefault(backend, {})
        elif backend is not None and line.startswith("server "):
            found[backend][line.split()[1]] = line
    return found


def server_diff(live_config: str, config: str) -> tuple[ServerDiff, ...]:
    """Per backend, servers to add and remove; a changed line is a remove plus an add."""
    before, after = servers_by_backend(live_config), servers_by_backend(config)
    changes = []
    for backend in sorted(set(before) | set(after)):
        old, new = before.get(backend, {}), after.get(backend, {})
        changed = {n for n in set(old) & set(new) if old[n] != new[n]}
        add = tuple(sorted((set(new) - set(old)) | changed))
        remove = tuple(sorted((set(old) - set(new)) | changed))
        if add or remove:
            changes.append(ServerDiff(backend, add, remove))
    return tuple(changes)


def without_servers(config: str) -> str:
    """The config with its ``server`` lines left out: two configs equal this way
    differ only in servers, which the Runtime API can add and remove without a reload."""
    return "\n".join(
        line
        for line in config.splitlines()
        if not (line[:1].isspace() and line.split()[:1] == ["server"])
    )
