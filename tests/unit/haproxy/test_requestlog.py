"""The request-log line: the config lines Prism renders and the parser that reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism.core.model import Spec
from prism.errors import InvalidInput
from prism.haproxy.render import RenderSettings, render_config
from prism.haproxy.requestlog import line_key, log_format, log_lines, parse_line
from prism.node.paths import StatePaths

KEY = line_key("k" * 16)
PREFIX = f"prism {KEY} ".encode()


def key_of(line: bytes) -> bytes:
    """``line`` as HAProxy sends it: ``prism <backend> ...`` with the node's key."""
    return line.replace(b"prism ", PREFIX, 1)


def test_parses_prism_lines() -> None:
    """backend, status and time; a trailing newline or a missing status (-1) are fine."""
    assert parse_line(key_of(b"prism shop.blue 200 12"), PREFIX) == ("shop.blue", 200, 12)
    assert parse_line(key_of(b"prism shop.green-2 503 0\n"), PREFIX) == ("shop.green-2", 503, 0)
    assert parse_line(key_of(b"prism app_shop -1 -1"), PREFIX) == ("app_shop", -1, 0)


def test_the_key_is_the_nodes_own() -> None:
    """A line without the key, or with another node's, is not Prism's line; each smoke
    key gives its own 24-hex-digit key, and no other text makes a log format."""
    assert parse_line(b"prism shop.blue 200 12", PREFIX) is None
    other = f"prism {line_key('x' * 16)} ".encode()
    assert parse_line(other + b"shop.blue 200 12", PREFIX) is None
    assert line_key("x" * 16) != KEY
    assert len(KEY) == 24
    assert int(KEY, 16) >= 0
    with pytest.raises(InvalidInput, match="invalid request log key"):
        log_format("%b injected")


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"prism",
        b"prism shop.blue 200",
        b"prism shop.blue 200 12 extra",
        b"other shop.blue 200 12",
        b"prism shop.blue two 12",
        b"prism shop.blue 200 1.5",
        b"prism shop/blue 200 12",
        b"prism " + b"b" * 200 + b" 200 12",
        b"prism shop.blue 200 99999999999",
        b"<134>Dec  1 12:00:00 haproxy[1]: prism shop.blue 200 12",
        b"prism sh\xffp 200 12",
    ],
)
def test_anything_else_is_malformed(line: bytes) -> None:
    """A line that is not exactly Prism's format gives None, never a guess."""
    assert parse_line(key_of(line), PREFIX) is None


def test_log_lines_every_request_and_sampled() -> None:
    """Every request: no sample clause; 1:N otherwise; bad ports and rates raise."""
    target, defaults = log_lines(40000, 1, KEY)
    assert target == ["    log 127.0.0.1:40000 len 256 format raw local0 info"]
    assert defaults == ["    log global", f'    log-format "prism {KEY} %b %ST %Ta"']
    assert log_lines(40000, 50, KEY)[0] == [
        "    log 127.0.0.1:40000 len 256 format raw sample 1:50 local0 info"
    ]
    with pytest.raises(InvalidInput, match="invalid request log port"):
        log_lines(0, 1, KEY)
    with pytest.raises(InvalidInput, match="invalid request log sampling"):
        log_lines(40000, 0, KEY)


def test_render_sends_the_log_only_when_asked(tmp_path: Path) -> None:
    """No port: no log lines at all; a port: the target, the format, and a silent admin."""
    paths = StatePaths.at(tmp_path)
    plain = render_config(
        Spec(), paths, RenderSettings(admin_port=8404, maxconn=100, smoke_key="k" * 16)
    )
    words = {line.split()[0] for line in plain.splitlines() if line.strip()}
    assert not words & {"log", "log-format"}
    assert "set-log-level" not in plain
    logged = render_config(
        Spec(),
        paths,
        RenderSettings(admin_port=8404, maxconn=100, smoke_key="k" * 16, request_log_port=9999),
    )
    assert "    log 127.0.0.1:9999 len 256 format raw local0 info" in logged
    assert "    http-request set-log-level silent" in logged
    with pytest.raises(InvalidInput, match="invalid request log sampling"):
        RenderSettings(
            admin_port=8404,
            maxconn=100,
            smoke_key="k" * 16,
            request_log_port=9999,
            request_log_sample=5000,
        )
