"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a real
`prism serve` with real HAProxy and backends: log in, watch, steer, and stay safe."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prism.testing.processes import Backend, BackendSpec, backends, free_port
from prism.testing.wait import wait_for
from tests.conftest import Server, haproxy_admin, run_server, shop_spec, wait_until_up

playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip)")

pytestmark = [
    pytest.mark.haproxy,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium"),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
HOSTILE = "<script>alert(1)</script>"


class Rig:
    def __init__(self, server: Server, app_url: str, tokens: dict[str, str]) -> None:
        self.server, self.app_url, self.tokens = server, app_url, tokens

    def as_role(self, role: str, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        with httpx.Client(base_url=f"{self.server.url}/api/v1", timeout=30) as client:
            return client.request(method, path, json=body, headers=headers)

    def weights(self) -> dict[str, int]:
        found: dict[str, int] = self.server.api("GET", "/apps/shop").json()["weights"]
        return found

    def map_colors(self) -> dict[str, int]:
        """HAProxy's live weights map (``id lo:hi app.color`` rows): buckets per color."""
        path = self.server.state_dir / "maps" / "shop.weights.map"
        counts: dict[str, int] = {}
        for line in haproxy_admin(self.server, f"show map {path}").splitlines():
            parts = line.split()
            if len(parts) >= 3 and ":" in parts[-2]:
                lo, hi = (int(x) for x in parts[-2].split(":"))
                color = parts[-1].rsplit(".", 1)[-1]
                counts[color] = counts.get(color, 0) + hi - lo + 1
        return counts


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One `prism serve` (sampling every 0.5 s), three backends and two named tokens."""
    specs = [BackendSpec("blue", "v1"), BackendSpec("green", "v2"), BackendSpec("red", "v3")]
    state = tmp_path_factory.mktemp("dashboard") / "state"
    state.mkdir()
    with backends(specs) as running, run_server(state, "--sample-interval", "0.5") as server:
        by_color: dict[str, Backend] = {b.color: b for b in running}
        port = free_port()
        reply = server.api("PUT", "/config", {"spec": shop_spec(port, by_color), "reason": "up"})
        assert reply.status_code == 200, reply.text
        wait_until_up(server, "shop", ["blue", "green", "red"])
        tokens = {}
        for name, role in (("ops", "operator"), ("watcher", "viewer")):
            made = server.api("POST", "/tokens", {"name": name, "role": role})
            tokens[role] = made.json()["secret"]
        yield Rig(server, f"http://127.0.0.1:{port}/", tokens)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("chromium")
    env = {**os.environ, "XDG_CONFIG_HOME": str(home), "XDG_CACHE_HOME": str(home)}
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, env=env
        )
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """A logged-in dashboard tab that accepts every confirmation and records dialogs."""

    def __init__(self, browser: Any, rig: Rig, role: str, name: str) -> None:
        self.context = browser.new_context(viewport={"width": 1300, "height": 1100})
        self.page = self.context.new_page()
        self.dialogs: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.name = name
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(f"{rig.server.url}/")
        self.page.fill("#token", rig.tokens[role])
        self.page.click("#login-form button")
        self.page.wait_for_selector("section.app[data-app=shop] .bar div", timeout=15_000)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append((dialog.type, dialog.message))
        dialog.accept()

    def app(self, selector: str = "") -> Any:
        return self.page.locator(f"section.app[data-app=shop] {selector}".strip())

    def shot(self, what: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}-{what}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def operator(browser: Any, rig: Rig, request: pytest.FixtureRequest) -> Iterator[Page]:
    page = Page(browser, rig, "operator", request.node.name)
    try:
        yield page
    finally:
        page.shot("end")
        page.close()


def _bar(page: Page) -> dict[str, int]:
    parts = page.app(".bar div").all()
    return {p.get_attribute("data-color"): int(p.get_attribute("data-weight")) for p in parts}


def _traffic(url: str, stop: threading.Event) -> None:
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                client.get(url)
            stop.wait(0.01)


@pytest.fixture
def load(rig: Rig) -> Iterator[None]:
    """Steady requests through the app's listener while the test runs (bounded by it)."""
    stop = threading.Event()
    worker = threading.Thread(target=_traffic, args=(rig.app_url, stop), daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=10)


def test_shift_in_the_ui_moves_the_bar_the_map_and_the_counters(
    operator: Page, rig: Rig, load: None
) -> None:
    """Shift 70/30 from the form: the bar follows, HAProxy's map holds 30 green buckets, the
    live chart shows green's requests, and a hostile reason shows as text."""
    page = operator
    versions = page.app("table.colors tr[data-color] td:nth-child(2)").all_inner_texts()
    assert versions == ["v1", "v2", "v3"]
    assert _bar(page) == {"blue": 100}
    page.shot("before")
    page.app("input.reason").fill(HOSTILE)
    page.app("form.shift input[name=blue]").fill("70")
    page.app("form.shift input[name=green]").fill("30")
    page.app("form.shift button").click()
    page.page.wait_for_selector(
        "section.app[data-app=shop] .bar div[data-color=green][data-weight='30']", timeout=15_000
    )
    assert _bar(page) == {"blue": 70, "green": 30}
    assert page.dialogs[0][0] == "confirm"
    assert "blue=70 green=30" in page.dialogs[0][1]
    assert "blue=70 green=30" in page.page.locator("#notice").inner_text()
    assert rig.weights() == {"blue": 70, "green": 30}
    assert rig.map_colors() == {"blue": 70, "green": 30}

    # the reason typed is shown as text in the audit log, never run
    why = page.page.locator("#history td.why", has_text="alert(1)").first
    why.wait_for(timeout=10_000)
    assert why.inner_text() == HOSTILE
    assert page.page.locator("#history script").count() == 0
    assert [kind for kind, _ in page.dialogs] == ["confirm"]
    latest = rig.server.api("GET", "/apps/shop/history?limit=1").json()[0]
    assert latest["actor"] == "ops"

    # the live chart: green's requests/s as Prism sampled them from HAProxy's counters
    def green_rps() -> float:
        raw = page.app("svg[data-chart=rps]").get_attribute("data-latest") or "{}"
        return float(json.loads(raw).get("green", 0))

    wait_for(green_rps, timeout=20, interval=0.2, what="green's requests/s on the chart")
    page.shot("shifted")
    assert page.errors == []


def test_a_canary_advances_on_its_timeline_then_rolls_back(
    operator: Page, rig: Rig, load: None
) -> None:
    """Start 40 -> 100 with a manual pause, promote from the UI, watch the timeline; roll back."""
    page = operator
    rig.server.api("PUT", "/apps/shop/weights", {"weights": {"blue": 100}})
    page.page.wait_for_selector(
        "section.app[data-app=shop] .bar div[data-color=blue][data-weight='100']", timeout=15_000
    )
    page.app("form.start select.to").select_option("green")
    page.app("form.start input.steps").fill("40,100")
    page.app("form.start input.interval").fill("manual")
    page.app("form.start button").click()
    page.page.wait_for_selector(
        "section.app[data-app=shop] .phase[data-phase=waiting]", timeout=20_000
    )
    assert page.app(".timeline li.done").count() == 1
    assert page.app(".timeline li.current").get_attribute("data-step") == "1"
    assert _bar(page) == {"blue": 60, "green": 40}
    page.shot("canary")

    page.app("button[data-action=promote]").click()
    page.page.wait_for_selector(
        "section.app[data-app=shop] .phase[data-phase=completed]", timeout=30_000
    )
    assert page.app(".timeline li.done").count() == 3
    assert rig.weights()["green"] == 100

    page.app("button[data-action=rollback]").click()
    page.page.wait_for_selector(
        "section.app[data-app=shop] .bar div[data-color=blue][data-weight='60']", timeout=20_000
    )
    assert rig.weights() == {"blue": 60, "green": 40}
    assert [kind for kind, _ in page.dialogs] == ["confirm"] * 3
    assert page.errors == []


def test_a_viewer_sees_no_actions_and_the_api_refuses_it(browser: Any, rig: Rig) -> None:
    """No button or form for a viewer; its token's change is 403 and changes nothing."""
    page = Page(browser, rig, "viewer", "viewer")
    try:
        assert page.page.locator("#me").inner_text() == "watcher (viewer)"
        assert page.app(".bar div").count() >= 1
        assert page.app("button").count() == 0
        assert page.app("form").count() == 0
        page.shot("viewer")
    finally:
        page.close()
    before = rig.weights()
    refused = rig.as_role("viewer", "PUT", "/apps/shop/weights", {"weights": {"red": 100}})
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/forbidden")
    assert rig.weights() == before


def test_an_action_refused_shows_the_message_and_hint(operator: Page, rig: Rig) -> None:
    """Weights that do not sum to 100: the error and its hint appear, nothing changes."""
    page = operator
    before = rig.weights()
    inputs = page.app("form.shift input.weight").all()
    for field in inputs:
        field.fill("10")
    page.app("form.shift button").click()
    notice = page.page.locator("#notice.error")
    notice.wait_for(timeout=10_000)
    assert "100" in notice.locator(".message").inner_text()
    assert rig.weights() == before
