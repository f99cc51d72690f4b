"""Where Prism keeps its files inside one state directory.

The state directory holds the store, the API token and everything rendered
for HAProxy. Rendered files are derived data: they can always be rebuilt from
desired state. Paths that reach HAProxy's Runtime API (map files) must match
:data:`SAFE_PATH`, so the state directory's absolute path must too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from prism.errors import InvalidInput

__all__ = ["SAFE_PATH", "StatePaths", "default_state_dir"]

SAFE_PATH = re.compile(r"/[A-Za-z0-9._/-]{1,200}", re.ASCII)


def default_state_dir() -> Path:
    """``$PRISM_STATE_DIR``, else ``$XDG_STATE_HOME/prism``, else ``~/.local/state/prism``."""
    if os.environ.get("PRISM_STATE_DIR"):
        return Path(os.environ["PRISM_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "prism"


@dataclass(frozen=True)
class StatePaths:
    """Every file and socket in a Prism state directory."""

    root: Path

    @classmethod
    def at(cls, root: str | Path) -> StatePaths:
        resolved = Path(root).expanduser().resolve()
        if SAFE_PATH.fullmatch(str(resolved)) is None:
            raise InvalidInput(
                f"state directory path {str(resolved)[:120]!r} has unsafe characters",
                hint="use a path of letters, digits and . _ / - only",
            )
        return cls(resolved)

    @property
    def config(self) -> Path:
        return self.root / "haproxy.cfg"

    @property
    def maps(self) -> Path:
        return self.root / "maps"

    @property
    def staging(self) -> Path:
        """Candidate files are rendered and checked here before going live."""
        return self.root / "staging"

    @property
    def server_state(self) -> Path:
        return self.root / "server-state"

    @property
    def admin_socket(self) -> Path:
        return self.root / "admin.sock"

    @property
    def master_socket(self) -> Path:
        return self.root / "master.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "haproxy.pid"

    @property
    def database(self) -> Path:
        return self.root / "prism.db"

    @property
    def token(self) -> Path:
        return self.root / "token"

    @property
    def server_info(self) -> Path:
        """Written by ``prism serve``: the URL it listens on, for the CLI to find."""
        return self.root / "server.json"

    def weights_map(self, app: str) -> Path:
        return self.maps / f"{app}.weights.map"
