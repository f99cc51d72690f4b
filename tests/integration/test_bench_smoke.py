"""The benchmarks still run: ``python -m bench --quick`` completes and reports every section.

Tiny sizes, no timing assertions (numbers from a smoke run mean nothing); it
only keeps ``bench/`` from rotting. Needs ``hey``, ``wrk`` and ``chromium`` (Debian
packages).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.haproxy

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = [
    "## 1. Cutover latency",
    "## 2. Zero loss under load",
    "## 3. Routing overhead",
    "## 4. Split accuracy and stickiness",
    "## 5. Scale",
    "## 6. Control-plane throughput",
    "## 7. Fleet: N nodes in step",
    "## 8. Slow-server weights",
    "## 9. Discovery: announcing a server to its first request",
    "## 10. TLS termination and certificate rotation",
    "## 11. Fault detection",
    "## 12. Dashboard and /metrics",
    "## 13. Request log",
    "## 14. CLI start-up",
]


@pytest.mark.skipif(
    shutil.which("hey") is None or shutil.which("wrk") is None or shutil.which("chromium") is None,
    reason="needs hey, wrk and chromium: apt-get install -y hey wrk chromium",
)
def test_quick_benchmarks_complete_and_report_every_section(tmp_path: Path) -> None:
    """Every benchmark runs at smoke size, prints its section and a ratio, and exits 0."""
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = out.read_text()
    assert "## Machine" in report
    assert "FAILED" not in report
    for title in SECTIONS:
        assert title in done.stdout, f"{title!r} missing from the output"
        section = report.split(title, 1)[1].split("\n## ", 1)[0]
        assert "**Ratio**:" in section, f"{title!r} states no ratio against its baseline"
