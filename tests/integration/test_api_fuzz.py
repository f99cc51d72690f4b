"""schemathesis against a real `prism serve`: every check, every phase, no failure.

The fuzzer generates valid specs and server addresses; applied, they would
have HAProxy health-check whatever address came up. So the server, its
HAProxy, the backends and the fuzzer all run in a private network namespace
whose only interface is loopback (:mod:`prism.testing.netns`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prism.testing import netns
from prism.testing.processes import BackendSpec, backends
from tests.conftest import run_server, wait_until_up

pytestmark = [
    pytest.mark.haproxy,
    pytest.mark.skipif(
        not netns.available(),
        reason="needs a private network namespace (root): fuzzed specs would reach anywhere",
    ),
]

CONFIG = Path(__file__).with_name("schemathesis.toml")
#: cases per operation and phase: enough to find schema drift, done in about a minute
EXAMPLES = int(os.environ.get("PRISM_FUZZ_EXAMPLES", "10"))
SEED = os.environ.get("PRISM_FUZZ_SEED", "20261201")


def test_schemathesis_finds_no_failure(tmp_path: Path) -> None:
    """All checks (status codes, content types, headers, response schemas, positive and
    negative data, 405 + Allow, auth) over the examples, coverage, fuzzing and stateful
    phases against a server with one app: zero failures."""
    schemathesis = Path(sys.executable).with_name("schemathesis")
    with netns.isolated_network():
        # The document's examples name servers on 127.0.0.1:9001-9003; here they answer.
        ports = {"blue": 9001, "green": 9002, "red": 9003}
        specs = [BackendSpec(color, "v1", port=port) for color, port in ports.items()]
        with (
            backends(specs),
            # The fuzzer sends far more changes a second than a person would; refusing
            # them with 429 would only keep it from the rest of the API.
            run_server(tmp_path / "state", "--rate-limit", "off", "--log-format", "json") as server,
        ):
            # The app the document's own example declares (so it is shown to work).
            doc = server.api("GET", "/openapi.json").json()
            body = doc["paths"]["/api/v1/config"]["put"]["requestBody"]["content"]
            example = body["application/json"]["examples"]["shop"]["value"]
            assert server.api("PUT", "/config", example).status_code == 200
            wait_until_up(server, "shop", ["blue", "green"])
            command = [
                str(schemathesis),
                "--no-color",
                "--config-file",
                str(CONFIG),
                "run",
                f"{server.url}/api/v1/openapi.json",
                "--url",
                server.url,
                "-H",
                f"Authorization: Bearer {server.token}",
                "--checks",
                "all",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                SEED,
                # one worker: schemathesis' coverage phase is not thread-safe here
                "--workers",
                "1",
                # A server added at runtime gets its health checks' time to come up
                # (at least 10 s, then it is deleted again): slow, and by design.
                "--max-response-time",
                "60",
                "--request-timeout",
                "90",
            ]
            try:
                result = subprocess.run(
                    command, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
                )
            except subprocess.TimeoutExpired as exc:
                partial = (exc.stdout or b"") + (exc.stderr or b"")
                text = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
                (tmp_path / "schemathesis.txt").write_text(text)
                raise AssertionError(f"schemathesis ran out of time:\n{text[-6000:]}") from None
            finally:
                log = server.process.stderr_text(limit=50_000_000)
                (tmp_path / "server.log").write_text(log)
            assert server.api("GET", "/health").json()["status"] == "ok"
    report = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(report)
    cases = re.search(r"(\d+) generated, (.*)", report)
    assert cases is not None, report[-3000:]
    print(f"schemathesis: {cases.group(0)}")  # the count, for -s runs
    failed = f"see {tmp_path / 'schemathesis.txt'}:\n{report[-6000:]}"
    assert result.returncode == 0, failed
    assert "failure" not in cases.group(2), failed
    assert int(cases.group(1)) >= 500, cases.group(0)
