"""Which store a process uses: the embedded SQLite file, or etcd for a fleet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prism.types import Store

__all__ = ["StoreOptions", "open_store"]


@dataclass(frozen=True)
class StoreOptions:
    """``url`` is ``etcd://HOST:PORT[,HOST:PORT...]/PREFIX`` for a fleet, or None for the
    SQLite file in the state directory; the rest are etcd's TLS files and credentials."""

    url: str | None = None
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = None

    @property
    def fleet(self) -> bool:
        return self.url is not None


async def open_store(options: StoreOptions, database: Path) -> Store:
    """Open the store ``options`` name; ``database`` is the SQLite file otherwise used."""
    if options.url is None:
        from prism.store.sqlite import SqliteStore

        return await SqliteStore.open(database)
    from prism.store.etcd import EtcdStore

    return await EtcdStore.open(
        options.url,
        username=options.username,
        password=options.password,
        cacert=options.cacert,
        cert=options.cert,
        key=options.key,
    )
