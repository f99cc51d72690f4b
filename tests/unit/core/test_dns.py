"""Health-weighted DNS weights per app and node, and their Route 53 change batch."""

from __future__ import annotations

from typing import Any

from prism.core.dns import dns_weights, route53_batch
from prism.core.model import Spec
from prism.core.readings import ServerReading
from prism.core.state import DesiredState, Routing


def state(weights: dict[str, int] | None = None, **app: Any) -> DesiredState:
    spec = Spec.model_validate(
        {
            "apps": [
                {
                    "name": "shop",
                    "bind": "*:8080",
                    "stable": "blue",
                    "dns": {"name": "shop.example.com", "ttl_ms": "30s"},
                    "colors": [
                        {"name": "blue", "servers": ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]},
                        {"name": "green", "servers": ["10.0.1.1:80"]},
                    ],
                    **app,
                }
            ]
        }
    )
    routing = {"shop": Routing.moved(None, weights)} if weights else {}
    return DesiredState(spec=spec, routing=routing)


def up(backend: str, server: str, node: str = "", **kw: Any) -> ServerReading:
    return ServerReading(backend, server, "UP", "L7OK", node=node, **kw)


def down(backend: str, server: str, node: str = "") -> ServerReading:
    return ServerReading(backend, server, "DOWN", "L4CON", node=node)


def test_weight_is_the_healthy_share_of_the_colors_carrying_traffic() -> None:
    """100 with every server of the weighted colors ready; 66 with one of 3 down; green
    (weight 0) does not count until it carries traffic."""
    readings = [up("shop.blue", "s1"), up("shop.blue", "s2"), up("shop.blue", "s3")]
    (full,) = dns_weights(state(), readings, {"local": "10.9.0.1"})
    assert (full.weight, full.healthy, full.servers, full.colors) == (100, 3, 3, ("blue",))
    readings[1] = down("shop.blue", "s2")
    (partial,) = dns_weights(state(), readings, {"local": "10.9.0.1"})
    assert (partial.weight, partial.healthy) == (66, 2)
    split = dns_weights(state({"blue": 80, "green": 20}), readings, {"local": "10.9.0.1"})
    assert (split[0].weight, split[0].servers) == (50, 4)  # green's server is not reported


def test_tripped_draining_or_unknown_servers_are_not_healthy() -> None:
    """Only ready servers count: a tripped breaker, DRAIN or no reading is not healthy;
    an empty DNS slot is no server at all."""
    readings = [
        up("shop.blue", "s1"),
        ServerReading("shop.blue", "s2", "DOWN", "HANA"),
        ServerReading("shop.blue", "s3", "DRAIN", "L7OK"),
        ServerReading("shop.blue", "srv1", "MAINT (resolution)"),
    ]
    (weight,) = dns_weights(state(), readings, {"local": "10.9.0.1"})
    assert (weight.weight, weight.healthy, weight.servers) == (33, 1, 3)
    (none,) = dns_weights(state(), [], {"local": "10.9.0.1"})
    assert none.weight == 0


def test_each_node_is_weighted_by_what_it_sees() -> None:
    """In a fleet every node has its own weight and its own address."""
    readings = [
        *(up("shop.blue", s, "lb-1") for s in ("s1", "s2", "s3")),
        up("shop.blue", "s1", "lb-2"),
        down("shop.blue", "s2", "lb-2"),
        down("shop.blue", "s3", "lb-2"),
    ]
    rows = dns_weights(state(), readings, {"lb-1": "10.0.9.1", "lb-2": "10.0.9.2"})
    assert [(r.node, r.address, r.weight) for r in rows] == [
        ("lb-1", "10.0.9.1", 100),
        ("lb-2", "10.0.9.2", 33),
    ]


def test_route53_batch_upserts_one_weighted_record_per_node() -> None:
    """One UPSERT per node: the app's record name, A for an address, the node as the set
    identifier, the weight, the TTL; apps without a name are left out."""
    readings = [up("shop.blue", s, "lb-1") for s in ("s1", "s2", "s3")]
    rows = dns_weights(state(), readings, {"lb-1": "10.0.9.1", "lb-2": "edge-2.example.net"})
    batch = route53_batch(rows)
    assert batch == {
        "Changes": [
            {
                "Action": "UPSERT",
                "ResourceRecordSet": {
                    "Name": "shop.example.com",
                    "Type": "A",
                    "SetIdentifier": "lb-1",
                    "Weight": 100,
                    "TTL": 30,
                    "ResourceRecords": [{"Value": "10.0.9.1"}],
                },
            },
            {
                "Action": "UPSERT",
                "ResourceRecordSet": {
                    "Name": "shop.example.com",
                    "Type": "CNAME",
                    "SetIdentifier": "lb-2",
                    "Weight": 0,
                    "TTL": 30,
                    "ResourceRecords": [{"Value": "edge-2.example.net"}],
                },
            },
        ]
    }
    nameless = dns_weights(state(dns=None), readings, {"lb-1": "10.0.9.1"})
    assert nameless[0].name is None
    assert route53_batch(nameless) == {"Changes": []}


def test_a_specific_bind_is_the_record_value() -> None:
    """An app bound to one address is reached there, whatever the node's address."""
    (row,) = dns_weights(state(bind="192.0.2.10:8080"), [], {"local": "127.0.0.1"})
    assert row.address == "192.0.2.10"
