"""The HAProxy Runtime API client and its unix socket transport.

:class:`RuntimeClient` turns method calls into validated commands
(:mod:`prism.haproxy.commands`), sends each through a
:class:`~prism.types.RuntimeTransport`, judges the reply
(:func:`~prism.haproxy.parsers.check_reply`) and parses it. It holds no
connection of its own, so one client may serve many tasks at once.

:class:`UnixSocketTransport` opens one connection per command: HAProxy's
admin socket answers one command and closes unless a ``prompt`` session is
kept open, and a fresh connection means one failed exchange cannot leave a
half-read reply behind for the next.

:class:`SessionTransport` keeps ``prompt`` sessions open on the *master* CLI
and sends each command as ``@1 <command>``, which the master hands to the
current worker. A command then costs one round trip instead of a connection
(0.15 ms against 0.5 ms idle here, 0.3 against 1.5 ms under load), and a
reload cannot leave a session talking to an old worker: a worker's own socket
is passed to its successor, so a session kept open there would stay with the
old, stopping worker (and keep it alive), while the master re-executes on
every reload and closes its sessions. In a session each reply is the reply a
one-shot connection gets, followed by the master's prompt. Commands that carry
a payload (``<<``) and commands sent while every session is busy go through a
one-shot connection to the worker's socket.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from contextlib import suppress
from types import TracebackType

from prism.errors import RuntimeAPIError, UnsafeArgument
from prism.haproxy import commands as cmd
from prism.haproxy.parsers import (
    LoadedCert,
    MapEntry,
    ServerConn,
    ServerState,
    StatRow,
    check_reply,
    parse_new_version,
    parse_servers_conn,
    parse_servers_state,
    parse_show_info,
    parse_show_map,
    parse_show_ssl_cert,
    parse_show_stat,
    parse_ssl_cert_files,
)
from prism.types import RuntimeTransport

__all__ = ["RuntimeClient", "SessionTransport", "UnixSocketTransport"]

_CHUNK = 65536


def _encode(text: str) -> bytes:
    try:
        return (text + "\n").encode("ascii")
    except UnicodeEncodeError:
        # the builders only produce ASCII; anything else was built by hand
        raise UnsafeArgument("Runtime API commands must be ASCII") from None


class UnixSocketTransport:
    """A :class:`~prism.types.RuntimeTransport` over HAProxy's unix stats socket.

    Each request connects, sends the text and a newline, half-closes (so
    HAProxy never waits for more input), reads until HAProxy closes, and
    disconnects. ``timeout`` bounds the whole exchange; a reply larger than
    ``max_reply`` bytes is refused rather than held in memory.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 5.0,
        max_reply: int = 64 * 1024 * 1024,
    ) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self.max_reply = max_reply

    def __repr__(self) -> str:
        return f"UnixSocketTransport({self.path!r}, timeout={self.timeout})"

    async def request(self, text: str) -> str:
        """Send one command and return HAProxy's whole reply."""
        data = _encode(text)
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(data)
        except TimeoutError as exc:
            raise RuntimeAPIError(
                f"HAProxy did not answer on {self.path} within {self.timeout:g}s",
                hint="is HAProxy running and its admin socket responsive?",
            ) from exc
        except OSError as exc:
            raise RuntimeAPIError(
                f"cannot talk to HAProxy on {self.path}: {exc.strerror or exc}",
                hint="check that HAProxy is running with this stats socket",
            ) from exc

    async def _exchange(self, data: bytes) -> str:
        reader, writer = await asyncio.open_unix_connection(self.path)
        try:
            writer.write(data)
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            reply = bytearray()
            while chunk := await reader.read(_CHUNK):
                reply += chunk
                if len(reply) > self.max_reply:
                    raise RuntimeAPIError(
                        f"HAProxy's reply on {self.path} exceeds {self.max_reply} bytes"
                    )
        finally:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()
        # map files may hold any bytes; never fail a read-out on decoding
        return reply.decode("utf-8", errors="replace")

    async def close(self) -> None:
        """Nothing to release: every request uses its own connection."""


class _Session:
    """One open ``prompt`` session on the master CLI."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.prompt = b""
        self.used = 0.0

    @classmethod
    async def open(cls, path: str) -> _Session:
        reader, writer = await asyncio.open_unix_connection(path)
        session = cls(reader, writer)
        try:
            writer.write(b"prompt\n")
            # The first answer is the prompt alone ("master> " in 2.8).
            session.prompt = await reader.readuntil(b"> ")
        except BaseException:
            session.close()
            raise
        return session

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    async def exchange(self, data: bytes, max_reply: int) -> bytes:
        self.writer.write(b"@1 " + data)
        end = b"\n" + self.prompt
        reply = bytearray()
        while not reply.endswith(end):
            chunk = await self.reader.read(_CHUNK)
            if not chunk:
                raise ConnectionResetError("the master closed the session")
            reply += chunk
            if len(reply) > max_reply:
                raise RuntimeAPIError(f"HAProxy's reply exceeds {max_reply} bytes")
        return bytes(reply[: len(reply) - len(self.prompt)])

    def close(self) -> None:
        self.writer.close()


class SessionTransport:
    """A :class:`~prism.types.RuntimeTransport` through kept-open master CLI sessions
    (module docstring), with one-shot connections to the worker's socket for the rest.

    At most ``sessions`` are open at once; one idle for ``idle`` seconds is closed
    before its next use (the master may have timed it out). A read-only command
    whose session turns out closed before any reply (a reload just now) is sent once
    more on a new session; any other failure drops the session and raises.
    """

    def __init__(
        self,
        master: str | os.PathLike[str],
        worker: str | os.PathLike[str],
        *,
        timeout: float = 5.0,
        max_reply: int = 64 * 1024 * 1024,
        sessions: int = 4,
        idle: float = 2.0,
    ) -> None:
        self.master = os.fspath(master)
        self.oneshot = UnixSocketTransport(worker, timeout=timeout, max_reply=max_reply)
        self.timeout = timeout
        self.max_reply = max_reply
        self.sessions = sessions
        self.idle = idle
        self._free: list[_Session] = []
        self._open = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"SessionTransport({self.master!r}, worker={self.oneshot.path!r})"

    async def request(self, text: str) -> str:
        """Send one command and return HAProxy's whole reply (as a one-shot gets it)."""
        if "\n" in text or self._closed or (not self._free and self._open >= self.sessions):
            return await self.oneshot.request(text)
        data = _encode(text)
        retry = text.startswith(("show ", "get "))
        while True:
            session = await self._take()
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await session.exchange(data, self.max_reply)
            except TimeoutError as exc:
                self._drop(session)
                raise RuntimeAPIError(
                    f"HAProxy did not answer on {self.master} within {self.timeout:g}s",
                    hint="is HAProxy running and its master socket responsive?",
                ) from exc
            except ConnectionError as exc:  # reset, broken pipe: the master closed it
                self._drop(session)
                if retry:
                    retry = False
                    continue
                raise RuntimeAPIError(
                    f"HAProxy's master closed the session on {self.master} ({exc.strerror or exc})",
                    hint="HAProxy reloaded or restarted meanwhile; the change may not"
                    " have been applied",
                ) from exc
            except OSError as exc:
                self._drop(session)
                raise RuntimeAPIError(
                    f"cannot talk to HAProxy on {self.master}: {exc.strerror or exc}",
                    hint="check that HAProxy is running with this master socket",
                ) from exc
            except BaseException:
                self._drop(session)  # cancelled mid-reply: nothing after it can trust it
                raise
            session.used = time.monotonic()
            if self._closed:
                self._drop(session)
            else:
                self._free.append(session)
            # map files may hold any bytes; never fail a read-out on decoding
            return reply.decode("utf-8", errors="replace")

    async def _take(self) -> _Session:
        now = time.monotonic()
        while self._free:
            session = self._free.pop()
            if session.usable and now - session.used < self.idle:
                return session
            self._drop(session)
        self._open += 1
        try:
            async with asyncio.timeout(self.timeout):
                return await _Session.open(self.master)
        except BaseException as exc:
            self._open -= 1
            if isinstance(exc, TimeoutError | OSError | asyncio.IncompleteReadError):
                raise RuntimeAPIError(
                    f"cannot open a session on HAProxy's master socket {self.master}: {exc}",
                    hint="check that HAProxy is running in master-worker mode",
                ) from exc
            raise

    def _drop(self, session: _Session) -> None:
        self._open -= 1
        session.close()

    async def close(self) -> None:
        """Close every session (a busy one as soon as its command ends); commands
        sent after this use one-shot connections."""
        self._closed = True
        while self._free:
            self._drop(self._free.pop())


class RuntimeClient:
    """Typed, validated access to the HAProxy Runtime API over a transport.

    Every argument is checked before anything is sent (a hostile value raises
    :class:`~prism.errors.UnsafeArgument` and the transport sees nothing);
    every refusal by HAProxy raises :class:`~prism.errors.RuntimeAPIError`.
    """

    def __init__(self, transport: RuntimeTransport) -> None:
        self.transport = transport

    async def __aenter__(self) -> RuntimeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the transport."""
        await self.transport.close()

    async def execute(self, command: cmd.Command) -> str:
        """Send ``command``, raise if HAProxy refused it, and return the raw reply."""
        reply = await self.transport.request(command.text)
        check_reply(command, reply)
        return reply

    # -- read-outs -------------------------------------------------------

    async def show_info(self) -> dict[str, str]:
        """``show info`` as a dict (``Name``, ``Version``, ``Pid``, ``Uptime_sec`` ...)."""
        return parse_show_info(await self.execute(cmd.show_info()))

    async def show_stat(self, *proxies: str) -> list[StatRow]:
        """The rows of ``show stat``: of every frontend, backend and server, or
        with ``proxies`` only of those, one filtered command each, sent at once. A
        proxy that HAProxy does not have contributes no rows, as it would to a full
        read."""
        if not proxies:
            return parse_show_stat(await self.execute(cmd.show_stat()))
        replies = await asyncio.gather(*(self._show_proxy(p) for p in dict.fromkeys(proxies)))
        return [row for rows in replies for row in rows]

    async def _show_proxy(self, proxy: str) -> list[StatRow]:
        try:
            reply = await self.execute(cmd.show_stat(proxy))
        except RuntimeAPIError as exc:
            if exc.detail.get("reply") == "No such proxy.":
                return []
            raise
        return parse_show_stat(reply)

    async def show_servers_state(self, backend: str | None = None) -> list[ServerState]:
        """``show servers state``, for one backend or all."""
        return parse_servers_state(await self.execute(cmd.show_servers_state(backend)))

    async def show_servers_conn(self, backend: str | None = None) -> list[ServerConn]:
        """``show servers conn``, for one backend or all."""
        return parse_servers_conn(await self.execute(cmd.show_servers_conn(backend)))

    async def show_map(self, path: str) -> list[MapEntry]:
        """The current (committed) entries of the map loaded from ``path``."""
        return parse_show_map(await self.execute(cmd.show_map(path)))

    # -- maps ------------------------------------------------------------

    async def set_map(self, path: str, key: str, value: str) -> None:
        """Change the value of an existing key (HAProxy refuses a missing key)."""
        await self.execute(cmd.set_map(path, key, value))

    async def add_map(self, path: str, key: str, value: str) -> None:
        """Append one entry; HAProxy does not check for an existing key."""
        await self.execute(cmd.add_map(path, key, value))

    async def del_map(self, path: str, key: str) -> None:
        """Remove every entry with ``key``."""
        await self.execute(cmd.del_map(path, key))

    async def clear_map(self, path: str) -> None:
        """Remove every entry. Not atomic with a refill: prefer :meth:`replace_map`."""
        await self.execute(cmd.clear_map(path))

    async def prepare_map(self, path: str) -> int:
        """Allocate a new, invisible version of a map and return its number."""
        return parse_new_version(await self.execute(cmd.prepare_map(path)))

    async def commit_map(self, path: str, version: int) -> None:
        """Make ``version`` the visible content of the map, atomically."""
        await self.execute(cmd.commit_map(path, version))

    async def replace_map(self, path: str, entries: Sequence[tuple[str, str]]) -> int:
        """Replace a map's whole content atomically; return the committed version.

        ``prepare map``, then the entries as ``add map @<ver>`` payloads (split
        to fit HAProxy's buffer), then ``commit map``. Requests see the old
        content until the commit and the new content after it, never a mix.
        Every entry is validated before the first command is sent. If a
        payload is refused the version is left uncommitted, which HAProxy
        discards at the next commit, and the map keeps its old content.
        """
        entries = list(entries)  # read twice below: a one-shot iterable would come back empty
        cmd.add_map_payloads(path, 0, entries)  # validate everything before sending anything
        version = await self.prepare_map(path)
        for payload in cmd.add_map_payloads(path, version, entries):
            await self.execute(payload)
        await self.commit_map(path, version)
        return version

    # -- servers ---------------------------------------------------------

    async def add_server(
        self,
        backend: str,
        server: str,
        address: str,
        port: int,
        *,
        check: bool = True,
        inter_ms: int = 1000,
        rise: int = 2,
        fall: int = 3,
        weight: int | None = None,
        tuning: cmd.ServerTuning | None = None,
    ) -> None:
        """Add a dynamic server; it starts in MAINT with its checks not yet running.

        Bring it in with :meth:`enable_health`, ``drain``, wait for status
        ``DRAIN``, then ``ready``: leaving MAINT directly shows ``UP 1/2``
        before any check has passed.
        """
        await self.execute(
            cmd.add_server(
                backend,
                server,
                address,
                port,
                check=check,
                inter_ms=inter_ms,
                rise=rise,
                fall=fall,
                weight=weight,
                tuning=tuning,
            )
        )

    async def set_server_state(self, backend: str, server: str, state: cmd.AdminState) -> None:
        """Set a server's administrative state: ``ready``, ``drain`` or ``maint``."""
        await self.execute(cmd.set_server_state(backend, server, state))

    async def enable_health(self, backend: str, server: str) -> None:
        """Start the health checks of a server (refused if it has no ``check``)."""
        await self.execute(cmd.enable_health(backend, server))

    async def del_server(self, backend: str, server: str) -> None:
        """Delete a server; it must be in MAINT with no connection left."""
        await self.execute(cmd.del_server(backend, server))

    async def set_server_weight(self, backend: str, server: str, weight: int) -> None:
        """Set a server's weight, 0..256."""
        await self.execute(cmd.set_server_weight(backend, server, weight))

    # -- certificates ----------------------------------------------------

    async def show_ssl_certs(self) -> list[str]:
        """The certificate files the running configuration loaded."""
        return parse_ssl_cert_files(await self.execute(cmd.show_ssl_cert()))

    async def show_ssl_cert(self, path: str) -> LoadedCert:
        """The certificate serving from ``path``: serial, dates, subject, fingerprint."""
        return parse_show_ssl_cert(await self.execute(cmd.show_ssl_cert(path)))

    async def replace_ssl_cert(self, path: str, pem: str) -> None:
        """Swap the certificate of ``path`` for ``pem`` without a reload.

        ``set ssl cert`` (a transaction) then ``commit ssl cert``; new
        handshakes see the new certificate at once, open connections keep
        theirs. The payload is validated before anything is sent; if the set
        or the commit is refused the transaction is aborted and the old
        certificate keeps serving.
        """
        payload = cmd.set_ssl_cert(path, pem)
        commit = cmd.commit_ssl_cert(path)
        try:
            await self.execute(payload)
            await self.execute(commit)
        except RuntimeAPIError:
            with suppress(RuntimeAPIError):
                await self.execute(cmd.abort_ssl_cert(path))
            raise
