"""Run one HAProxy in master-worker mode for a state directory, and keep it running.

Lifecycle::

    start() ── adopt the master named by the pidfile if its master socket answers,
       │       else check the config and spawn `haproxy -W -S <master.sock> ...`
       ▼
    running ── reload(): check, save server state, master `reload`, confirm new worker
       │    ── the monitor restarts the master from disk if it exits unexpectedly
       ▼
    stop() ─── SIGUSR1 (soft stop), then SIGTERM, then SIGKILL; remove the pidfile
    detach() ─ stop supervising but leave HAProxy serving (Prism restarts, adopts later)

HAProxy runs in its own session so a Ctrl-C in Prism's terminal reaches Prism
only; Prism then stops HAProxy in order. Its stdout/stderr (startup messages,
alerts) go to ``haproxy.log`` in the state directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType

from prism.errors import ConfigRejected, HAProxyError, PrismError, RuntimeAPIError
from prism.haproxy.binary import HAProxyBinary
from prism.haproxy.layout import HAProxyFiles
from prism.haproxy.master import (
    MasterClient,
    ProcInfo,
    ReloadResult,
    summarize_errors,
    unix_exchange,
)

__all__ = ["Supervisor", "check_config"]

logger = logging.getLogger("prism.haproxy")

_POLL = 0.05
_ADOPTED_POLL = 0.5
_PROBE_TIMEOUT = 2.0
_TERM_GRACE = 3.0
_KILL_GRACE = 5.0
_RESTART_BACKOFF = (0.5, 30.0)
# A master that dies sooner than this after (re)starting counts as a crash loop:
# the restart delay keeps growing instead of resetting.
_STABLE_AFTER = 10.0
_LOG_ROTATE_BYTES = 1024 * 1024
_LOG_TAIL_LINES = 20
# sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107


class Supervisor:
    """Starts, adopts, reloads, monitors and stops the HAProxy of one state directory.

    ``save_state`` is awaited before every reload (after the config check passed)
    so the caller can dump ``show servers state`` into the server-state file.
    Use it as ``async with Supervisor(...) as sup:`` or call ``start``/``stop``.
    """

    def __init__(
        self,
        paths: HAProxyFiles,
        binary: HAProxyBinary,
        *,
        save_state: Callable[[], Awaitable[None]] | None = None,
        stop_timeout: float = 10.0,
        start_timeout: float = 10.0,
        check_timeout: float = 60.0,
    ) -> None:
        self._paths = paths
        self._binary = binary
        self._save_state = save_state
        self._stop_timeout = stop_timeout
        self._start_timeout = start_timeout
        self._check_timeout = check_timeout
        self._master = MasterClient(paths.master_socket)
        self._proc: asyncio.subprocess.Process | None = None
        self._pid: int | None = None
        self._adopted = False
        self._stopping = False
        self._restarts = 0
        self._started_at = 0.0
        self._log_offset = 0
        # Serialises start, reload, restart and stop: each needs the process
        # to stay what it was when the operation began.
        self._lock = asyncio.Lock()
        self._monitor_task: asyncio.Task[None] | None = None

    # -- read-outs ---------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the HAProxy master, or None when none is supervised."""
        return self._pid

    @property
    def running(self) -> bool:
        """Whether the supervised master process is alive."""
        if self._pid is None:
            return False
        if self._proc is not None and self._proc.returncode is not None:
            return False
        return _pid_alive(self._pid)

    @property
    def adopted(self) -> bool:
        """True when the master was already running and this supervisor took it over."""
        return self._adopted

    @property
    def restarts(self) -> int:
        """How many times the monitor started HAProxy again after it died."""
        return self._restarts

    @property
    def log_path(self) -> Path:
        """Where HAProxy's stdout and stderr go."""
        return self._paths.root / "haproxy.log"

    @property
    def master(self) -> MasterClient:
        """The master CLI client for this state directory."""
        return self._master

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def check(self, config_path: Path) -> None:
        """Run ``haproxy -c`` on ``config_path``; raise ConfigRejected if it fails.

        Runs in the state directory, as HAProxy itself does, so relative paths
        in the config resolve the same way. Touches nothing else.
        """
        await check_config(
            self._binary, config_path, cwd=self._paths.root, timeout=self._check_timeout
        )

    async def start(self) -> None:
        """Adopt the running master of this state directory, or start a new one.

        Returns once HAProxy answers on its admin and master sockets; starts the
        monitor. Does nothing if this supervisor already runs HAProxy.
        """
        async with self._lock:
            if self.running:
                return
            self._stopping = False
            self._forget()
            if not await self._adopt():
                await self._spawn()
            self._start_monitor()

    async def reload(self) -> ReloadResult:
        """Check ``paths.config``, save server state, reload, and confirm a new worker.

        Raises ConfigRejected (the old worker keeps serving) when the check or
        the reload refuses the config, HAProxyError when HAProxy is not running
        or no new worker shows up.
        """
        async with self._lock:
            if not self.running:
                raise HAProxyError(
                    "HAProxy is not running; cannot reload",
                    hint="start it first; the monitor restarts it if it died",
                )
            await self.check(self._paths.config)
            if self._save_state is not None:
                await self._save_state()
            before = await self._master.show_proc()
            began = asyncio.get_running_loop().time()
            result = await self._master.reload()
            if not result.success:
                raise ConfigRejected(
                    f"HAProxy refused to reload {self._paths.config}: "
                    f"{summarize_errors(result.output)}",
                    hint="the previous configuration keeps serving",
                    detail={"config": str(self._paths.config), "output": result.output},
                )
            after = await self._confirm_new_worker(before)
            logger.info(
                "HAProxy reloaded in %.0f ms: workers %s (old: %s)",
                (asyncio.get_running_loop().time() - began) * 1000,
                list(after.workers),
                list(after.old_workers),
            )
            return result

    async def stop(self) -> None:
        """Stop HAProxy: soft stop, then SIGTERM, then SIGKILL; remove the pidfile.

        Waits until the master and its workers are gone. Never restarts after
        this; calling it again does nothing.
        """
        self._stopping = True
        async with self._lock:
            await self._cancel_monitor()
            pid = self._pid
            if pid is None:
                return
            await self._terminate(pid)
            self._forget()
            self._paths.pidfile.unlink(missing_ok=True)
            for sock in (self._paths.master_socket, self._paths.admin_socket):
                sock.unlink(missing_ok=True)
            logger.info("HAProxy master %d stopped", pid)

    async def detach(self) -> None:
        """Stop supervising but leave HAProxy serving; a later ``start`` adopts it."""
        self._stopping = True
        async with self._lock:
            await self._cancel_monitor()
            if self._pid is not None:
                logger.info("leaving HAProxy master %d running, unsupervised", self._pid)
            self._forget()

    async def run_monitor(self) -> None:
        """Restart the master from what is on disk whenever it exits unexpectedly.

        ``start`` runs this as a background task; it ends when ``stop`` or
        ``detach`` is called. Failed restarts are retried with a growing delay.
        """
        loop = asyncio.get_running_loop()
        delay = _RESTART_BACKOFF[0]
        while not self._stopping:
            await self._wait_for_exit()
            if self._stopping:
                return
            dead = self._pid
            if dead is not None and not self.running:
                logger.warning(
                    "HAProxy master %d exited unexpectedly (%s)", dead, self._exit_status()
                )
                # Forget it at once: a stop() during the delay below must not
                # signal a pid the kernel may already have handed to another process.
                self._forget()
            # A master that keeps dying right after it starts (or will not start)
            # is retried with a growing delay instead of in a tight loop.
            if loop.time() - self._started_at < _STABLE_AFTER:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RESTART_BACKOFF[1])
            else:
                delay = _RESTART_BACKOFF[0]
            async with self._lock:
                if self._stopping or self.running:
                    continue
                self._forget()
                try:
                    await self._spawn()
                except Exception as exc:
                    # Keep monitoring whatever went wrong; the next try comes later.
                    self._started_at = loop.time()
                    logger.error(
                        "starting HAProxy again failed: %s",
                        exc,
                        exc_info=not isinstance(exc, PrismError),
                    )
                else:
                    self._restarts += 1
                    logger.warning(
                        "HAProxy started again: master %s (restart %d)", self._pid, self._restarts
                    )

    # -- internals ---------------------------------------------------------

    async def _adopt(self) -> bool:
        """Take over a live master of this state directory; False if there is none."""
        recorded = _read_pid(self._paths.pidfile)
        try:
            info = await MasterClient(self._paths.master_socket, timeout=_PROBE_TIMEOUT).show_proc()
        except RuntimeAPIError:
            if recorded is not None and _pid_alive(recorded):
                logger.warning(
                    "pid %d from %s is alive but %s does not answer; starting a new HAProxy",
                    recorded,
                    self._paths.pidfile,
                    self._paths.master_socket,
                )
            return False
        if recorded is not None and recorded != info.master_pid:
            raise HAProxyError(
                f"an HAProxy master (pid {info.master_pid}) answers on "
                f"{self._paths.master_socket}, but {self._paths.pidfile} names pid {recorded}",
                hint=f"stop that HAProxy (kill -USR1 {info.master_pid}) or use another "
                "state directory",
            )
        if not _pid_alive(info.master_pid):
            # The socket answered for a pid we cannot see (another pid namespace).
            raise HAProxyError(
                f"an HAProxy master answers on {self._paths.master_socket} "
                f"but its pid {info.master_pid} is not visible here",
                hint="stop that HAProxy or use another state directory",
            )
        self._pid = info.master_pid
        self._adopted = True
        self._started_at = asyncio.get_running_loop().time()
        logger.info(
            "adopted running HAProxy master %d (workers %s)", info.master_pid, list(info.workers)
        )
        return True

    async def _spawn(self) -> None:
        paths = self._paths
        for sock in (paths.master_socket, paths.admin_socket):
            if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:
                raise HAProxyError(
                    f"socket path {sock} is longer than {_MAX_SOCKET_PATH} bytes",
                    hint="use a state directory with a shorter path",
                )
        await self.check(paths.config)
        # Nothing answers on these (adoption failed): they are leftovers of a
        # master that died without cleaning up.
        for stale in (paths.master_socket, paths.admin_socket, paths.pidfile):
            stale.unlink(missing_ok=True)
        self._open_log_offset()
        began = asyncio.get_running_loop().time()
        with self.log_path.open("ab") as log, _exec_errors(self._binary.path):
            proc = await asyncio.create_subprocess_exec(
                str(self._binary.path),
                "-W",
                "-S",
                f"{paths.master_socket},mode,600",
                "-f",
                str(paths.config),
                "-p",
                str(paths.pidfile),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=paths.root,
                # Own session: a terminal Ctrl-C goes to Prism, which stops
                # HAProxy in order, instead of killing both at once.
                start_new_session=True,
            )
        try:
            await self._wait_ready(proc)
        except BaseException:
            await _kill_child(proc)
            raise
        self._proc = proc
        self._pid = proc.pid
        self._adopted = False
        self._started_at = asyncio.get_running_loop().time()
        logger.info(
            "started HAProxy %s: master %d, ready in %.0f ms",
            self._binary.version,
            proc.pid,
            (self._started_at - began) * 1000,
        )

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        last_error = "no answer yet"
        while True:
            if proc.returncode is not None:
                raise self._start_failed(f"HAProxy exited with code {proc.returncode}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._start_failed(
                    f"HAProxy did not answer within {self._start_timeout:g} s ({last_error})"
                )
            probe = min(_PROBE_TIMEOUT, remaining)
            try:
                info = await unix_exchange(self._paths.admin_socket, "show info", timeout=probe)
                procs = await MasterClient(self._paths.master_socket, timeout=probe).show_proc()
            except RuntimeAPIError as exc:
                last_error = exc.message
            else:
                if "Name: HAProxy" in info and procs.master_pid == proc.pid and procs.workers:
                    return
                last_error = "sockets answered before the worker was up"
            await asyncio.sleep(_POLL)

    def _start_failed(self, what: str) -> HAProxyError:
        tail = self._log_tail()
        return HAProxyError(
            f"{what}; last log lines:\n{tail}" if tail else what,
            hint=f"see {self.log_path}",
            detail={"log": tail},
        )

    async def _confirm_new_worker(self, before: ProcInfo) -> ProcInfo:
        known = set(before.workers) | set(before.old_workers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while True:
            after = await self._master.show_proc()
            if set(after.workers) - known:
                return after
            if loop.time() >= deadline:
                raise HAProxyError(
                    "HAProxy reported a successful reload but no new worker appeared",
                    hint=f"see {self.log_path}",
                    detail={"before": list(before.workers), "after": list(after.workers)},
                )
            await asyncio.sleep(_POLL)

    async def _terminate(self, pid: int) -> None:
        # Remember the workers: after a SIGKILL of the master they are no longer
        # its children, and must be waited for (or killed) by pid.
        try:
            info = await MasterClient(self._paths.master_socket, timeout=1.0).show_proc()
            workers = info.workers + info.old_workers
        except RuntimeAPIError:
            workers = ()
        steps = (
            (signal.SIGUSR1, self._stop_timeout),
            (signal.SIGTERM, _TERM_GRACE),
            (signal.SIGKILL, _KILL_GRACE),
        )
        for signum, grace in steps:
            if not _send(pid, signum):
                break
            if await self._wait_gone(pid, grace):
                break
            logger.warning(
                "HAProxy master %d still running %.1f s after %s", pid, grace, signum.name
            )
        for worker in workers:
            if not await self._wait_gone(worker, _TERM_GRACE):
                logger.warning("HAProxy worker %d outlived its master; killing it", worker)
                _send(worker, signal.SIGKILL)
                await self._wait_gone(worker, _KILL_GRACE)

    async def _wait_gone(self, pid: int, grace: float) -> bool:
        proc = self._proc
        if proc is not None and proc.pid == pid:
            # Our child: wait() also reaps it.
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                return False
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while _pid_alive(pid):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL)
        return True

    async def _wait_for_exit(self) -> None:
        proc, pid = self._proc, self._pid
        if pid is None:
            return
        if proc is not None:
            await proc.wait()
            return
        # Not our child: no wait() and no exit event to await, so poll.
        while _pid_alive(pid):  # noqa: ASYNC110
            await asyncio.sleep(_ADOPTED_POLL)

    def _exit_status(self) -> str:
        if self._proc is not None and self._proc.returncode is not None:
            code = self._proc.returncode
            return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return "not our child; exit status unknown"

    def _start_monitor(self) -> None:
        if self._monitor_task is None or self._monitor_task.done():
            self._monitor_task = asyncio.create_task(
                self.run_monitor(), name="prism-haproxy-monitor"
            )

    async def _cancel_monitor(self) -> None:
        task, self._monitor_task = self._monitor_task, None
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _forget(self) -> None:
        self._proc = None
        self._pid = None
        self._adopted = False

    def _open_log_offset(self) -> None:
        log = self.log_path
        try:
            size = log.stat().st_size
        except FileNotFoundError:
            size = 0
        if size > _LOG_ROTATE_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))
            size = 0
        self._log_offset = size

    def _log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                data = log.read(64 * 1024)
        except OSError:
            return ""
        lines = data.decode("utf-8", errors="replace").strip().splitlines()
        return "\n".join(lines[-_LOG_TAIL_LINES:])


# A bound parameter rather than asyncio.timeout() around the call: the check owns a child
# process that must be killed when time runs out.
async def check_config(
    binary: HAProxyBinary,
    config_path: Path,
    *,
    cwd: Path,
    timeout: float = 60.0,  # noqa: ASYNC109
) -> None:
    """Run ``haproxy -c`` on ``config_path``; raise ConfigRejected if it fails.

    Runs in the state directory, as HAProxy itself does, so relative paths
    in the config resolve the same way. Touches nothing else.
    """
    # Not "-q": with -q HAProxy 2.8 prints nothing at all, not even the errors.
    with _exec_errors(binary.path):
        proc = await asyncio.create_subprocess_exec(
            str(binary.path),
            "-c",
            "-f",
            str(config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
        )
    try:
        async with asyncio.timeout(timeout):
            raw, _ = await proc.communicate()
    except TimeoutError as exc:
        await _kill_child(proc)
        raise HAProxyError(
            f"haproxy -c on {config_path} did not finish within {timeout:g} s",
            hint="nothing was changed; the previous configuration keeps serving",
        ) from exc
    except BaseException:
        await _kill_child(proc)
        raise
    output = raw.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        raise ConfigRejected(
            f"HAProxy rejected {config_path}: {summarize_errors(output)}",
            hint="nothing was changed; the previous configuration keeps serving",
            detail={"config": str(config_path), "output": output},
        )


@contextlib.contextmanager
def _exec_errors(binary: Path) -> Iterator[None]:
    """Translate a failure to start the binary into HAProxyError."""
    try:
        yield
    except OSError as exc:
        raise HAProxyError(
            f"cannot run {binary}: {exc.strerror or exc}",
            hint="is the HAProxy binary still installed and executable?",
        ) from exc


async def _kill_child(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL a child we started and reap it; used when starting it failed."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        # Shielded: this runs while the caller is being cancelled, and an
        # unreaped HAProxy would keep its ports.
        await asyncio.shield(proc.wait())


def _send(pid: int, signum: signal.Signals) -> bool:
    """Send a signal; False if the process is already gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _read_pid(pidfile: Path) -> int | None:
    try:
        first = pidfile.read_text().split()
    except OSError:
        return None
    return int(first[0]) if first and first[0].isdigit() else None


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        # No procfs (not Linux): os.kill is all we can know. On Linux the
        # process vanished between the two calls.
        return sys.platform != "linux"
    # The state follows the parenthesised command name, which may hold spaces.
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] not in ("Z", "X")
