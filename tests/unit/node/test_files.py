"""Atomic writes: fsynced at once, or replaced at once and made durable later."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prism.node import files


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kind (file or directory) of each fsync made."""
    made: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        made.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return made


def test_a_durable_write_fsyncs_the_file_then_its_directory(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    target = tmp_path / "maps" / "shop.map"
    files.write_atomic(target, "0:99 shop.blue\n")
    assert target.read_text() == "0:99 shop.blue\n"
    assert fsyncs == ["file", "dir"]
    assert [p.name for p in target.parent.iterdir()] == ["shop.map"]  # no temp file left


def test_a_deferred_write_replaces_at_once_and_sync_makes_it_durable(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    target = tmp_path / "shop.map"
    target.write_text("old\n")
    files.write_atomic(target, "new\n", mode=0o600, durable=False)
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert fsyncs == []
    files.sync(target)
    assert fsyncs == ["file", "dir"]


def test_sync_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        files.sync(tmp_path / "missing.map")


def test_sync_fsyncs_a_shared_directory_once(tmp_path: Path, fsyncs: list[str]) -> None:
    first, second = tmp_path / "a.map", tmp_path / "b.map"
    for target in (first, second):
        files.write_atomic(target, "x\n", durable=False)
    files.sync(first, second)
    assert fsyncs == ["file", "file", "dir"]
