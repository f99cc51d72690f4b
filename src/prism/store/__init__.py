"""Where desired state lives: revisioned key/value entries plus an audit log.

:class:`SqliteStore` is the embedded store (one SQLite file in the state
directory); an etcd store for fleets implements the same
:class:`prism.types.Store` protocol.
"""

from prism.store.sqlite import SqliteStore

__all__ = ["SqliteStore"]
