"""How `prism dns-weights` prints its table."""

from __future__ import annotations

from prism.cli.dns import format_dns_weights


def test_dns_weights_table() -> None:
    """One line per app and node with weight, healthy/total and the record."""
    row = {
        "app": "shop",
        "node": "local",
        "address": "127.0.0.1",
        "weight": 66,
        "healthy": 2,
        "servers": 3,
        "name": "shop.example.com",
        "ttl": 30,
    }
    text = format_dns_weights([row])
    assert "shop             local            127.0.0.1            66  2/3" in text
    assert "shop.example.com (ttl 30s)" in text
