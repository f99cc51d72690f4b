"""In-memory stand-ins for HAProxy's Runtime API socket.

:class:`FakeTransport` records every command text it is given and answers
from a mapping of exact command text to reply, or from a callable. Use it to
prove what a client sends (and that a rejected argument sends nothing)::

    transport = FakeTransport({"show map /maps/w.map": "0x1 0:99 shop.blue\\n\\n"})
    client = RuntimeClient(transport)

:class:`FakeHAProxy` is such a callable: it holds maps in memory and answers
``show/set/add/del/clear/prepare/commit map`` with HAProxy 2.8's replies, so
map transactions can be exercised end to end without a process.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["FakeHAProxy", "FakeTransport", "UnexpectedCommand"]

Responder = Callable[[str], str]

_UNKNOWN_MAP = "Unknown map identifier. Please use #<id> or <file>.\n\n"


class UnexpectedCommand(AssertionError):
    """A :class:`FakeTransport` was sent a command it has no reply for.

    An AssertionError rather than a RuntimeAPIError, so code under test that
    handles Runtime API failures cannot swallow a gap in the test's script.
    """


class FakeTransport:
    """A :class:`~prism.types.RuntimeTransport` that replays scripted replies.

    ``replies`` maps exact command text (without the final newline) to the
    reply, or to an exception instance to raise; or it is a callable taking the
    text and returning the reply. Unknown commands raise
    :class:`UnexpectedCommand`. Every text is appended to :attr:`sent` first.
    """

    def __init__(
        self, replies: Mapping[str, str | BaseException] | Responder | None = None
    ) -> None:
        self.sent: list[str] = []
        self.closed = False
        self._replies = replies if replies is not None else {}

    async def request(self, text: str) -> str:
        """Record ``text`` and answer it from the script."""
        self.sent.append(text)
        if callable(self._replies):
            return self._replies(text)
        try:
            reply = self._replies[text]
        except KeyError:
            raise UnexpectedCommand(f"FakeTransport has no reply for {text!r}") from None
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def close(self) -> None:
        """Mark the transport closed."""
        self.closed = True


@dataclass
class _Map:
    current: int = 0
    next: int = 0
    versions: dict[int, list[tuple[int, str, str]]] = field(default_factory=lambda: {0: []})


class FakeHAProxy:
    """Answers map commands as HAProxy 2.8 does, for maps held in memory.

    ``maps`` gives each known map path its initial ``(key, value)`` entries;
    any other path gets ``Unknown map identifier``. Commands other than map
    commands get HAProxy's ``Unknown command`` reply.
    """

    def __init__(self, maps: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> None:
        self._refs = itertools.count(0x1000, 0x10)
        self._maps: dict[str, _Map] = {}
        for path, entries in (maps or {}).items():
            self._maps[path] = _Map(versions={0: [self._entry(k, v) for k, v in entries]})

    def entries(self, path: str) -> list[tuple[str, str]]:
        """The visible (committed) entries of a map."""
        held = self._maps[path]
        return [(key, value) for _, key, value in held.versions[held.current]]

    def _entry(self, key: str, value: str) -> tuple[int, str, str]:
        return (next(self._refs), key, value)

    def __call__(self, text: str) -> str:
        head, _, payload = text.partition("\n")
        words = head.split()
        verb = " ".join(words[:2])
        args = words[2:]
        version: int | None = None
        if args and args[0].startswith("@"):
            version = int(args[0][1:])
            args = args[1:]
        if verb not in _VERBS:
            return (
                f"Unknown command: '{words[0] if words else ''}', but maybe one of the "
                "following ones is a better match:\n  help [<command>] : list commands\n\n"
            )
        if not args:
            return "Missing map identifier.\n\n"
        held = self._maps.get(args[0])
        if held is None:
            return _UNKNOWN_MAP
        return _VERBS[verb](self, held, version, args[1:], payload)

    def _show(self, held: _Map, version: int | None, args: list[str], payload: str) -> str:
        entries = held.versions.get(held.current if version is None else version, [])
        return "".join(f"0x{ref:x} {key} {value}\n" for ref, key, value in entries) + "\n"

    def _set(self, held: _Map, version: int | None, args: list[str], payload: str) -> str:
        entries = held.versions[held.current]
        hits = [i for i, (_, key, _) in enumerate(entries) if key == args[0]]
        if not hits:
            return "entry not found.\n\n"
        for i in hits:
            entries[i] = (entries[i][0], args[0], args[1])
        return "\n"

    def _add(self, held: _Map, version: int | None, args: list[str], payload: str) -> str:
        target = held.current if version is None else version
        if target > held.next:
            return "Version number in the future, please use 'prepare map' before.\n\n"
        if args == ["<<"]:
            pairs = [line.split(None, 1) for line in payload.split("\n") if line]
            if not pairs:
                return ""  # HAProxy never saw the end of the payload
        else:
            pairs = [args]
        for pair in pairs:
            if len(pair) != 2:
                return f"Missing value for key '{pair[0]}'.\n\n"
            held.versions.setdefault(target, []).append(self._entry(pair[0], pair[1]))
        return "\n"

    def _del(self, held: _Map, version: int | None, args: list[str], payload: str) -> str:
        entries = held.versions[held.current]
        kept = [entry for entry in entries if entry[1] != args[0]]
        if len(kept) == len(entries):
            return "Key not found.\n\n"
        held.versions[held.current] = kept
        return "\n"

    def _clear(self, held: _Map, version: int | None, args: list[str], payload: str) -> str:
        held.versions[held.current if version is None else version] = []
        return "\n"

    def _prepare(self, held: _Map, version: int | None, args: list[str], payload: str) -> str:
        held.next += 1
        held.versions[held.next] = []
        return f"New version created: {held.next}\n\n"

    def _commit(self, held: _Map, version: int | None, args: list[str], payload: str) -> str:
        if version is None:
            return "Missing version number.\n\n"
        if not held.current < version <= held.next:
            return "Version number out of range.\n\n"
        held.current = version
        held.versions = {v: e for v, e in held.versions.items() if v >= version}
        return "\n"


_Handler = Callable[[FakeHAProxy, _Map, int | None, list[str], str], str]
_VERBS: dict[str, _Handler] = {
    "show map": FakeHAProxy._show,
    "set map": FakeHAProxy._set,
    "add map": FakeHAProxy._add,
    "del map": FakeHAProxy._del,
    "clear map": FakeHAProxy._clear,
    "prepare map": FakeHAProxy._prepare,
    "commit map": FakeHAProxy._commit,
}
