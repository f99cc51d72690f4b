"""Pure parsers for Runtime API replies, and the judge of refused commands.

Tabular replies are parsed by their own header line, never by column
position: HAProxy adds columns between versions. Every parser returns frozen
values and keeps each row's full ``raw`` mapping for columns Prism does not
name. A reply that does not have the expected shape raises
:class:`~prism.errors.RuntimeAPIError`: it means the socket answered something
else than what was asked (an error, another version, a truncated read).

:func:`check_reply` decides whether a reply means success. HAProxy has no
status codes: errors are free text such as ``Unknown map identifier. Please
use #<id> or <file>.`` or ``No such server.``. Rather than guess from a list
of error phrases, each command is judged by what its *success* looks like
(empty for map and server edits, ``New version created: N`` for ``prepare
map``, a CSV header for ``show stat`` ...), so an unforeseen error is still
an error.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from prism.errors import RuntimeAPIError
from prism.haproxy.commands import Command

__all__ = [
    "LoadedCert",
    "MapEntry",
    "ServerConn",
    "ServerState",
    "StatRow",
    "check_reply",
    "parse_new_version",
    "parse_servers_conn",
    "parse_servers_state",
    "parse_show_info",
    "parse_show_map",
    "parse_show_ssl_cert",
    "parse_show_stat",
    "parse_ssl_cert_files",
]

# srv_admin_state bits (HAProxy's enum srv_admin): forced/inherited/resolution
# maintenance, and forced/inherited drain
_ADMIN_MAINT = 0x01 | 0x02 | 0x20
_ADMIN_DRAIN = 0x08 | 0x10
_NEW_VERSION = re.compile(r"New version created: ([0-9]{1,10})", re.ASCII)
_REPEATED = re.compile(r"(.+)\[([0-9]{1,4})\]", re.ASCII)


@dataclass(frozen=True, slots=True)
class StatRow:
    """One row of ``show stat``: a frontend, a backend or a server.

    ``status`` is HAProxy's exact string (``UP``, ``UP 1/2``, ``DOWN``,
    ``MAINT``, ``DRAIN``, ``no check`` ...). ``type`` is 0 frontend, 1
    backend, 2 server, 3 listener. Empty numeric fields read as 0.
    """

    proxy: str
    server: str
    type: int
    status: str
    weight: int
    scur: int
    stot: int
    req_tot: int
    hrsp_2xx: int
    hrsp_5xx: int
    rtime: int
    check_status: str
    addr: str
    raw: Mapping[str, str] = field(repr=False, hash=False)


@dataclass(frozen=True, slots=True)
class ServerState:
    """One server of ``show servers state`` (the server-state-file format).

    ``op_state``: 0 stopped, 1 starting, 2 running, 3 stopping.
    ``admin_state`` is a bit field; see :attr:`in_maint` and :attr:`draining`.
    """

    backend: str
    server: str
    address: str
    port: int
    op_state: int
    admin_state: int
    weight: int
    initial_weight: int
    check_health: int
    raw: Mapping[str, str] = field(repr=False, hash=False)

    @property
    def in_maint(self) -> bool:
        """Whether any maintenance flag is set (forced, inherited, resolution)."""
        return bool(self.admin_state & _ADMIN_MAINT)

    @property
    def draining(self) -> bool:
        """Whether a drain flag is set (forced or inherited)."""
        return bool(self.admin_state & _ADMIN_DRAIN)


@dataclass(frozen=True, slots=True)
class ServerConn:
    """One server of ``show servers conn``: connections in use and idle in its pool."""

    backend: str
    server: str
    address: str
    port: int
    used_cur: int
    used_max: int
    idle_cur: int
    raw: Mapping[str, str] = field(repr=False, hash=False)


@dataclass(frozen=True, slots=True)
class MapEntry:
    """One map entry: HAProxy's reference (``0x...``), key and value."""

    ref: str
    key: str
    value: str


def _malformed(what: str, text: str) -> RuntimeAPIError:
    return RuntimeAPIError(
        f"unexpected {what} reply from HAProxy",
        detail={"reply": text[:500]},
    )


def _lines(text: str) -> list[str]:
    # replies end with an empty line; no command emits an empty line inside
    return [line for line in text.splitlines() if line.strip()]


def _to_int(raw: Mapping[str, str], name: str, what: str) -> int:
    value = raw.get(name, "")
    if value == "":
        return 0
    try:
        return int(value)
    except ValueError:
        raise RuntimeAPIError(
            f"unexpected {what} reply from HAProxy: {name}={value[:40]!r} is not a number"
        ) from None


def _row(names: list[str], values: list[str]) -> Mapping[str, str]:
    return MappingProxyType({n: values[i] if i < len(values) else "" for i, n in enumerate(names)})


def parse_show_stat(text: str) -> list[StatRow]:
    """Parse ``show stat`` CSV by its ``# pxname,svname,...`` header."""
    lines = _lines(text)
    if not lines or not lines[0].startswith("# "):
        raise _malformed("show stat", text)
    names = next(csv.reader([lines[0][2:]]))
    # every line ends with a comma, which makes one empty trailing column
    while names and names[-1] == "":
        names.pop()
    if "pxname" not in names or "svname" not in names:
        raise _malformed("show stat", text)
    rows: list[StatRow] = []
    for values in csv.reader(lines[1:]):
        raw = _row(names, values)
        rows.append(
            StatRow(
                proxy=raw.get("pxname", ""),
                server=raw.get("svname", ""),
                type=_to_int(raw, "type", "show stat"),
                status=raw.get("status", ""),
                weight=_to_int(raw, "weight", "show stat"),
                scur=_to_int(raw, "scur", "show stat"),
                stot=_to_int(raw, "stot", "show stat"),
                req_tot=_to_int(raw, "req_tot", "show stat"),
                hrsp_2xx=_to_int(raw, "hrsp_2xx", "show stat"),
                hrsp_5xx=_to_int(raw, "hrsp_5xx", "show stat"),
                rtime=_to_int(raw, "rtime", "show stat"),
                check_status=raw.get("check_status", ""),
                addr=raw.get("addr", ""),
                raw=raw,
            )
        )
    return rows


def parse_servers_state(text: str) -> list[ServerState]:
    """Parse ``show servers state``: a version line ``1``, a ``# be_id ...`` header, rows."""
    lines = _lines(text)
    if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("# "):
        raise _malformed("show servers state", text)
    names = lines[1][2:].split()
    states: list[ServerState] = []
    for line in lines[2:]:
        values = line.split()
        if len(values) != len(names):
            raise _malformed("show servers state", text)
        raw = _row(names, values)
        states.append(
            ServerState(
                backend=raw.get("be_name", ""),
                server=raw.get("srv_name", ""),
                address=raw.get("srv_addr", ""),
                port=_to_int(raw, "srv_port", "show servers state"),
                op_state=_to_int(raw, "srv_op_state", "show servers state"),
                admin_state=_to_int(raw, "srv_admin_state", "show servers state"),
                weight=_to_int(raw, "srv_uweight", "show servers state"),
                initial_weight=_to_int(raw, "srv_iweight", "show servers state"),
                check_health=_to_int(raw, "srv_check_health", "show servers state"),
                raw=raw,
            )
        )
    return states


def _expand(names: list[str]) -> list[str]:
    # "idle_per_thr[2]" stands for one column per thread
    out: list[str] = []
    for name in names:
        repeated = _REPEATED.fullmatch(name)
        if repeated:
            out.extend(f"{repeated[1]}[{i}]" for i in range(int(repeated[2])))
        else:
            out.append(name)
    return out


def parse_servers_conn(text: str) -> list[ServerConn]:
    """Parse ``show servers conn`` by its ``# bkname/svname ...`` header."""
    lines = _lines(text)
    if not lines or not lines[0].startswith("# bkname/svname"):
        raise _malformed("show servers conn", text)
    names = _expand(lines[0][2:].split())
    conns: list[ServerConn] = []
    for line in lines[1:]:
        values = line.split()
        if len(values) != len(names):
            raise _malformed("show servers conn", text)
        raw = _row(names, values)
        backend, slash, server = raw["bkname/svname"].partition("/")
        if not slash:
            raise _malformed("show servers conn", text)
        conns.append(
            ServerConn(
                backend=backend,
                server=server,
                address=raw.get("addr", ""),
                port=_to_int(raw, "port", "show servers conn"),
                used_cur=_to_int(raw, "used_cur", "show servers conn"),
                used_max=_to_int(raw, "used_max", "show servers conn"),
                idle_cur=_to_int(raw, "idle_cur", "show servers conn"),
                raw=raw,
            )
        )
    return conns


def parse_show_map(text: str) -> list[MapEntry]:
    """Parse ``show map <path>``: lines ``0x<ref> <key> <value>``, in map order."""
    entries: list[MapEntry] = []
    for line in _lines(text):
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("0x"):
            raise _malformed("show map", text)
        # a map file may hold values with spaces: everything after the key
        entries.append(MapEntry(parts[0], parts[1], parts[2] if len(parts) == 3 else ""))
    return entries


def parse_show_info(text: str) -> dict[str, str]:
    """Parse ``show info``: ``Name: value`` lines into a dict."""
    info: dict[str, str] = {}
    for line in _lines(text):
        name, colon, value = line.partition(":")
        if not colon:
            raise _malformed("show info", text)
        info[name.strip()] = value.strip()
    if "Name" not in info:
        raise _malformed("show info", text)
    return info


def parse_new_version(text: str) -> int:
    """The version number in ``prepare map``'s reply ``New version created: N``."""
    found = _NEW_VERSION.fullmatch(text.strip())
    if found is None:
        raise _malformed("prepare map", text)
    return int(found[1])


def _is_empty(body: str) -> bool:
    return body == ""


def _show_map_ok(body: str) -> bool:
    return body == "" or body.startswith("0x")


# What success looks like, by command prefix; the first match wins.
_SUCCESS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("show stat", lambda body: body.startswith("# pxname,")),
    ("show servers state", lambda body: body == "1" or body.startswith("1\n# ")),
    ("show servers conn", lambda body: body.startswith("# bkname/svname")),
    ("show info", lambda body: body.startswith("Name: ")),
    ("show map", _show_map_ok),
    ("prepare map", lambda body: _NEW_VERSION.fullmatch(body) is not None),
    ("add server", lambda body: body == "New server registered."),
    ("del server", lambda body: body == "Server deleted."),
    ("set map", _is_empty),
    ("add map", _is_empty),
    ("del map", _is_empty),
    ("clear map", _is_empty),
    ("commit map", _is_empty),
    ("set ssl cert", lambda body: body.startswith("Transaction created for certificate ")),
    ("commit ssl cert", lambda body: body.endswith("Success!")),
    ("abort ssl cert", lambda body: body.startswith("Transaction aborted for certificate")),
    ("show ssl cert ", lambda body: body.startswith("Filename: ")),
    ("show ssl cert", lambda body: body.startswith("# filename")),
    ("set server", _is_empty),
    ("enable health", _is_empty),
    ("disable health", _is_empty),
)

# Phrases HAProxy uses for refusals, for commands without a success rule.
_ERROR_STARTS = (
    "Unknown command",
    "Unknown map identifier",
    "Permission denied",
    "No such",
    "Can't",
    "The command is too big",
    "Missing",
)

_HINTS = {
    "Can't replace a certificate which is not referenced": "HAProxy replaces only a "
    "certificate file its configuration loaded (a bind's crt, or a file of its directory)",
    "Permission denied": "the stats socket needs 'level admin'",
    "Unknown map identifier": "the map file must be loaded by the running configuration",
    "The command is too big": "send fewer map entries per payload",
    "entry not found": "set map changes existing keys only; use add map for a new key",
    "Only servers in maintenance": "put the server in maint (after draining) first",
}


def check_reply(command: Command, reply: str) -> None:
    """Raise :class:`~prism.errors.RuntimeAPIError` if ``reply`` refuses ``command``.

    An entirely empty reply (not even the final newline) also fails: HAProxy
    closed without running the command (an unterminated payload, a crash).
    """
    if reply == "":
        raise RuntimeAPIError(
            f"HAProxy closed the connection without answering {command.summary!r}",
            hint="the command was not run",
            detail={"command": command.summary},
        )
    body = reply.strip("\n")
    rule = next((ok for prefix, ok in _SUCCESS if command.text.startswith(prefix)), None)
    refused = not rule(body) if rule else body.startswith(_ERROR_STARTS)
    if refused:
        first = body.split("\n", 1)[0][:200] or "(empty reply)"
        hint = next((h for start, h in _HINTS.items() if first.startswith(start)), None)
        raise RuntimeAPIError(
            f"HAProxy refused {command.summary!r}: {first}",
            hint=hint,
            detail={"command": command.summary, "reply": body[:1000]},
        )


@dataclass(frozen=True, slots=True)
class LoadedCert:
    """One certificate file as ``show ssl cert <path>`` describes it."""

    path: str
    serial: str
    not_before: str
    not_after: str
    subject: str
    issuer: str
    sha1: str
    names: str
    status: str


def parse_show_ssl_cert(reply: str) -> LoadedCert:
    """The ``Key: value`` lines of ``show ssl cert <path>``."""
    fields: dict[str, str] = {}
    for line in reply.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key not in fields:
            fields[key] = value.strip()
        elif line.endswith(":") and line[:-1] not in fields:
            fields[line[:-1]] = ""
    return LoadedCert(
        path=fields.get("Filename", ""),
        serial=fields.get("Serial", ""),
        not_before=fields.get("notBefore", ""),
        not_after=fields.get("notAfter", ""),
        subject=fields.get("Subject", ""),
        issuer=fields.get("Issuer", ""),
        sha1=fields.get("SHA1 FingerPrint", ""),
        names=fields.get("Subject Alternative Name", ""),
        status=fields.get("Status", ""),
    )


def parse_ssl_cert_files(reply: str) -> list[str]:
    """The file names ``show ssl cert`` lists, once each (a ``*`` marks the uncommitted
    copy of one in a transaction, listed besides the file itself)."""
    names = (line.lstrip("*") for line in reply.splitlines() if line and not line.startswith("#"))
    return list(dict.fromkeys(names))
