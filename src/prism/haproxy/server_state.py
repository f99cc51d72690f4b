"""Keep HAProxy's server-state file honest.

HAProxy restores a server's saved state on start and reload, *including its
address and port*. A server whose address changed in desired state would come
back on its old address. So before HAProxy reads the file, Prism keeps only the
lines of servers that still exist with the same address; every other server
starts fresh from the config. DNS discovery slots keep their lines whatever
their address: the resolver put it there, and keeping it (``init-addr last``)
means a reload never empties a color while the record is asked again. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from prism.core.model import SLOT_PREFIX, backend_name
from prism.core.state import DesiredState

__all__ = ["Addresses", "desired_addresses", "filter_server_state"]

#: (backend, server) -> (host, port), or None for a discovery slot (any address)
Addresses = Mapping[tuple[str, str], tuple[str, int] | None]


def desired_addresses(state: DesiredState) -> dict[tuple[str, str], tuple[str, int] | None]:
    found: dict[tuple[str, str], tuple[str, int] | None] = {}
    for app in state.served.apps:
        for color in app.colors:
            backend = backend_name(app.name, color.name)
            for server in color.servers:
                found[(backend, server.name)] = (server.host, server.port)
            for slot in range(1, color.slots + 1):
                found[(backend, f"{SLOT_PREFIX}{slot}")] = None
    return found


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
        which = (fields[be], fields[srv])
        if which not in addresses:
            continue
        want = addresses[which]
        if want is None or (fields[addr] == want[0] and fields[port] == str(want[1])):
            kept.append(line)
    return "\n".join(kept) + "\n"
