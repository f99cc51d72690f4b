"""12. Dashboard and /metrics: change -> browser latency, scrape time, page weight.

At 10 and 1,000 apps (3 colors x 1 server each, pointing at an in-memory
HAProxy responder):

* ``GET /metrics`` on Prism's API port, against HAProxy's own Prometheus
  exporter on the same HAProxy (``/metrics`` on the admin port), in the same run;
* the dashboard's weight: its page and assets plus the state it loads (what
  every live update carries), against ``GET /api/v1/apps`` (the same status,
  as the CLI reads it);
* change -> browser: a weight move of one app through the API until the
  dashboard, open in Debian's chromium, shows the new bar; against the API's own
  answer to that move (when the change is applied and verified).
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from bench.common import (
    BenchContext,
    PrismServer,
    Section,
    free_port,
    median,
    pct,
    ratio,
    run_haproxy,
    run_prism,
    static_backend_config,
    table,
    temp_dir,
)
from bench.scale import fleet_spec, free_ports

NAME = "dashboard"
TITLE = "12. Dashboard and /metrics"
NOFILE = 4096
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
MOVES = ({"blue": 90, "green": 10}, {"blue": 100})


def _timed_get(client: httpx.Client, url: str, times: int) -> tuple[float, int]:
    """Median ms of ``times`` GETs of ``url``, and the answer's size in bytes."""
    spent, size = [], 0
    for _ in range(times):
        began = time.perf_counter()
        answer = client.get(url, timeout=120)
        spent.append((time.perf_counter() - began) * 1000)
        answer.raise_for_status()
        size = len(answer.content)
    return median(spent), size


def _browser_latency(
    ctx: BenchContext, prism: PrismServer, moves: int
) -> tuple[list[float], list[float]]:
    """(ms until the bar shows each move, ms of the API's answer to it)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    seen, answered = [], []
    xdg = ctx.tmp / "chromium"
    xdg.mkdir(exist_ok=True)
    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg), "XDG_CACHE_HOME": str(xdg)}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, env=env)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{prism.url}/")
            page.fill("#token", prism.token)
            page.click("#login-form button")
            try:
                page.wait_for_selector("section.app[data-app=app0000] .bar div", timeout=120_000)
            except PlaywrightTimeout:
                ctx.log("  dashboard: the page did not show the app within 120 s")
                return seen, answered
            for i in range(moves):
                weights = MOVES[i % 2]
                color, weight = ("green", weights["green"]) if "green" in weights else ("blue", 100)
                selector = (
                    "section.app[data-app=app0000] .bar "
                    f"div[data-color={color}][data-weight='{weight}']"
                )
                began = time.perf_counter()
                prism.api("PUT", "/apps/app0000/weights", {"weights": weights})
                answered.append((time.perf_counter() - began) * 1000)
                page.wait_for_selector(selector, timeout=120_000)
                seen.append((time.perf_counter() - began) * 1000)
        finally:
            browser.close()
    return seen, answered


def _measure(ctx: BenchContext, prism: PrismServer, spec: dict[str, Any]) -> dict[str, Any]:
    size = len(spec["apps"])
    prism.api("PUT", "/config", {"spec": spec, "reason": f"bench {size} apps"})
    prism.wait_up("app0000")
    admin = prism.api("GET", "/health")["haproxy"]["metrics_url"]
    scrapes = ctx.size(10, 2)
    row: dict[str, Any] = {"apps": size}
    with httpx.Client(trust_env=False) as client:
        row["metrics_ms"], row["metrics_bytes"] = _timed_get(
            client, f"{prism.url}/metrics", scrapes
        )
        row["haproxy_ms"], row["haproxy_bytes"] = _timed_get(client, admin, scrapes)
        page = sum(
            len(client.get(f"{prism.url}{p}").content)
            for p in ("/", "/assets/app.js", "/assets/app.css")
        )
        headers = {"Authorization": f"Bearer {prism.token}"}
        began = time.perf_counter()
        state = client.get(f"{prism.url}/api/v1/dashboard", headers=headers, timeout=120)
        row["state_ms"] = (time.perf_counter() - began) * 1000
        row["page_bytes"] = page
        row["state_bytes"] = len(state.content)
        row["status_ms"], row["status_bytes"] = _timed_get(client, f"{prism.url}/api/v1/apps", 1)
    ctx.log(
        f"  dashboard: /metrics {row['metrics_ms']:.0f} ms, state {row['state_ms']:.0f} ms"
        f" ({row['state_bytes']:,} bytes)"
    )
    seen, answered = _browser_latency(ctx, prism, ctx.size(20 if size < 100 else 8, 2))
    row["seen"], row["answered"] = seen, answered
    return row


def run(ctx: BenchContext) -> Section:
    sizes = ctx.size((10, 1000), (2,))
    rows: list[dict[str, Any]] = []
    with temp_dir(ctx.tmp, "dashboard-") as work:
        static_root, state = work / "static", work / "state"
        static_root.mkdir()
        state.mkdir()
        static_port = free_port()
        ports = [p for p in free_ports(max(sizes) + 1) if p != static_port][: max(sizes)]
        with (
            run_haproxy(ctx, static_root, static_backend_config(static_root, static_port)),
            run_prism(ctx, state, nofile=NOFILE) as prism,
        ):
            for size in sizes:
                ctx.log(f"  dashboard: {size} apps")
                rows.append(_measure(ctx, prism, fleet_spec(ports[:size], static_port, servers=1)))
    return Section(NAME, TITLE, _report(rows))


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f}"


def _report(rows: list[dict[str, Any]]) -> str:
    big = rows[-1]
    lines = [
        f"**Ratio**: at {big['apps']:,} apps a scrape of Prism's `/metrics` takes "
        f"{ratio(big['metrics_ms'], big['haproxy_ms'])} HAProxy's own exporter's on the same "
        f"HAProxy; the dashboard (page, assets and state) weighs "
        f"{ratio(big['page_bytes'] + big['state_bytes'], big['status_bytes'])} the status JSON"
        + _latency_headline(rows),
        "",
        "Every app has 3 colors x 1 server. *Scrape*: median ms of `GET /metrics` (Prism, "
        "API port) and of HAProxy's Prometheus exporter (admin port), with the size of each "
        "answer. *Page*: `/`, `app.js`, `app.css`; *state*: `GET /api/v1/dashboard` (the "
        "data every live update carries), against `GET /api/v1/apps`.",
        "",
        table(
            [
                "size",
                "Prism /metrics ms",
                "KiB",
                "HAProxy /metrics ms",
                "KiB",
                "Prism / HAProxy",
                "page KiB",
                "state KiB",
                "state ms",
                "/apps KiB",
                "dashboard / status",
            ],
            [
                [
                    f"{r['apps']:,} apps",
                    r["metrics_ms"],
                    _kib(r["metrics_bytes"]),
                    r["haproxy_ms"],
                    _kib(r["haproxy_bytes"]),
                    ratio(r["metrics_ms"], r["haproxy_ms"]),
                    _kib(r["page_bytes"]),
                    _kib(r["state_bytes"]),
                    r["state_ms"],
                    _kib(r["status_bytes"]),
                    ratio(r["page_bytes"] + r["state_bytes"], r["status_bytes"]),
                ]
                for r in rows
            ],
        ),
        "",
        "Change -> browser: `PUT /apps/app0000/weights` alternating 90/10 and 100, timed from "
        "sending it until chromium (Playwright, the dashboard logged in) shows the new bar; "
        "the baseline is the API's answer to the same move (applied and read back). The "
        "stream looks for changes every 0.25 s and then rebuilds the whole state.",
        "",
        table(
            ["size", "moves", "browser p50 ms", "browser p90 ms", "API p50 ms", "browser / API"],
            [
                [
                    f"{r['apps']:,} apps",
                    len(r["seen"]),
                    median(r["seen"]),
                    pct(r["seen"], 90),
                    median(r["answered"]),
                    ratio(median(r["seen"]), median(r["answered"])),
                ]
                if r["seen"]
                else [f"{r['apps']:,} apps", 0, "did not render in 120 s", "-", "-", "-"]
                for r in rows
            ],
        ),
    ]
    return "\n".join(lines)


def _latency_headline(rows: list[dict[str, Any]]) -> str:
    measured = [r for r in rows if r["seen"]]
    if not measured:
        return "; no weight move was seen in the browser."
    r = measured[-1]
    text = (
        f"; at {r['apps']:,} apps a weight move shows in the browser "
        f"{median(r['seen']):,.0f} ms (p50) after it was sent = "
        f"{ratio(median(r['seen']), median(r['answered']))} the API's own answer."
    )
    missing = [f"{x['apps']:,}" for x in rows if not x["seen"]]
    if missing:
        text += f" At {', '.join(missing)} apps the page did not show within 120 s."
    return text
