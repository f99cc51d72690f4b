"""A client for HAProxy's master CLI (the ``-S`` socket of master-worker mode).

The master waits for the client to half-close (``shutdown(SHUT_WR)``) before it
answers, then answers and closes, so every exchange is: connect, send the
command and a newline, half-close, read to EOF.

``reload`` is synchronous since 2.7: the reply comes once the new worker is up
(or the attempt failed) and must be the last command on its connection. Replies
seen from 2.8.25::

    Success=1
    --
    [NOTICE]   (4219) : New worker (4388) forked
    [NOTICE]   (4219) : Loading success.
    ...

    Success=0
    --
    [ALERT]    (4219) : config : parsing [haproxy.cfg:18] : unknown keyword ...
    [WARNING]  (4219) : Loading failure!

and ``show proc``::

    #<PID>          <type>          <reloads>       <uptime>        <version>
    4219            master          2 [failed: 1]   0d00h00m08s     2.8.25-5cf5d0683
    # workers
    5071            worker          1               0d00h00m00s     2.8.25-5cf5d0683
    # old workers
    5064            worker          2               0d00h00m01s     2.8.25-5cf5d0683
    # programs

A worker's ``<reloads>`` counts the reloads it has lived through, failed ones
included, so the current worker is told apart by its section, not by a 0 there.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from prism.errors import RuntimeAPIError

__all__ = [
    "MasterClient",
    "ProcInfo",
    "ReloadResult",
    "parse_reload",
    "parse_show_proc",
    "summarize_errors",
    "unix_exchange",
]

_PROC_ROW = re.compile(
    r"(?P<pid>\d+)\s+(?P<type>\S+)\s+(?P<reloads>\d+)(?:\s+\[failed:\s*(?P<failed>\d+)\])?"
    r"\s+(?P<uptime>\S+)(?:\s+(?P<version>\S+))?",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What the master said about a ``reload``: whether it worked, and its log lines."""

    success: bool
    output: str
    """HAProxy's startup log (or its errors) after the ``--`` line."""


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """The process table of ``show proc``."""

    master_pid: int
    reloads: int
    """Reload attempts since the master started, failed ones included."""
    failed_reloads: int
    workers: tuple[int, ...]
    """PIDs of the workers serving the current configuration."""
    old_workers: tuple[int, ...] = ()
    """PIDs of workers from earlier reloads, still finishing their connections."""
    version: str = ""


# One bound for connect + send + read, so no caller can forget it.
async def unix_exchange(path: Path, command: str, *, timeout: float) -> str:  # noqa: ASYNC109
    """Send one ``command`` to the HAProxy CLI socket at ``path`` and return the reply.

    Works for the master socket (which needs the half-close) and for a stats
    socket in non-interactive mode (which answers one command and closes).
    Raises :class:`~prism.errors.RuntimeAPIError` on I/O failure or timeout.
    """
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(command.encode() + b"\n")
            await writer.drain()
            writer.write_eof()
            reply = await reader.read(-1)
    except TimeoutError as exc:
        raise RuntimeAPIError(
            f"no reply to {command!r} from {path} within {timeout:g} s",
            hint="HAProxy may be overloaded or stuck; check its log",
        ) from exc
    except OSError as exc:
        raise RuntimeAPIError(
            f"cannot talk to HAProxy at {path}: {exc.strerror or exc}",
            hint="is HAProxy running with this state directory?",
        ) from exc
    finally:
        if writer is not None:
            writer.close()
            # The peer has already closed; waiting only flushes our side.
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return reply.decode("utf-8", errors="replace")


def parse_reload(reply: str) -> ReloadResult:
    """Parse the master's answer to ``reload``.

    Raises :class:`~prism.errors.RuntimeAPIError` for a reply without a
    ``Success=`` line (an HAProxy before 2.7, or not a master socket).
    """
    head, _, rest = reply.partition("\n")
    head = head.strip()
    if head not in ("Success=1", "Success=0"):
        raise RuntimeAPIError(
            f"unexpected reply to reload: {head[:200]!r}",
            hint="the master CLI of HAProxy >= 2.7 answers 'Success=0|1'",
            detail={"reply": reply},
        )
    # The log follows a "--" separator line; keep whatever comes if it is missing.
    if rest.startswith("--\n") or rest.strip() == "--":
        rest = rest[3:]
    return ReloadResult(success=head == "Success=1", output=rest.strip("\n"))


def parse_show_proc(reply: str) -> ProcInfo:
    """Parse the master's answer to ``show proc``.

    Raises :class:`~prism.errors.RuntimeAPIError` when no master row is found.
    """
    section = "master"
    master: re.Match[str] | None = None
    workers: list[int] = []
    old_workers: list[int] = []
    for raw in reply.splitlines():
        line = raw.strip()
        if not line or line.startswith("#<"):
            continue
        if line.startswith("#"):
            section = line.lstrip("#").strip().lower()
            continue
        row = _PROC_ROW.match(line)
        if row is None:
            continue
        kind = row.group("type")
        if kind == "master" and master is None:
            master = row
        elif kind == "worker" and section == "workers":
            workers.append(int(row.group("pid")))
        elif kind == "worker" and section == "old workers":
            old_workers.append(int(row.group("pid")))
    if master is None:
        first = reply.strip().splitlines()[0] if reply.strip() else "(empty)"
        raise RuntimeAPIError(
            f"unexpected reply to show proc: {first[:200]!r}",
            hint="is this HAProxy's master socket?",
            detail={"reply": reply},
        )
    return ProcInfo(
        master_pid=int(master.group("pid")),
        reloads=int(master.group("reloads")),
        failed_reloads=int(master.group("failed") or 0),
        workers=tuple(workers),
        old_workers=tuple(old_workers),
        version=master.group("version") or "",
    )


_LOG_PREFIX = re.compile(r"^\[(?P<level>[A-Z]+)\]\s+\(\d+\)\s*:\s*", re.ASCII)
# Alerts that only say "there were errors" and name none of them.
_GENERIC_ALERTS = ("Error(s) found in configuration file", "Fatal errors found in configuration")


def summarize_errors(output: str, *, limit: int = 3) -> str:
    """The first ``limit`` error lines of HAProxy's startup or ``-c`` output.

    ``[ALERT]    (4219) : config : parsing [h.cfg:12] : unknown keyword 'x'``
    becomes ``config : parsing [h.cfg:12] : unknown keyword 'x'``. When there is
    no alert, the last non-empty lines are returned instead.
    """
    alerts: list[str] = []
    for raw in output.splitlines():
        match = _LOG_PREFIX.match(raw.strip())
        if match is None or match.group("level") != "ALERT":
            continue
        text = raw.strip()[match.end() :]
        if not any(generic in text for generic in _GENERIC_ALERTS):
            alerts.append(text)
    if not alerts:
        alerts = [line.strip() for line in output.splitlines() if line.strip()][-limit:]
    return "; ".join(alerts[:limit]) if alerts else "(no output)"


class MasterClient:
    """Talks to one master CLI socket; one connection per command.

    Satisfies :class:`prism.types.RuntimeTransport` (``request``/``close``), so
    a caller can also send raw master commands such as ``@1 show info``.
    """

    def __init__(
        self, socket_path: Path, *, timeout: float = 10.0, reload_timeout: float = 120.0
    ) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        # A reload answers only once the new worker has parsed its config and
        # started, which takes long for big configs: give it its own limit.
        self.reload_timeout = reload_timeout

    async def request(self, text: str) -> str:
        """Send one command and return the master's whole reply."""
        return await unix_exchange(self.socket_path, text, timeout=self.timeout)

    async def reload(self) -> ReloadResult:
        """Reload HAProxy and wait for the outcome (``Success=1`` or ``Success=0``)."""
        reply = await unix_exchange(self.socket_path, "reload", timeout=self.reload_timeout)
        return parse_reload(reply)

    async def show_proc(self) -> ProcInfo:
        """The master PID and the PIDs of current and old workers."""
        return parse_show_proc(await self.request("show proc"))

    async def close(self) -> None:
        """Nothing to release: each command uses its own connection."""
