"""9. Discovery: from a server announcing itself to its first request served.

Three ways a server joins color ``blue`` of ``shop`` (one declared server,
health checks every 200 ms, rise 2), measured on the same ``prism serve``,
HAProxy and backends, one join at a time:

* ``prism server add`` through the API (the baseline: a person's command);
* a registration (``PUT .../registrations/NAME`` with a TTL);
* a new target in the color's DNS SRV record (dnsmasq restarted with one more
  target), which HAProxy finds by itself at its next resolution.

Latency = the first response from the new server (its name is in every
answer) minus the moment just before the call (or the DNS restart). A
prober keeps sending requests back to back; the new server gets its share at
once because the backend balances round-robin.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from bench.common import BenchContext, Section, free_port, pct, ratio, run_prism, table, temp_dir
from prism.testing.dns import start_dnsmasq
from prism.testing.processes import Backend, BackendSpec, backends

NAME = "discovery"
TITLE = "9. Discovery: announcing a server to its first request"
SRV = "_http._tcp.green.shop.service.consul"


def _first_from(port: int, server: str, began: float, limit: float = 30.0) -> float:
    """Milliseconds from ``began`` to the first answer from ``server`` (back-to-back GETs)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        while time.monotonic() - began < limit:
            reply = client.get("/")
            if reply.status_code == 200 and reply.json().get("server") == server:
                return (time.monotonic() - began) * 1000
    raise RuntimeError(f"{server} served nothing within {limit:g} s")


def run(ctx: BenchContext) -> Section:
    trials = ctx.size(10, 2)
    pool = [BackendSpec("blue", "v1", name="s1"), BackendSpec("green", "v2", name="g0")]
    pool += [BackendSpec("blue", "v1", name=f"a{i}") for i in range(trials)]
    pool += [BackendSpec("blue", "v1", name=f"r{i}") for i in range(trials)]
    pool += [BackendSpec("green", "v2", name=f"d{i}") for i in range(trials)]
    with backends(pool) as running, temp_dir(ctx.tmp, "disc-") as work:
        by_name: dict[str, Backend] = {b.name: b for b in running}
        state = work / "state"
        state.mkdir()
        dns_dir: Path = work / "dns"
        with (
            start_dnsmasq(dns_dir, {SRV: [("127.0.0.1", by_name["g0"].port)]}) as dns,
            run_prism(ctx, state) as prism,
        ):
            port = free_port()
            check = {"path": "/healthz", "inter_ms": "200ms", "rise": 2, "fall": 2}
            spec = {
                "apps": [
                    {
                        "name": "shop",
                        "bind": f"127.0.0.1:{port}",
                        "stable": "blue",
                        "check": check,
                        "drain_timeout_ms": "2s",
                        "colors": [
                            {"name": "blue", "servers": [by_name["s1"].address]},
                            {
                                "name": "green",
                                "discovery": {
                                    "srv": SRV,
                                    "resolvers": [dns.address],
                                    "slots": trials + 2,
                                },
                            },
                        ],
                    }
                ]
            }
            prism.api("PUT", "/config", {"spec": spec, "reason": "bench"})
            prism.wait_up("shop", ["blue"])
            added, registered, discovered = [], [], []
            for i in range(trials):
                name = f"a{i}"
                began = time.monotonic()
                prism.api(
                    "POST",
                    "/apps/shop/colors/blue/servers",
                    {"address": by_name[name].address, "name": name},
                )
                added.append(_first_from(port, name, began))
            for i in range(trials):
                name = f"r{i}"
                began = time.monotonic()
                prism.api(
                    "PUT",
                    f"/apps/shop/colors/blue/registrations/{name}",
                    {"address": by_name[name].address, "ttl": "60s"},
                )
                registered.append(_first_from(port, name, began))
            prism.api("PUT", "/apps/shop/weights", {"weights": {"green": 100}})
            targets = [("127.0.0.1", by_name["g0"].port)]
            for i in range(trials):
                name = f"d{i}"
                targets.append(("127.0.0.1", by_name[name].port))
                began = time.monotonic()
                dns.serve({SRV: list(targets)})
                discovered.append(_first_from(port, name, began))
    rows = [
        ["server add (API)", len(added), f"{pct(added, 50):.0f}", f"{pct(added, 99):.0f}", "1"],
        [
            "registration (API)",
            len(registered),
            f"{pct(registered, 50):.0f}",
            f"{pct(registered, 99):.0f}",
            ratio(pct(registered, 50), pct(added, 50)),
        ],
        [
            "DNS SRV record change",
            len(discovered),
            f"{pct(discovered, 50):.0f}",
            f"{pct(discovered, 99):.0f}",
            ratio(pct(discovered, 50), pct(added, 50)),
        ],
    ]
    body = (
        table(["how the server joins", "joins", "p50 ms", "p99 ms", "p50 vs server add"], rows)
        + "\n\n**Ratio**: a registration reaches its first request in "
        f"{ratio(pct(registered, 50), pct(added, 50))} the time of `prism server add` (p50); "
        f"a DNS SRV change in {ratio(pct(discovered, 50), pct(added, 50))}.\n\n"
        "A registration and `server add` go through the same gate: the server waits in "
        "DRAIN until a health check passed and held for `rise` checks (2 x 200 ms here), "
        "so both cost about the same and the check interval sets the figure. An SRV target "
        "is found at HAProxy's next resolution (`hold valid 1s`) and takes traffic at once "
        "(HAProxy 2.8 does not wait for its first check), so its figure is the resolution "
        "interval plus the DNS server's restart.\n"
    )
    return Section(NAME, TITLE, body)
