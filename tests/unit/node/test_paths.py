"""Paths of a state directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism.errors import InvalidInput
from prism.node.paths import StatePaths


def test_a_state_directory_too_long_for_haproxys_sockets_is_refused() -> None:
    """HAProxy binds no socket path over 97 characters; the staging copy's is the longest,
    so the directory may be at most 78: refused with the length to use, nothing created."""
    fits = Path("/tmp/" + "a" * 73)  # 78 characters; nothing is created
    StatePaths.at(fits).check_socket_paths()
    too_long = Path("/tmp/" + "a" * 74)
    with pytest.raises(InvalidInput, match=r"too long: HAProxy's socket paths"):
        StatePaths.at(too_long).check_socket_paths()
    assert not too_long.exists()
