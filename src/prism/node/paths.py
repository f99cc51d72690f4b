"""Where a Prism node keeps its files inside one state directory.

The state directory holds the store, the API token and everything rendered
for HAProxy (:class:`~prism.haproxy.layout.HAProxyFiles`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prism.errors import InvalidInput
from prism.haproxy.layout import HAProxyFiles

__all__ = ["StatePaths", "default_state_dir"]

# HAProxy refuses a unix socket path longer than this (its own limit, below sun_path's).
_MAX_SOCKET_PATH = 97


def default_state_dir() -> Path:
    """``$PRISM_STATE_DIR``, else ``$XDG_STATE_HOME/prism``, else ``~/.local/state/prism``."""
    if os.environ.get("PRISM_STATE_DIR"):
        return Path(os.environ["PRISM_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "prism"


@dataclass(frozen=True)
class StatePaths(HAProxyFiles):
    """Every file and socket in a Prism state directory: HAProxy's, and Prism's own."""

    @property
    def database(self) -> Path:
        return self.root / "prism.db"

    @property
    def token(self) -> Path:
        return self.root / "token"

    @property
    def weights(self) -> Path:
        """The weights this node's Prism lowered (slow servers), kept across restarts."""
        return self.root / "weights.json"

    def check_socket_paths(self) -> None:
        """Refuse a state directory whose sockets HAProxy could not bind: it takes a
        ``stats socket`` path of at most 97 characters (the staging copy's, checked
        before a fleet node applies a change, is the longest)."""
        longest = HAProxyFiles.at(self.staging).admin_socket
        if len(os.fsencode(longest)) > _MAX_SOCKET_PATH:
            raise InvalidInput(
                f"state directory {str(self.root)[:200]!r} is too long: HAProxy's socket "
                f"paths must stay under {_MAX_SOCKET_PATH + 1} characters",
                hint=f"use a state directory of at most "
                f"{_MAX_SOCKET_PATH - len(os.fsencode(longest)) + len(os.fsencode(self.root))} "
                "characters (--state-dir)",
            )

    @property
    def server_info(self) -> Path:
        """Written by ``prism serve``: the URL it listens on, for the CLI to find."""
        return self.root / "server.json"
