"""Start and always stop the real processes integration tests need.

Every process is started in a session of its own and stopped by its own PID
(SIGTERM, wait, SIGKILL, wait), never by name, so a test can never hit a
process it did not start::

    with backends([BackendSpec("blue", "v1"), BackendSpec("green", "v2")]) as (blue, green):
        report = await run_load("127.0.0.1", blue.port, total=100)
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, NamedTuple

from prism.errors import PrismError

__all__ = [
    "Backend",
    "BackendSpec",
    "ManagedProcess",
    "backends",
    "free_port",
    "start_backend",
    "with_open_files_limit",
]

log = logging.getLogger(__name__)

READY_TIMEOUT = 10.0  # seconds a backend gets to print its ready line


# python -c <set the limit, then exec argv[3] with argv[3:]> SOFT HARD <command...>
_SET_NOFILE = (
    "import os, resource, sys; "
    "soft, hard = int(sys.argv[1]), int(sys.argv[2]); "
    "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1] if hard < 0 else hard; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def with_open_files_limit(args: Sequence[str], soft: int, hard: int | None = None) -> list[str]:
    """``args`` run with ``RLIMIT_NOFILE`` set to ``soft`` (and ``hard``, else kept).

    A short Python shim sets the limit and execs ``args[0]`` in place, so the PID
    a :class:`ManagedProcess` started is the command's own. ``args[0]`` must be
    a path (``sys.executable``, a script), not a name to look up.
    """
    shim = [sys.executable, "-c", _SET_NOFILE, str(soft), str(-1 if hard is None else hard)]
    return [*shim, *args]


# Local fleets put their nodes on 127.0.0.2 and up: a port the OS picks on
# 127.0.0.1 may be bound on one of those by another test running beside this one.
_NODE_ADDRESSES = tuple(f"127.0.0.{n}" for n in range(2, 23))


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (the OS picked it) and on
    every address a local fleet's nodes use."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if all(_bindable(address, port) for address in _NODE_ADDRESSES):
            return port
    raise RuntimeError("no TCP port is free on every loopback address a fleet uses")


def _bindable(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
        return True


class ManagedProcess:
    """A child process that is stopped by its own PID, exactly once.

    stderr (and stdout, unless ``pipe_stdout`` asks for a pipe to read a
    readiness line from) goes to an anonymous temp file: a chatty child can never
    block on a full pipe, and its output is still there to explain a failure.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        pipe_stdout: bool = False,
    ) -> None:
        self.name = name or os.path.basename(args[0])
        # Closed in _release(), which every exit path reaches.
        self._stderr: IO[bytes] = tempfile.TemporaryFile(prefix="prism-proc-")  # noqa: SIM115
        try:
            self._popen = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout else self._stderr,
                stderr=self._stderr,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                # Own session: a Ctrl-C aimed at pytest does not reach the child
                # before the fixture stops it in order.
                start_new_session=True,
            )
        except BaseException:
            self._stderr.close()
            raise
        self._closed = False
        self._stderr_tail = ""
        log.info("started %s (pid %d): %s", self.name, self._popen.pid, " ".join(args))

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._popen.pid

    @property
    def alive(self) -> bool:
        """True while the child has not exited."""
        return self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited (negative: killed by that signal)."""
        return self._popen.poll()

    @property
    def stdout(self) -> IO[bytes]:
        """The read end of the child's stdout pipe (only with ``pipe_stdout=True``)."""
        if self._popen.stdout is None:
            raise ValueError(f"{self.name} was started without pipe_stdout=True")
        return self._popen.stdout

    def stderr_text(self, limit: int = 8192) -> str:
        """The last ``limit`` characters of the child's output, kept after exit.

        That is stderr, plus stdout when it is not piped.
        """
        if self._stderr.closed:
            return self._stderr_tail[-limit:]
        # pread, not seek+read: the child shares this file's offset, and moving
        # it would make the child overwrite what it wrote before.
        fd = self._stderr.fileno()
        size = os.fstat(fd).st_size
        start = max(size - 4 * limit, 0)  # utf-8 needs at most 4 bytes a character
        return os.pread(fd, size - start, start).decode(errors="replace")[-limit:]

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL and wait; safe to repeat.

        Returns the exit status (negative for a signal), None only if even
        SIGKILL did not end it within ``timeout``.
        """
        if self._popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM; killing", self.name, self.pid)
                self._signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._popen.wait(timeout)
        self._release()
        return self._popen.returncode

    def kill9(self, timeout: float = 5.0) -> None:
        """SIGKILL the child (a crash, as far as its peers can tell) and reap it."""
        if self._popen.poll() is None:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout)
        self._release()

    def _signal(self, sig: signal.Signals) -> None:
        # Popen.send_signal targets this PID only, and skips a child that has
        # already been reaped, so the PID can never belong to someone else.
        log.info("sending %s to %s (pid %d)", sig.name, self.name, self.pid)
        self._popen.send_signal(sig)

    def _release(self) -> None:
        if self._closed or self._popen.returncode is None:
            return
        self._closed = True
        if self._popen.stdout is not None:
            self._popen.stdout.close()
        # Keep the end of stderr for post-mortems, but hold no file open: a
        # file left to the garbage collector is a ResourceWarning in tests.
        self._stderr_tail = self.stderr_text(64 * 1024)
        self._stderr.close()
        log.info("%s (pid %d) exited with %s", self.name, self.pid, self._popen.returncode)

    def close(self) -> None:
        """Same as :meth:`stop` with the default timeout (for ``contextlib.closing``)."""
        self.stop()

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited {self.returncode}"
        return f"<ManagedProcess {self.name} pid={self.pid} {state}>"


class BackendSpec(NamedTuple):
    """What to start: a demo backend of one color and version."""

    color: str
    version: str
    name: str = "s1"
    port: int | None = None


@dataclass(eq=False)
class Backend:
    """A running demo backend (:mod:`prism.demo.backend`) and where it listens."""

    process: ManagedProcess
    host: str
    port: int
    color: str
    version: str
    name: str

    @property
    def pid(self) -> int:
        """The backend's process id."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        """True while the backend process runs."""
        return self.process.alive

    @property
    def address(self) -> str:
        """``host:port``, as HAProxy's server lines want it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL, for httpx and friends."""
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop gracefully (SIGTERM, then SIGKILL); see :meth:`ManagedProcess.stop`."""
        return self.process.stop(timeout)

    def kill9(self) -> None:
        """Crash it: SIGKILL, no goodbye to open connections."""
        self.process.kill9()

    def close(self) -> None:
        """Same as :meth:`stop`."""
        self.process.stop()


def _spawn_backend(spec: BackendSpec, python: str, host: str) -> ManagedProcess:
    # Port 0 lets the backend bind a free port itself and report it in its
    # ready line, which avoids the race between free_port() and bind().
    args = [
        python,
        "-m",
        "prism.demo.backend",
        "--host",
        host,
        "--port",
        str(spec.port if spec.port is not None else 0),
        "--color",
        spec.color,
        "--version",
        spec.version,
        "--name",
        spec.name,
    ]
    return ManagedProcess(args, name=f"backend-{spec.color}-{spec.name}", pipe_stdout=True)


def _await_ready(proc: ManagedProcess, timeout: float) -> int:
    """Wait for ``ready <port>`` on the child's stdout; return the port."""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _start_failed(proc, f"no ready line within {timeout:.0f}s")
            if not sel.select(left):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                proc.stop(1.0)  # reap it so the exit status is known
                raise _start_failed(proc, "exited before it was ready")
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode(errors="replace").strip()
    word, _, port = line.partition(" ")
    if word != "ready" or not port.isdigit():
        raise _start_failed(proc, f"unexpected first line {line!r}")
    return int(port)


def _start_failed(proc: ManagedProcess, why: str) -> PrismError:
    proc.stop(1.0)
    stderr = proc.stderr_text()
    return PrismError(
        f"{proc.name} (pid {proc.pid}) failed to start: {why}",
        hint=stderr.strip().splitlines()[-1] if stderr.strip() else "it wrote nothing to stderr",
        detail={"stderr": stderr, "returncode": proc.returncode},
    )


def start_backend(
    color: str,
    version: str,
    port: int | None = None,
    name: str = "s1",
    python: str = sys.executable,
    *,
    host: str = "127.0.0.1",
    ready_timeout: float = READY_TIMEOUT,
) -> Backend:
    """Start one demo backend and wait (bounded) until it listens.

    ``port`` None lets the backend pick a free one. Raises PrismError carrying
    the child's stderr if it exits or stays silent for ``ready_timeout`` seconds;
    the child is stopped in that case. The caller must ``close()`` the result.
    """
    spec = BackendSpec(color, version, name, port)
    proc = _spawn_backend(spec, python, host)
    try:
        bound = _await_ready(proc, ready_timeout)
    except BaseException:
        proc.close()
        raise
    return Backend(proc, host, bound, color, version, name)


@contextlib.contextmanager
def backends(
    specs: Iterable[BackendSpec],
    *,
    python: str = sys.executable,
    host: str = "127.0.0.1",
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[list[Backend]]:
    """Start several backends in parallel; stop every one on exit, whatever happens."""
    started: list[tuple[BackendSpec, ManagedProcess]] = []
    try:
        # Spawn all first, then wait: interpreter start-up overlaps.
        for spec in specs:
            started.append((spec, _spawn_backend(spec, python, host)))
        running = [
            Backend(
                proc, host, _await_ready(proc, ready_timeout), spec.color, spec.version, spec.name
            )
            for spec, proc in started
        ]
        yield running
    finally:
        for _, proc in started:
            proc.close()
