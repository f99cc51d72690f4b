"""A private network namespace with only loopback: for tests that must reach nothing else.

An API fuzzer generates valid specs and server addresses at random; applied,
they would have HAProxy health-check whatever address came up. Inside
:func:`isolated_network` (or ``unshare --net -- python -m prism.testing.netns
CMD ...``) the calling thread and every process it starts see a fresh network
namespace whose only interface is ``lo``: 127.0.0.0/8 works, any other
address is unreachable. Needs CAP_SYS_ADMIN (root); :func:`available` says
whether it can be had.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
import sys
from collections.abc import Iterator

__all__ = ["available", "isolated_network", "loopback_up"]

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def loopback_up() -> None:
    """Bring ``lo`` up in the current network namespace (a new one starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))


def available() -> bool:
    """Whether this process may make network namespaces (tried in a throwaway child)."""
    if not sys.platform.startswith("linux"):
        return False
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only reports
        os._exit(0 if _libc().unshare(_CLONE_NEWNET) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@contextlib.contextmanager
def isolated_network() -> Iterator[None]:
    """Move the calling thread into a new network namespace with only loopback, and back.

    Processes started inside stay in it for their whole life: stop them before leaving.
    """
    libc = _libc()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"unshare(CLONE_NEWNET): {os.strerror(errno)}")
        try:
            loopback_up()
            yield
        finally:
            if libc.setns(home, _CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"setns back to the host network: {os.strerror(errno)}")
    finally:
        os.close(home)


def main() -> None:
    """``unshare --net -- python -m prism.testing.netns CMD ...``: loopback up, then exec."""
    loopback_up()
    command = sys.argv[1:]
    if command[:1] == ["--"]:
        command = command[1:]
    os.execvp(command[0], command)  # noqa: S606 - exec in place, as unshare does


if __name__ == "__main__":
    main()
