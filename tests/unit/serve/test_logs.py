"""Log lines: one JSON object each, with the request id, and never a registered secret."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from prism import context
from prism.errors import InvalidInput
from prism.serve import logs
from prism.serve.http import ServeOptions, check_listen
from prism.serve.lifespan import ServiceOptions


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("prism.test", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_the_request_fields() -> None:
    """time, level, logger, message; the access fields when present; the request id."""
    token = context.request_id.set("rid-7")
    try:
        line = logs.JsonFormatter().format(
            _record("GET %s", "/x", method="GET", path="/x", status=200, duration_ms=1.5)
        )
    finally:
        context.request_id.reset(token)
    data = json.loads(line)
    assert data["time"].endswith("+00:00")
    assert {k: data[k] for k in ("level", "logger", "message", "request_id")} == {
        "level": "info",
        "logger": "prism.test",
        "message": "GET /x",
        "request_id": "rid-7",
    }
    assert (data["method"], data["path"], data["status"], data["duration_ms"]) == (
        "GET",
        "/x",
        200,
        1.5,
    )


def test_registered_secrets_never_reach_a_line() -> None:
    """A secret is replaced, in the message and in exception text, in both formats."""
    logs.redact("s3cr3t-value")
    record = _record("token was %s", "s3cr3t-value")
    assert "s3cr3t-value" not in logs.JsonFormatter().format(record)
    assert "[redacted]" in logs.TextFormatter().format(record)


def _options(tmp_path: Path, **kw: object) -> ServeOptions:
    return ServeOptions(service=ServiceOptions(state_dir=tmp_path), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "prism.example"])
def test_a_non_loopback_host_needs_tls_or_insecure_bind(tmp_path: Path, host: str) -> None:
    """Plain HTTP off loopback is refused with what to do; --insecure-bind allows it."""
    with pytest.raises(InvalidInput, match="refusing to serve the API without TLS") as refused:
        check_listen(_options(tmp_path, host=host))
    assert refused.value.exit_code == 2
    assert "--tls-cert" in str(refused.value.hint)
    check_listen(_options(tmp_path, host=host, insecure_bind=True))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_tls(tmp_path: Path, host: str) -> None:
    check_listen(_options(tmp_path, host=host))


def test_tls_files_must_work(tmp_path: Path) -> None:
    """A cert without a key, or files that are not a certificate, are refused up front."""
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate")
    with pytest.raises(InvalidInput, match="go together"):
        check_listen(_options(tmp_path, tls_cert=cert))
    with pytest.raises(InvalidInput, match="cannot serve TLS with"):
        check_listen(_options(tmp_path, tls_cert=cert, tls_key=cert, host="0.0.0.0"))
