"""Plan an apply: which changes need a reload and which are runtime-only.

Pure. The rendered config text decides: if it differs from what is live, the
change needs a reload (new app, color, server, listener or check settings).
Otherwise only map contents changed, and each changed map becomes Runtime API
operations: ``set map`` when exactly one existing key changes value (a
blue/green flip), an atomic ``prepare``/``add @ver``/``commit`` transaction
for anything else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["MapChange", "MapReplace", "MapSet", "Plan", "map_change", "parse_map_text", "plan"]

Entries = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MapSet:
    """Change one existing key's value (``set map``)."""

    key: str
    value: str


@dataclass(frozen=True)
class MapReplace:
    """Replace the whole map atomically (``prepare``/``add @ver``/``commit``)."""

    entries: Entries


MapChange = MapSet | MapReplace


@dataclass(frozen=True)
class Plan:
    reload: bool
    map_changes: Mapping[str, MapChange]

    @property
    def empty(self) -> bool:
        return not self.reload and not self.map_changes


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
    if current_t == desired_t:
        return None
    same_keys = [k for k, _ in current_t] == [k for k, _ in desired_t]
    differing = [(k, v) for (k, v), (_, old) in zip(desired_t, current_t, strict=False) if v != old]
    if same_keys and len(differing) == 1 and len({k for k, _ in desired_t}) == len(desired_t):
        key, value = differing[0]
        return MapSet(key, value)
    return MapReplace(desired_t)


def plan(
    live_config: str | None,
    live_maps: Mapping[str, Sequence[tuple[str, str]]],
    config: str,
    maps: Mapping[str, str],
) -> Plan:
    """Compare live files with rendered ones; ``live_maps`` are what HAProxy holds now."""
    if live_config != config:
        return Plan(reload=True, map_changes={})
    changes: dict[str, MapChange] = {}
    for name, text in sorted(maps.items()):
        change = map_change(live_maps.get(name, ()), parse_map_text(text))
        if change is not None:
            changes[name] = change
    return Plan(reload=False, map_changes=changes)
