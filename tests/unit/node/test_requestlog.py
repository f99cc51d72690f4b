"""The request-log receiver on loopback UDP, and the settings that keep its port."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from prism.errors import HAProxyError
from prism.haproxy.requestlog import line_key
from prism.node.paths import StatePaths
from prism.node.requestlog import RequestLogReceiver, free_udp_port
from prism.node.settings import node_settings
from prism.testing.wait import eventually

KEY = line_key("k" * 16)


async def test_receiver_counts_lines_per_backend_and_malformed_apart() -> None:
    """Datagrams in Prism's format with the node's key count per backend; anything else,
    a line with another key or none included, counts as malformed and changes no count."""
    receiver = RequestLogReceiver(free_udp_port(), KEY)
    await receiver.start()
    ours = f"prism {KEY} ".encode()
    forged = f"prism {line_key('x' * 16)} ".encode()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for line in [
                ours + b"shop.blue 200 5",
                ours + b"shop.blue 503 40",
                b"junk",
                b"prism shop.blue 500 1",
                forged + b"shop.blue 500 1",
            ]:
                sender.sendto(line, ("127.0.0.1", receiver.port))
            sender.sendto(ours + b"shop.green 200 7\n", ("127.0.0.1", receiver.port))
        recorder = receiver.recorder
        await eventually(
            lambda: recorder.lines + recorder.malformed, until=lambda n: n == 6, timeout=5
        )
        assert recorder.snapshot("shop.blue").classes == (0, 0, 1, 0, 0, 1)
        assert recorder.snapshot("shop.green").requests == 1
        assert recorder.malformed == 3
    finally:
        receiver.close()
    assert not receiver.running


async def test_a_port_in_use_is_an_haproxy_error() -> None:
    """A second receiver on a held port refuses to start, naming the port."""
    first = RequestLogReceiver(free_udp_port(), KEY)
    await first.start()
    try:
        with pytest.raises(HAProxyError, match=f"127.0.0.1:{first.port}"):
            await RequestLogReceiver(first.port, KEY).start()
    finally:
        first.close()


def test_settings_keep_the_port_and_the_sampling(tmp_path: Path) -> None:
    """The port and sampling stay from one start to the next; 0 turns the log off."""
    paths = StatePaths.at(tmp_path)
    first = node_settings(paths, None)
    assert first.request_log_port is not None
    assert first.request_log_sample == 1
    again = node_settings(paths, None)
    assert again.request_log_port == first.request_log_port
    sampled = node_settings(paths, None, request_log_sample=10)
    assert sampled.request_log_sample == 10
    assert node_settings(paths, None).request_log_sample == 10
    off = node_settings(paths, None, request_log_sample=0)
    assert off.request_log_port is None
    stored = json.loads((tmp_path / "settings.json").read_text())
    assert stored["request_log_sample"] == 0
    assert stored["request_log_port"] == first.request_log_port
