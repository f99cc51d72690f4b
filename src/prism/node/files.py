"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["read_text", "remove", "sync", "write_atomic"]


def write_atomic(path: Path, text: str, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``text`` to a temp file beside ``path``, fsync it, rename it over ``path``.

    The directory is fsynced too, so the rename itself survives a power cut:
    a map written here before a Runtime API change is what a reload reads.
    ``durable=False`` leaves both fsyncs to a later :func:`sync` of ``path``: any
    reader (a reload) sees the whole new file at once all the same, and only a
    power cut before that sync could bring back the old one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync(path.parent)


def sync(*paths: Path) -> None:
    """Make each file's content, and its name in its directory, survive a power cut
    (a directory shared by several of them is fsynced once)."""
    for path in paths:
        _fsync(path)
    for directory in dict.fromkeys(path.parent for path in paths):
        _fsync(directory)


def _fsync(path: Path) -> None:
    """fsync a file or a directory by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_text(path: Path) -> str | None:
    """The file's text, or None if it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
