"""Master CLI: reply parsers, error summaries and the half-close exchange."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from prism.errors import RuntimeAPIError
from prism.haproxy.master import (
    MasterClient,
    ProcInfo,
    parse_reload,
    parse_show_proc,
    summarize_errors,
    unix_exchange,
)

# Replies captured from HAProxy 2.8.25.
RELOAD_OK = (
    "Success=1\n--\n"
    "[NOTICE]   (4219) : New worker (4388) forked\n"
    "[NOTICE]   (4219) : Loading success.\n"
    "[WARNING]  (4219) : Former worker (4222) exited with code 0 (Exit)\n\n"
)
RELOAD_FAILED = (
    "Success=0\n--\n"
    "[NOTICE]   (4219) : haproxy version is 2.8.25-5cf5d0683\n"
    "[ALERT]    (4219) : config : parsing [haproxy.cfg:18] : unknown keyword 'bogus' in "
    "'backend' section\n"
    "[ALERT]    (4219) : config : Error(s) found in configuration file : haproxy.cfg\n"
    "[ALERT]    (4219) : config : Fatal errors found in configuration.\n"
    "[WARNING]  (4219) : Loading failure!\n\n"
)
HEADER = "#<PID>          <type>          <reloads>       <uptime>        <version>      \n"
SHOW_PROC = (
    HEADER + "4219            master          0 [failed: 0]   0d00h00m05s     2.8.25-5cf5d0683\n"
    "# workers\n"
    "4222            worker          0               0d00h00m05s     2.8.25-5cf5d0683\n"
    "# programs\n\n"
)
SHOW_PROC_DRAINING = (
    HEADER + "4219            master          10 [failed: 1]  0d00h00m35s     2.8.25-5cf5d0683\n"
    "# workers\n"
    "5071            worker          1               0d00h00m00s     2.8.25-5cf5d0683\n"
    "# old workers\n"
    "5064            worker          2               0d00h00m01s     2.8.25-5cf5d0683\n"
    "# programs\n\n"
)


def test_parse_reload_success() -> None:
    """Success=1 is a success and the startup log after '--' is kept."""
    result = parse_reload(RELOAD_OK)
    assert result.success
    assert result.output.startswith("[NOTICE]   (4219) : New worker (4388) forked")
    assert not result.output.endswith("\n")


def test_parse_reload_failure_keeps_errors() -> None:
    """Success=0 is a failure that carries HAProxy's alerts."""
    result = parse_reload(RELOAD_FAILED)
    assert not result.success
    assert "unknown keyword 'bogus'" in result.output


def test_parse_reload_without_log() -> None:
    """A bare 'Success=1' with no log still parses."""
    assert parse_reload("Success=1\n--\n\n").output == ""
    assert parse_reload("Success=1\n").success


def test_parse_reload_rejects_other_replies() -> None:
    """A reply without Success= (old HAProxy, wrong socket) raises RuntimeAPIError."""
    with pytest.raises(RuntimeAPIError, match="Unknown command"):
        parse_reload("Unknown command: 'reload', but maybe ...\n")


def test_parse_show_proc() -> None:
    """The master pid, reload counts and the current worker are read."""
    assert parse_show_proc(SHOW_PROC) == ProcInfo(
        master_pid=4219,
        reloads=0,
        failed_reloads=0,
        workers=(4222,),
        old_workers=(),
        version="2.8.25-5cf5d0683",
    )


def test_parse_show_proc_tells_current_from_old_workers() -> None:
    """Old workers still draining are listed apart, whatever their reload counts."""
    info = parse_show_proc(SHOW_PROC_DRAINING)
    assert info.master_pid == 4219
    assert (info.reloads, info.failed_reloads) == (10, 1)
    assert info.workers == (5071,)
    assert info.old_workers == (5064,)


def test_parse_show_proc_without_workers() -> None:
    """A master whose worker is not up yet has no workers."""
    text = HEADER + "77 master 0 [failed: 0] 0d00h00m00s 2.8.25\n# workers\n# programs\n"
    assert parse_show_proc(text).workers == ()


def test_parse_show_proc_rejects_other_replies() -> None:
    """A reply without a master row raises RuntimeAPIError."""
    with pytest.raises(RuntimeAPIError, match='unexpected reply to show proc: "Unknown command'):
        parse_show_proc("Unknown command: 'show', ...\n")
    with pytest.raises(RuntimeAPIError, match=r"unexpected reply to show proc: '\(empty\)'"):
        parse_show_proc("")


def test_summarize_errors_names_the_real_alerts() -> None:
    """The summary keeps specific alerts and drops prefixes and generic ones."""
    assert summarize_errors(RELOAD_FAILED) == (
        "config : parsing [haproxy.cfg:18] : unknown keyword 'bogus' in 'backend' section"
    )


def test_summarize_errors_without_alerts() -> None:
    """Without alerts the last lines stand in; no output says so."""
    assert summarize_errors("one\ntwo\n\n", limit=1) == "two"
    assert summarize_errors("") == "(no output)"


@pytest.fixture
async def fake_master(tmp_path: Path) -> AsyncIterator[tuple[Path, list[bytes]]]:
    """A unix socket server that, like the master, answers only after the half-close."""
    path = tmp_path / "m.sock"
    received: list[bytes] = []
    release = asyncio.Event()
    handlers: set[asyncio.Task[object]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        data = await reader.read(-1)  # returns only at EOF, i.e. after SHUT_WR
        received.append(data)
        if data == b"show proc\n":
            writer.write(SHOW_PROC.encode())
        elif data == b"reload\n":
            writer.write(RELOAD_FAILED.encode())
        elif data == b"hang\n":
            await release.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_unix_server(handle, path=str(path))
    try:
        yield path, received
    finally:
        release.set()
        server.close()
        await server.wait_closed()
        # Python 3.11's wait_closed does not wait for handlers; they own sockets.
        await asyncio.gather(*handlers, return_exceptions=True)


async def test_client_half_closes_and_reads_to_eof(
    fake_master: tuple[Path, list[bytes]],
) -> None:
    """Commands end with a newline and a half-close; the whole reply is parsed."""
    path, received = fake_master
    client = MasterClient(path)
    assert (await client.show_proc()).workers == (4222,)
    result = await client.reload()
    assert not result.success
    assert received == [b"show proc\n", b"reload\n"]
    await client.close()


async def test_exchange_times_out(fake_master: tuple[Path, list[bytes]]) -> None:
    """A socket that never answers raises RuntimeAPIError after the timeout."""
    path, _ = fake_master
    with pytest.raises(RuntimeAPIError, match="no reply"):
        await unix_exchange(path, "hang", timeout=0.2)


async def test_exchange_without_socket(tmp_path: Path) -> None:
    """A missing socket raises RuntimeAPIError chained to the OSError."""
    with pytest.raises(RuntimeAPIError, match=r"none\.sock: No such file or directory") as caught:
        await unix_exchange(tmp_path / "none.sock", "show proc", timeout=1)
    assert isinstance(caught.value.__cause__, OSError)
