"""Runtime API commands, built only from arguments that cannot inject anything.

HAProxy's CLI splits commands on unescaped ``;`` and newlines, splits
arguments on whitespace, treats a leading ``#`` as an entry reference and a
leading ``@`` as a map version, and ends a ``<<`` payload at the first empty
line with no escaping at all. So every builder here checks every argument
against a strict pattern (``re.fullmatch`` with ``re.ASCII``; never ``$``,
which accepts a trailing newline) and raises
:class:`~prism.errors.UnsafeArgument` *before* any text exists that could be
sent. Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prism.errors import UnsafeArgument
from prism.haproxy.tokens import MAP_KEY, PROXY_NAME, SAFE_PATH, SERVER_NAME
from prism.names import ADDRESS

__all__ = [
    "MAP_KEY",
    "MAP_VALUE",
    "MAX_ARGUMENT",
    "PAYLOAD_LIMIT",
    "PEM_PAYLOAD_LIMIT",
    "PROXY_NAME",
    "SERVER_NAME",
    "AdminState",
    "Command",
    "ServerTuning",
    "abort_ssl_cert",
    "add_map",
    "add_map_payload",
    "add_map_payloads",
    "add_server",
    "clear_map",
    "commit_map",
    "commit_ssl_cert",
    "del_map",
    "del_server",
    "enable_health",
    "prepare_map",
    "set_map",
    "set_server_state",
    "set_server_weight",
    "set_ssl_cert",
    "show_info",
    "show_map",
    "show_servers_conn",
    "show_servers_state",
    "show_ssl_cert",
    "show_stat",
]

#: no single argument may be longer than this
MAX_ARGUMENT = 256
#: largest command text (payload included) sent at once. HAProxy refuses a
#: command larger than ``tune.bufsize`` (16384 by default) with "The command is
#: too big for the buffer size"; half of it leaves room for a smaller bufsize.
PAYLOAD_LIMIT = 8192

#: map values: backend names and colors, mostly (the grammar is
#: :mod:`prism.haproxy.tokens`)
MAP_VALUE = MAP_KEY

AdminState = Literal["ready", "drain", "maint"]
Observe = Literal["layer4", "layer7"]
OnError = Literal["mark-down", "fail-check", "sudden-death"]
_SERVER_STATES: frozenset[str] = frozenset({"ready", "drain", "maint"})
_DOTTED_NUMBERS = re.compile(r"[0-9.]+", re.ASCII)
# A PEM payload line: a boundary or base64, so the payload holds no empty line and no command.
_PEM_LINE = re.compile(r"-----(?:BEGIN|END) [A-Z0-9 ]{1,40}-----|[A-Za-z0-9+/=]{1,76}", re.ASCII)
#: largest PEM bundle sent as one ``set ssl cert`` payload (it must fit ``tune.bufsize``)
PEM_PAYLOAD_LIMIT = 15_000
_MAX_VERSION = 2**32 - 1  # map versions are unsigned 32-bit counters


@dataclass(frozen=True, slots=True)
class Command:
    """One validated Runtime API command; ``text`` excludes the final newline.

    Build commands with the functions of this module, never by hand: they are
    the only place arguments are checked.
    """

    text: str

    @property
    def summary(self) -> str:
        """The first line only, for messages and logs (a payload can be long)."""
        head = self.text.split("\n", 1)[0]
        return head if len(head) <= 200 else head[:197] + "..."


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _word(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_ARGUMENT or pattern.fullmatch(value) is None:
        raise UnsafeArgument(
            f"unsafe {what} for the Runtime API: {_shown(value)}",
            hint=f"a {what} must match {pattern.pattern} (at most {MAX_ARGUMENT} characters)",
        )
    return value


def _int(value: object, what: str, low: int, high: int) -> int:
    # bool is an int subclass; True must not become "1" on the wire
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UnsafeArgument(
            f"unsafe {what} for the Runtime API: {_shown(value)}",
            hint=f"a {what} must be an integer from {low} to {high}",
        )
    return value


@dataclass(frozen=True, slots=True)
class ServerTuning:
    """What a server carries besides its address and check timings: the same words on
    its config line and on ``add server`` (HAProxy 2.8 accepts each one at runtime,
    unlike ``default-server``, which a dynamic server never inherits).

    ``weight`` (0..256; Prism gives every server 100, so a weight reads as a
    percentage), ``slowstart`` (0: off), and the circuit breaker: ``observe``
    (None: off), ``error-limit``, ``on-error``.
    """

    weight: int = 100
    slowstart_ms: int = 0
    observe: Observe | None = None
    error_limit: int = 10
    on_error: OnError = "mark-down"

    def words(self) -> str:
        """The keywords, each checked; `` weight 100 slowstart 5000ms observe layer7 ...``."""
        text = f" weight {_int(self.weight, 'server weight', 0, 256)}"
        if _int(self.slowstart_ms, "slowstart (ms)", 0, 3_600_000):
            text += f" slowstart {self.slowstart_ms}ms"
        if self.observe is not None:
            if self.observe not in ("layer4", "layer7"):
                raise UnsafeArgument(
                    f"unsafe observe mode: {_shown(self.observe)}", hint="layer4 or layer7"
                )
            if self.on_error not in ("mark-down", "fail-check", "sudden-death"):
                raise UnsafeArgument(
                    f"unsafe on-error action: {_shown(self.on_error)}",
                    hint="mark-down, fail-check or sudden-death",
                )
            text += (
                f" observe {self.observe}"
                f" error-limit {_int(self.error_limit, 'error limit', 1, 1000)}"
                f" on-error {self.on_error}"
            )
        return text


def _path(path: object) -> str:
    return _word(SAFE_PATH, path, "map path")


def _server_ref(backend: object, server: object) -> str:
    return (
        f"{_word(PROXY_NAME, backend, 'backend name')}/{_word(SERVER_NAME, server, 'server name')}"
    )


def _address(address: object) -> str:
    value = _word(ADDRESS, address, "server address")
    # ADDRESS accepts any dotted digits; an all-numeric name must be a real IPv4
    if _DOTTED_NUMBERS.fullmatch(value):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise UnsafeArgument(
                f"invalid IPv4 address for the Runtime API: {_shown(value)}",
                hint="use four numbers from 0 to 255, or a host name",
            ) from None
    return value


def show_info() -> Command:
    """``show info``: process-wide key/value facts."""
    return Command("show info")


def show_stat(proxy: str | None = None) -> Command:
    """``show stat``: the CSV statistics of every proxy and server, or with
    ``proxy`` only that proxy's rows (``show stat <proxy> -1 -1``: every row
    type, every server). One backend's rows cost HAProxy and Prism a few lines
    instead of one line per server of the whole configuration."""
    if proxy is None:
        return Command("show stat")
    return Command(f"show stat {_word(PROXY_NAME, proxy, 'proxy name')} -1 -1")


def show_servers_state(backend: str | None = None) -> Command:
    """``show servers state [<backend>]``: the server-state-file format."""
    if backend is None:
        return Command("show servers state")
    return Command(f"show servers state {_word(PROXY_NAME, backend, 'backend name')}")


def show_servers_conn(backend: str | None = None) -> Command:
    """``show servers conn [<backend>]``: used and idle connections per server."""
    if backend is None:
        return Command("show servers conn")
    return Command(f"show servers conn {_word(PROXY_NAME, backend, 'backend name')}")


def show_map(path: str) -> Command:
    """``show map <path>``: the current entries of one map."""
    return Command(f"show map {_path(path)}")


def set_map(path: str, key: str, value: str) -> Command:
    """``set map``: change the value of every entry with ``key`` (the key must exist)."""
    return Command(
        f"set map {_path(path)} {_word(MAP_KEY, key, 'map key')} "
        f"{_word(MAP_VALUE, value, 'map value')}"
    )


def add_map(path: str, key: str, value: str) -> Command:
    """``add map``: append one entry (HAProxy does not check for duplicates)."""
    return Command(
        f"add map {_path(path)} {_word(MAP_KEY, key, 'map key')} "
        f"{_word(MAP_VALUE, value, 'map value')}"
    )


def del_map(path: str, key: str) -> Command:
    """``del map``: remove every entry with ``key``."""
    return Command(f"del map {_path(path)} {_word(MAP_KEY, key, 'map key')}")


def clear_map(path: str) -> Command:
    """``clear map``: remove every current entry (not atomic with a refill)."""
    return Command(f"clear map {_path(path)}")


def prepare_map(path: str) -> Command:
    """``prepare map``: allocate a new, empty, invisible version of a map."""
    return Command(f"prepare map {_path(path)}")


def commit_map(path: str, version: int) -> Command:
    """``commit map @<version>``: make that version the visible one, atomically."""
    return Command(f"commit map @{_int(version, 'map version', 0, _MAX_VERSION)} {_path(path)}")


def _entry_line(key: str, value: str) -> str:
    return f"{_word(MAP_KEY, key, 'map key')} {_word(MAP_VALUE, value, 'map value')}"


def _payload_head(path: str, version: int) -> str:
    return f"add map @{_int(version, 'map version', 0, _MAX_VERSION)} {_path(path)} <<"


def add_map_payload(path: str, version: int, entries: Sequence[tuple[str, str]]) -> Command:
    """``add map @<version> <path> <<`` with one ``key value`` line per entry.

    The text ends with a newline; the transport's own newline then makes the
    empty line that ends the payload. Every line is a validated key and value,
    so the payload can never contain an empty line of its own.
    """
    if isinstance(entries, str | bytes) or len(entries) == 0:
        # an empty payload would leave HAProxy waiting for its end: nothing runs
        raise UnsafeArgument(
            "a map payload needs at least one entry",
            hint="commit a prepared version without adding entries to empty a map",
        )
    lines = [_entry_line(key, value) for key, value in entries]
    return Command(_payload_head(path, version) + "\n" + "\n".join(lines) + "\n")


def add_map_payloads(
    path: str,
    version: int,
    entries: Sequence[tuple[str, str]],
    *,
    limit: int = PAYLOAD_LIMIT,
) -> list[Command]:
    """Split ``entries`` into as few payload commands as fit ``limit`` characters each.

    Every entry is validated before the first command is returned, so a bad
    entry anywhere means nothing is sent. No entries give no commands.
    """
    if isinstance(entries, str | bytes):
        raise UnsafeArgument("map entries must be (key, value) pairs, not a string")
    head = _payload_head(path, version)
    lines = [_entry_line(key, value) for key, value in entries]
    # +1 for the newline after the head, +1 for the transport's final newline
    budget = limit - len(head) - 2
    commands: list[Command] = []
    chunk: list[str] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) + 1 > budget:
            commands.append(Command(head + "\n" + "\n".join(chunk) + "\n"))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        commands.append(Command(head + "\n" + "\n".join(chunk) + "\n"))
    return commands


def add_server(
    backend: str,
    server: str,
    address: str,
    port: int,
    *,
    check: bool = True,
    inter_ms: int = 1000,
    rise: int = 2,
    fall: int = 3,
    weight: int | None = None,
    tuning: ServerTuning | None = None,
) -> Command:
    """``add server <backend>/<server> <address>:<port> [check inter .. rise .. fall ..]``
    followed by ``tuning``'s words (weight, slowstart, circuit breaker).

    A dynamic server inherits nothing from ``default-server``, so the check and
    its timings are spelled out here. It starts in maintenance (MAINT).
    """
    if weight is not None and tuning is not None:
        raise UnsafeArgument("give the weight of a tuned server in its tuning")
    # HAProxy wants <address>:<port> as one word; a separate port is an "unknown keyword"
    endpoint = f"{_address(address)}:{_int(port, 'port', 1, 65535)}"
    text = f"add server {_server_ref(backend, server)} {endpoint}"
    if check:
        text += (
            f" check inter {_int(inter_ms, 'check interval (ms)', 1, 3_600_000)}ms"
            f" rise {_int(rise, 'rise count', 1, 1000)}"
            f" fall {_int(fall, 'fall count', 1, 1000)}"
        )
    if weight is not None:
        text += f" weight {_int(weight, 'server weight', 0, 256)}"
    if tuning is not None:
        text += tuning.words()
    return Command(text)


def set_server_state(backend: str, server: str, state: AdminState) -> Command:
    """``set server <backend>/<server> state ready|drain|maint``."""
    if not isinstance(state, str) or state not in _SERVER_STATES:
        raise UnsafeArgument(
            f"unsafe server state for the Runtime API: {_shown(state)}",
            hint="a server state is one of ready, drain, maint",
        )
    return Command(f"set server {_server_ref(backend, server)} state {state}")


def enable_health(backend: str, server: str) -> Command:
    """``enable health <backend>/<server>``: start the health checks of a server."""
    return Command(f"enable health {_server_ref(backend, server)}")


def del_server(backend: str, server: str) -> Command:
    """``del server <backend>/<server>``: the server must be in MAINT with no connections."""
    return Command(f"del server {_server_ref(backend, server)}")


def set_server_weight(backend: str, server: str, weight: int) -> Command:
    """``set server <backend>/<server> weight <0..256>``."""
    return Command(
        f"set server {_server_ref(backend, server)} weight {_int(weight, 'server weight', 0, 256)}"
    )


def _cert_path(path: object) -> str:
    return _word(SAFE_PATH, path, "certificate path")


def set_ssl_cert(path: str, pem: str) -> Command:
    """``set ssl cert <path> <<`` and the PEM bundle: opens a transaction on a certificate
    the running configuration loaded (``commit ssl cert`` makes it serve).

    Every line of the bundle must be a PEM boundary or base64 (so the payload
    holds no empty line that would end it early, and no command); the text
    ends with a newline, and the transport's own newline ends the payload.
    """
    if not isinstance(pem, str) or len(pem) > PEM_PAYLOAD_LIMIT:
        raise UnsafeArgument(
            f"a certificate payload is text of at most {PEM_PAYLOAD_LIMIT} characters"
        )
    lines = pem.removesuffix("\n").split("\n")
    if not lines or not all(_PEM_LINE.fullmatch(line) for line in lines):
        raise UnsafeArgument(
            "unsafe certificate payload for the Runtime API: every line must be a PEM "
            "boundary or base64, with no empty line",
            hint="check the bundle with prism.core.pem.check_pem first",
        )
    return Command(f"set ssl cert {_cert_path(path)} <<\n" + "\n".join(lines) + "\n")


def commit_ssl_cert(path: str) -> Command:
    """``commit ssl cert <path>``: the transaction's certificate serves new handshakes."""
    return Command(f"commit ssl cert {_cert_path(path)}")


def abort_ssl_cert(path: str) -> Command:
    """``abort ssl cert <path>``: drop an uncommitted transaction."""
    return Command(f"abort ssl cert {_cert_path(path)}")


def show_ssl_cert(path: str | None = None) -> Command:
    """``show ssl cert [<path>]``: the loaded certificate files, or one file's details."""
    return Command("show ssl cert" if path is None else f"show ssl cert {_cert_path(path)}")
