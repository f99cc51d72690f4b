"""The private network namespace: loopback works, nothing else is reachable, and it ends."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from prism.testing import netns

pytestmark = pytest.mark.skipif(not netns.available(), reason="needs CAP_SYS_ADMIN (root)")


def _namespace() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_inside_only_loopback_answers_and_leaving_restores_the_host_namespace() -> None:
    """A loopback listener is reachable; TEST-NET-1 (never routed) has no route at all."""
    host = _namespace()
    with netns.isolated_network():
        assert _namespace() != host
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            with socket.create_connection(server.getsockname(), timeout=2):
                pass
        with socket.socket() as out:
            out.settimeout(2)
            assert out.connect_ex(("192.0.2.1", 80)) == errno.ENETUNREACH
    assert _namespace() == host
