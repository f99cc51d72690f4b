"""Shared setup for the benchmarks: processes, sockets, load tools, statistics.

Every process a benchmark starts is a :class:`~prism.testing.processes.ManagedProcess`
(its own session, stopped by its own PID in a ``finally``), never found or
killed by name. Ports are picked at run time, files live in temp dirs, and
all traffic goes to 127.0.0.1 with a bound on count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.manual_bluegreen import admin_command, csv_rows
from prism.haproxy.binary import find_haproxy
from prism.testing.processes import ManagedProcess, free_port, with_open_files_limit

__all__ = [
    "BenchContext",
    "HAProxy",
    "HeyResult",
    "PrismServer",
    "Section",
    "WrkResult",
    "admin_command",
    "csv_rows",
    "fetch_colors",
    "free_port",
    "machine_info",
    "master_command",
    "pct",
    "ratio",
    "rss_kib",
    "run_haproxy",
    "run_hey",
    "run_prism",
    "run_wrk",
    "start_hey",
    "table",
    "temp_dir",
]

N = TypeVar("N", int, float)

# -- results -------------------------------------------------------------------


@dataclass
class Section:
    """One benchmark's report: a title, the command that reproduces it, Markdown."""

    name: str
    title: str
    body: str
    seconds: float = 0.0

    @property
    def command(self) -> str:
        return f"python -m bench --only {self.name}"

    def markdown(self) -> str:
        return (
            f"## {self.title}\n\n"
            f"Reproduce: `{self.command}` (add `--quick` for the smoke-sized run). "
            f"This section took {self.seconds:.0f} s.\n\n{self.body.strip()}\n"
        )


@dataclass
class BenchContext:
    """What every benchmark gets: sizes, the HAProxy binary, a temp root, a logger."""

    quick: bool
    haproxy: Path
    haproxy_version: str
    tmp: Path
    log: Callable[[str], None] = field(default=lambda text: print(text, file=sys.stderr))

    def size(self, full: N, quick: N) -> N:
        """``full`` normally, ``quick`` with ``--quick``."""
        return quick if self.quick else full


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``12.3x``; a dash when it cannot be computed."""
    if not b or b != b or a != a:
        return "-"
    value = a / b
    return f"{value:.3g}x" if value < 100 else f"{value:.0f}x"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# -- machine -------------------------------------------------------------------


def machine_info(haproxy: Path, haproxy_version: str) -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = match.group(1).strip() if match else cpu
    mem = "unknown"
    with contextlib.suppress(OSError):
        match = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        mem = f"{int(match.group(1)) / 1024 / 1024:.1f} GiB" if match else mem
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        match = re.search(r'^PRETTY_NAME="(.+)"', Path("/etc/os-release").read_text(), re.M)
        os_name = f"{match.group(1)}, Linux {platform.release()}" if match else os_name
    return {
        "CPU": cpu,
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "Memory": mem,
        "OS": os_name,
        "Python": platform.python_version(),
        "HAProxy": f"{haproxy_version} ({haproxy})",
        "hey": _dpkg_version("hey"),
        "wrk": _dpkg_version("wrk"),
        "Prism": _git_describe(),
        "open files (ulimit -n)": str(_nofile()),
    }


def _dpkg_version(package: str) -> str:
    path = shutil.which(package)
    if path is None:
        return "not installed"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if out.returncode == 0 and out.stdout:
            return f"{out.stdout.strip()} (Debian package, {path})"
    return path


def _git_describe() -> str:
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        if head:
            return f"git {head}" + (" + uncommitted changes" if dirty else "")
    return "unknown"


def _nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def haproxy_binary() -> tuple[Path, str]:
    """The binary Prism itself would run, and its version."""
    binary = find_haproxy(None)
    return binary.path, binary.version


def rss_kib(pid: int) -> int:
    """Resident set size of one process, in KiB (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s*(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (HAProxy's workers under its master)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


@contextlib.contextmanager
def temp_dir(root: Path, prefix: str) -> Iterator[Path]:
    """A fresh directory under ``root``, removed afterwards (short: it holds unix sockets)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- HAProxy runtime and master sockets ------------------------------------------


def master_command(sock: Path | str, command: str, timeout: float = 120.0) -> str:
    """A master CLI command (``reload`` answers once the new worker is up).

    The master re-executes itself on a reload and listens again only when it is
    back, so a command sent right after one may be refused: retry for 10 s.
    """
    deadline = time.monotonic() + 10
    while True:
        try:
            return admin_command(sock, command, timeout)
        except (ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_old_workers_gone(sock: Path | str, timeout: float = 90.0) -> float:
    """Wait until ``show proc`` on the master lists no old worker (one that a reload
    replaced, still closing); returns the seconds waited. At 15,000 servers an old
    worker takes seconds to let go, and measuring meanwhile measures its CPU."""
    began = time.monotonic()
    while True:
        text = master_command(sock, "show proc")
        old = text.split("# old workers", 1)[1].split("#", 1)[0] if "# old workers" in text else ""
        if not old.strip() or time.monotonic() - began > timeout:
            return time.monotonic() - began
        time.sleep(0.2)


@dataclass
class HAProxy:
    """A hand-written HAProxy in master-worker mode, started by a benchmark."""

    process: ManagedProcess
    root: Path

    @property
    def admin(self) -> Path:
        return self.root / "admin.sock"

    @property
    def master(self) -> Path:
        return self.root / "master.sock"

    @property
    def config(self) -> Path:
        return self.root / "haproxy.cfg"

    def cmd(self, command: str) -> str:
        return admin_command(self.admin, command)

    def reload(self) -> str:
        reply = master_command(self.master, "reload")
        if not reply.startswith("Success=1"):
            raise RuntimeError(f"reload refused: {reply[:500]}")
        return reply

    def pids(self) -> list[int]:
        return [self.process.pid, *children_of(self.process.pid)]


def haproxy_globals(root: Path, *, nbthread: int | None = None) -> str:
    """The global + defaults sections every hand-written config shares."""
    from prism.haproxy.render import RenderSettings, derive_maxconn

    defaults = RenderSettings(admin_port=1, maxconn=derive_maxconn(_nofile()), smoke_key="x" * 16)
    threads = f"    nbthread {nbthread}\n" if nbthread else ""
    return (
        "global\n"
        f"    stats socket {root}/admin.sock mode 600 level admin\n"
        f"    maxconn {defaults.maxconn}\n"
        f"    hard-stop-after {defaults.hard_stop_after}\n"
        f"{threads}"
        "defaults\n"
        "    mode http\n"
        "    option dontlognull\n"
        f"    timeout connect {defaults.timeout_connect}\n"
        f"    timeout client {defaults.timeout_client}\n"
        f"    timeout server {defaults.timeout_server}\n"
        f"    timeout http-request {defaults.timeout_http_request}\n"
        f"    timeout http-keep-alive {defaults.timeout_http_keep_alive}\n"
        f"    timeout queue {defaults.timeout_queue}\n"
    )


def haproxy_check(ctx: BenchContext, config: Path) -> None:
    """``haproxy -c`` on ``config`` (run in its directory); raises with HAProxy's words."""
    done = subprocess.run(
        [str(ctx.haproxy), "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=config.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"haproxy -c refused {config}:\n{done.stdout[-2000:]}{done.stderr}")


@contextlib.contextmanager
def run_haproxy(ctx: BenchContext, root: Path, config: str) -> Iterator[HAProxy]:
    """Start ``haproxy -W -S`` on ``config`` in ``root``; stop it by PID on exit."""
    cfg = root / "haproxy.cfg"
    cfg.write_text(config)
    haproxy_check(ctx, cfg)
    process = ManagedProcess(
        [
            str(ctx.haproxy),
            "-W",
            "-S",
            f"{root}/master.sock,mode,600",
            "-f",
            str(cfg),
            "-p",
            str(root / "haproxy.pid"),
        ],
        name="haproxy-bench",
        cwd=root,
    )
    try:
        haproxy = HAProxy(process, root)
        deadline = time.monotonic() + 30
        while True:
            if not process.alive:
                raise RuntimeError(f"haproxy exited:\n{process.stderr_text()}")
            with contextlib.suppress(OSError):
                if "Pid" in haproxy.cmd("show info"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not come up:\n{process.stderr_text()}")
            time.sleep(0.02)
        yield haproxy
    finally:
        process.stop(timeout=10)
        process.close()


def wait_servers_up(
    haproxy: HAProxy, backends: Sequence[str], timeout: float = 30.0, *, checked: bool = True
) -> None:
    """Until every server of ``backends`` is exactly UP (with a passed check)."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        rows = [
            r
            for r in csv_rows(haproxy.cmd("show stat"))
            if r.get("pxname") in backends and r.get("svname") not in ("FRONTEND", "BACKEND")
        ]
        if rows and all(
            r.get("status") == "UP"
            and (not checked or r.get("check_status", "").removeprefix("* ") in ("L7OK", "L4OK"))
            for r in rows
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"servers not UP in time: {[(r['svname'], r['status']) for r in rows]}")


# -- prism serve -----------------------------------------------------------------


@dataclass
class PrismServer:
    """A running ``prism serve`` and how to talk to it."""

    process: ManagedProcess
    state_dir: Path
    url: str
    token: str
    http: httpx.Client

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 600) -> Any:
        """Call the API; raise with the problem text unless it answered 2xx."""
        reply = self.http.request(method, f"/api/v1{path}", json=body, timeout=timeout)
        if not reply.is_success:
            raise ApiError(reply.status_code, reply.text)
        return reply.json()

    def cli_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PRISM_URL": self.url,
            "PRISM_TOKEN": self.token,
            "PRISM_STATE_DIR": str(self.state_dir),
        }

    @property
    def haproxy_pid(self) -> int | None:
        try:
            return int((self.state_dir / "haproxy.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def admin(self) -> Path:
        return self.state_dir / "admin.sock"

    @property
    def master(self) -> Path:
        return self.state_dir / "master.sock"

    def wait_up(self, app: str, colors: Sequence[str] | None = None, timeout: float = 60) -> None:
        """Until every server of the app's colors is exactly UP after a passed check."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.api("GET", f"/apps/{app}")
            servers = [
                s
                for c in status["colors"]
                if colors is None or c["name"] in colors
                for s in c["servers"]
            ]
            if servers and all(
                s["status"] == "UP" and s["check"].removeprefix("* ") in ("L7OK", "L4OK")
                for s in servers
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{app}: servers not UP in time: {str(status)[:1000]}")


class ApiError(RuntimeError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:500]}")
        self.status = status
        self.text = text


def prism_command() -> list[str]:
    """How a user runs the CLI: the ``prism`` script next to this interpreter."""
    script = Path(sys.executable).parent / "prism"
    return [str(script)] if script.exists() else [sys.executable, "-m", "prism"]


@contextlib.contextmanager
def run_prism(
    ctx: BenchContext,
    state_dir: Path,
    *,
    nofile: int | None = None,
    prism: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[PrismServer]:
    """``prism serve`` on free ports; it and its HAProxy are stopped by PID on exit.

    ``nofile`` sets its soft open-files limit (``ulimit -Sn``), from which Prism
    derives HAProxy's ``maxconn``; the process keeps its PID (exec). ``prism``
    replaces the command that runs Prism's command line, ``env`` its environment.
    """
    port, admin_port = free_port(), free_port()
    command = [
        *(prism if prism is not None else prism_command()),
        "--state-dir",
        str(state_dir),
        "serve",
        "--port",
        str(port),
        "--admin-port",
        str(admin_port),
        "--haproxy",
        str(ctx.haproxy),
        "--stop-haproxy",
        # benchmarks measure how many changes a second Prism can make: no rate limit
        "--rate-limit",
        "off",
    ]
    if nofile is not None:
        command = with_open_files_limit(command, nofile)
    process = ManagedProcess(command, name="prism-serve", env=env)
    haproxy_pid: int | None = None
    http: httpx.Client | None = None
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if not process.alive:
                raise RuntimeError(f"prism serve exited:\n{process.stderr_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"prism serve did not answer:\n{process.stderr_text()}")
            time.sleep(0.05)
        token = (state_dir / "token").read_text().strip()
        http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, trust_env=False
        )
        server = PrismServer(process, state_dir, url, token, http)
        haproxy_pid = server.haproxy_pid
        yield server
    finally:
        if http is not None:
            http.close()
        with contextlib.suppress(OSError, ValueError, IndexError):
            haproxy_pid = int((state_dir / "haproxy.pid").read_text().split()[0])
        process.stop(timeout=20)
        process.close()
        # Safety net: --stop-haproxy stops it, but never leave one behind.
        if haproxy_pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(haproxy_pid, signal.SIGKILL)


def static_backend_config(root: Path, port: int) -> str:
    """An HAProxy that answers every request from memory: a backend that is never the
    bottleneck, so a comparison measures the proxy in front of it."""
    return haproxy_globals(root) + (
        "frontend static\n"
        f"    bind 127.0.0.1:{port}\n"
        '    http-request return status 200 content-type text/plain string "ok\\n"'
        " hdr X-Backend-Color static\n"
    )


# -- load tools ------------------------------------------------------------------


@dataclass
class HeyResult:
    total: int
    rps: float
    statuses: dict[int, int]
    errors: dict[str, int]
    output: str

    @property
    def non_2xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300) + sum(
            self.errors.values()
        )


def parse_hey(output: str) -> HeyResult:
    statuses = {
        int(code): int(count)
        for code, count in re.findall(r"^\s*\[(\d{3})\]\s+(\d+) responses", output, re.M)
    }
    errors: dict[str, int] = {}
    if "Error distribution:" in output:
        for count, text in re.findall(
            r"^\s*\[(\d+)\]\s+(.+)$", output.split("Error distribution:", 1)[1], re.M
        ):
            # One line per distinct error; strip the per-connection port so they group.
            key = re.sub(r"127\.0\.0\.1:\d+->127\.0\.0\.1:\d+", "127.0.0.1:*", text.strip())
            errors[key] = errors.get(key, 0) + int(count)
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    rps = float(match.group(1)) if match else 0.0
    total = sum(statuses.values()) + sum(errors.values())
    return HeyResult(total, rps, statuses, errors, output)


@contextlib.contextmanager
def start_hey(
    url: str,
    *,
    concurrency: int,
    max_seconds: float,
    headers: Mapping[str, str] | None = None,
    keepalive: bool = True,
) -> Iterator[Callable[[], HeyResult]]:
    """Run ``hey -z max_seconds`` in the background; the yielded function stops it
    (SIGINT, which makes hey print its report) and returns the parsed report.
    Without ``keepalive`` every request opens its own connection (a TLS handshake each)."""
    if not url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
        raise ValueError("load goes to 127.0.0.1 only")
    args = ["hey", "-z", f"{max_seconds:g}s", "-c", str(concurrency)]
    if not keepalive:
        args.append("-disable-keepalive")
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    out = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    popen = subprocess.Popen(
        [*args, url], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    stopped: list[HeyResult] = []

    def stop() -> HeyResult:
        if not stopped:
            if popen.poll() is None:
                popen.send_signal(signal.SIGINT)
            try:
                popen.wait(60)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(10)
            out.seek(0)
            stopped.append(parse_hey(out.read().decode(errors="replace")))
        return stopped[0]

    try:
        yield stop
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(10)
        out.close()


def run_hey(url: str, *, concurrency: int, seconds: float, keepalive: bool = True) -> HeyResult:
    with start_hey(url, concurrency=concurrency, max_seconds=seconds, keepalive=keepalive) as stop:
        time.sleep(seconds + 0.5)
        return stop()


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
    return float(match.group(1)) * scale


def run_wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 2,
    headers: Mapping[str, str] | None = None,
) -> WrkResult:
    """One ``wrk --latency`` run against 127.0.0.1."""
    if not url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
        raise ValueError("load goes to 127.0.0.1 only")
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--latency"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*args, url], capture_output=True, text=True, timeout=seconds + 60, check=False
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (rps and p50 and p99 and total):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=_wrk_ms(p50.group(1)),
        p99_ms=_wrk_ms(p99.group(1)),
        requests=int(total.group(1)),
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        errors=sum(int(x) for x in errors.groups()) if errors else 0,
    )


# -- a small HTTP client for per-request headers ----------------------------------


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, str | None]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    color = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"x-backend-color":
            color = value.strip().decode("latin-1")
    if length:
        await reader.readexactly(length)
    return status, color


def request_bytes(port: int, headers: Mapping[str, str] | None = None, path: str = "/") -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def fetch_colors(
    port: int, requests: Sequence[Mapping[str, str]], *, concurrency: int = 8
) -> list[str | None]:
    """One GET per header set through 127.0.0.1:port; the backend color of each answer
    (None for a non-200). Keep-alive connections, in order of ``requests``."""

    async def main() -> list[str | None]:
        results: list[str | None] = [None] * len(requests)
        queue = iter(range(len(requests)))

        async def worker() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for index in queue:
                    async with asyncio.timeout(10):
                        status, color = await _exchange(
                            reader, writer, request_bytes(port, requests[index])
                        )
                    results[index] = color if status == 200 else None
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results

    return asyncio.run(main())
