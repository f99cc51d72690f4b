"""Keep HAProxy's server-state file honest.

HAProxy restores a server's saved state on start and reload, *including its
address and port*. A server whose address changed in desired state would come
back on its old address. So before HAProxy reads the file, Prism keeps only the
lines of servers that still exist with the same address; every other server
starts fresh from the config. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from prism.core.model import DesiredState, backend_name

__all__ = ["Addresses", "desired_addresses", "filter_server_state"]

#: (backend, server) -> (host, port)
Addresses = Mapping[tuple[str, str], tuple[str, int]]


def desired_addresses(state: DesiredState) -> dict[tuple[str, str], tuple[str, int]]:
    return {
        (backend_name(app.name, color.name), server.name): (server.host, server.port)
        for app in state.spec.apps
        for color in app.colors
        for server in color.servers
    }


def filter_server_state(text: str, addresses: Addresses) -> str:
    """Drop the lines of servers that are gone or whose address or port changed.

    The format is a version line, a ``# be_id be_name srv_id srv_name srv_addr ...``
    header naming the columns, then one line per server.
    """
    lines = text.splitlines()
    if len(lines) < 2 or not lines[1].startswith("#"):
        return ""
    columns = lines[1].lstrip("#").split()
    try:
        be, srv, addr, port = (
            columns.index(c) for c in ("be_name", "srv_name", "srv_addr", "srv_port")
        )
    except ValueError:
        return ""  # an unknown format: starting fresh is always safe
    kept = lines[:2]
    for line in lines[2:]:
        fields = line.split()
        if len(fields) != len(columns):
            continue
        want = addresses.get((fields[be], fields[srv]))
        if want is not None and fields[addr] == want[0] and fields[port] == str(want[1]):
            kept.append(line)
    return "\n".join(kept) + "\n"
