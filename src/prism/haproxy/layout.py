"""Where one HAProxy's files and sockets live inside a directory.

Rendered files are derived data: they can always be rebuilt from desired
state. Paths that reach HAProxy's config or Runtime API (map files, sockets)
must match :data:`~prism.haproxy.tokens.SAFE_PATH`, so the directory's own
absolute path must too (:meth:`HAProxyFiles.at` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Self

from prism.errors import InvalidInput
from prism.haproxy.tokens import SAFE_PATH

__all__ = ["HAProxyFiles"]


@dataclass(frozen=True)
class HAProxyFiles:
    """The config, maps, pages, server state, sockets and pid file of one HAProxy."""

    root: Path

    @classmethod
    def at(cls, root: str | Path) -> Self:
        """The layout under ``root`` (resolved); InvalidInput if its path is unsafe."""
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

    def weights_map(self, app: str) -> Path:
        return self.maps / f"{app}.weights.map"
