"""A real Prometheus server for integration tests, scraping Prism's ``/metrics``.

Debian's ``prometheus`` binary, started with its storage in a temp directory and
its web API on a free loopback port; stopped by its PID on exit.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from prism.testing.processes import ManagedProcess, free_port
from prism.testing.wait import wait_for

__all__ = ["Prometheus", "running_prometheus"]


@dataclass(frozen=True)
class Prometheus:
    url: str
    process: ManagedProcess

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` selects now (its ``result`` list)."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result


@contextlib.contextmanager
def running_prometheus(
    directory: Path, target: str, *, interval: str = "1s", binary: str | None = None
) -> Iterator[Prometheus]:
    """Prometheus scraping ``target`` (``host:port``, path ``/metrics``) every ``interval``."""
    found = binary or shutil.which("prometheus")
    if found is None:
        raise FileNotFoundError("no prometheus binary (apt-get install prometheus)")
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        "  - job_name: prism\n"
        "    metrics_path: /metrics\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    process = ManagedProcess(
        [
            found,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        name="prometheus",
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if not process.alive:
                raise RuntimeError(f"prometheus exited:\n{process.stderr_text()}")
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200

        wait_for(ready, timeout=20, interval=0.1, ignore=(httpx.HTTPError,), what="prometheus")
        yield Prometheus(url, process)
    finally:
        process.stop(timeout=10)
        process.close()
