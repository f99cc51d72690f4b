"""The manual blue/green flow, as people script it by hand: the cutover baseline.

This is the well-known "deploy.sh" recipe for HAProxy (see seed 001 in the
project's notes), written afresh in Python with one raw connection to the
admin socket per command, the way ``echo CMD | socat stdio <socket>`` does it:

1. **wait until up**: read ``show stat`` and look at the target servers'
   status; if it is not ``UP``, sleep a second and read again;
2. **forward**: one ``set map <map> <key> <backend>`` — the frontend routes with
   ``use_backend %[str(<key>),map(<map>)]``;
3. **wait until drained**: sleep a second, read ``show servers conn`` of the
   old backend, until its in-use connection count is 0.

Unlike the original it reads columns by their header names instead of fixed
positions. It has no smoke test, no read-back, no persistence (a reload puts
the old color back), no audit and no lock against a second operator.

Run it as a script (``python -m bench.manual_bluegreen --socket S --map M
--key K --to green --from blue``) or call :func:`release` in-process. It
imports only the standard library, so as a script it starts about as fast as
a shell script that spawns ``socat``.
"""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path

__all__ = ["admin_command", "csv_rows", "forward_to", "release", "wait_drained", "wait_up"]


def admin_command(sock: Path | str, command: str, timeout: float = 10.0) -> str:
    """``echo COMMAND | socat stdio SOCKET``: send, half-close, read until HAProxy closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(sock))
        conn.sendall(command.encode("ascii") + b"\n")
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def csv_rows(text: str) -> list[dict[str, str]]:
    """``show stat`` CSV as dicts keyed by its own header (no hard-coded positions)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    header = lines[0][2:].split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]


def wait_up(sock: Path | str, backend: str, *, interval: float = 1.0, timeout: float = 60) -> int:
    """Poll ``show stat`` until every server of ``backend`` is UP; return the polls made."""
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        polls += 1
        rows = [
            r
            for r in csv_rows(admin_command(sock, "show stat"))
            if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")
        ]
        if rows and all(r["status"] == "UP" for r in rows):
            return polls
        if time.monotonic() > deadline:
            raise TimeoutError(f"{backend} did not come UP")
        time.sleep(interval)


def forward_to(sock: Path | str, map_path: str, key: str, backend: str) -> None:
    """Send all traffic to ``backend``: one ``set map``."""
    reply = admin_command(sock, f"set map {map_path} {key} {backend}")
    if reply.strip():
        raise RuntimeError(f"set map refused: {reply.strip()}")


def in_use(sock: Path | str, backend: str) -> int:
    """Connections in use on ``backend``'s servers (``used_cur`` of ``show servers conn``)."""
    lines = admin_command(sock, f"show servers conn {backend}").splitlines()
    header = lines[0].lstrip("# ").split() if lines else []
    column = header.index("used_cur")
    return sum(int(line.split()[column]) for line in lines[1:] if line.strip())


def wait_drained(
    sock: Path | str, backend: str, *, interval: float = 1.0, timeout: float = 60
) -> int:
    """Sleep, then read ``show servers conn``, until nothing is in use; return the polls."""
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        time.sleep(interval)
        polls += 1
        if in_use(sock, backend) == 0 or time.monotonic() > deadline:
            return polls


def release(
    sock: Path | str,
    map_path: str,
    key: str,
    to: str,
    old: str,
    *,
    interval: float = 1.0,
) -> float:
    """The whole flow; returns the monotonic time at which ``set map`` was answered."""
    wait_up(sock, to, interval=interval)
    forward_to(sock, map_path, key, to)
    switched = time.monotonic()
    wait_drained(sock, old, interval=interval)
    return switched


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.manual_bluegreen")
    parser.add_argument("--socket", required=True, help="HAProxy admin socket")
    parser.add_argument("--map", required=True, help="map file the frontend routes with")
    parser.add_argument("--key", required=True, help="map key whose value names the backend")
    parser.add_argument("--to", required=True, help="backend to send all traffic to")
    parser.add_argument("--from", dest="old", required=True, help="backend to drain")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval (s)")
    args = parser.parse_args()
    release(args.socket, args.map, args.key, args.to, args.old, interval=args.interval)


if __name__ == "__main__":
    main()
