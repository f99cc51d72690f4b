"""Where desired state lives: revisioned key/value entries plus an audit log.

* :mod:`.sqlite` — the embedded store, one SQLite file in the state directory;
* :mod:`.etcd` — the fleet's store on etcd (leases, watches that survive
  restarts, several endpoints, TLS and auth);
* :mod:`.url` — which of the two a process opens;
* :mod:`.desired` — desired state read out of either.

Both implement :class:`prism.types.Store`. May import: ``prism.core`` and the
top-level modules.
"""

from prism.store.sqlite import SqliteStore

__all__ = ["SqliteStore"]
