"""Take docs/dashboard.png: the dashboard of a running `prism demo`, during a canary.

    prism demo &                      # in another terminal, or in the background
    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/dashboard.png]

It finds the demo through server.json in the state directory ($PRISM_STATE_DIR,
default ~/.prism), logs in with the state directory's token, starts a canary of
green (20%, then a manual pause), sends some traffic through the app for the
charts, screenshots the page with Debian's chromium, then aborts the canary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from prism.node.paths import default_state_dir

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    parser.add_argument("--traffic-seconds", type=float, default=25.0)
    options = parser.parse_args()
    home = Path(os.environ.get("PRISM_STATE_DIR") or default_state_dir())
    info = json.loads((home / "server.json").read_text())
    url = info["url"]
    token = (Path(info["state_dir"]) / "token").read_text().strip()
    api = httpx.Client(
        base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    app_url = "http://" + api.get("/apps/shop").json()["bind"] + "/"
    plan = {"to": "green", "steps": [{"weight": 20}, {"pause": "manual"}, {"weight": 100}]}
    started = api.post("/apps/shop/releases", json={"plan": plan, "reason": "v2 canary"})
    started.raise_for_status()
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    client.get(app_url, headers={"X-Tenant": f"t{time.monotonic_ns() % 97}"})
                stop.wait(0.02)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        stop.wait(options.traffic_seconds)
        with tempfile.TemporaryDirectory() as xdg, sync_playwright() as driver:
            env = {**os.environ, "XDG_CONFIG_HOME": xdg, "XDG_CACHE_HOME": xdg}
            browser = driver.chromium.launch(
                executable_path="/usr/bin/chromium", args=ARGS, env=env
            )
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/")
            page.fill("#token", token)
            page.click("#login-form button")
            page.wait_for_selector("section.app[data-app=shop] .phase[data-phase=waiting]")
            page.wait_for_timeout(1000)  # one more sample drawn
            options.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(options.out), full_page=False)
            browser.close()
    finally:
        stop.set()
        worker.join(timeout=10)
        api.post("/apps/shop/releases/abort", json={"reason": "screenshot taken"})
        api.close()
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
