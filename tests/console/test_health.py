"""The health dashboard in a real browser: tiles, runtimes by region, charts, refreshes."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page, Request

from ..sdk.conftest import DEPLOY, PLANNER, PRODUCTION, STAGING, Plane
from .conftest import AUDITOR_SECRET, DESKTOP, PHONE, Tab

CHARTS = ["decisions", "latency", "active", "revocations"]


@pytest.fixture(scope="module")
def busy(console_plane: Plane) -> Plane:
    """Two allowed executions (one revoked since) and one denied, on runtime edge-1."""
    runtime = {"Authorization": f"Bearer {console_plane.runtime_secret}"}
    ids = []
    for resource in (STAGING, STAGING, PRODUCTION):
        body = {"principal": PLANNER, "action": DEPLOY, "resource": resource}
        r = httpx.post(console_plane.url + "/v1/executions", json=body, headers=runtime)
        ids.append(r.json()["execution"]["id"])
    console_plane.revoke(ids[0])
    return console_plane


def _loaded(page: Page) -> None:
    page.locator('#health-runtimes tr[data-runtime="edge-1"]').wait_for()
    for name in CHARTS:
        page.locator(f"#chart-{name} canvas").wait_for()


def _refreshed(page: Page, times: int) -> None:
    page.locator(f'#health-updated[data-refreshes="{times}"]').wait_for()


def test_the_dashboard_shows_runtimes_replicas_log_and_charts(
    busy: Plane, open_page: Callable[..., Tab]
) -> None:
    tab = open_page(busy.url)
    page = tab.open("/console/health", busy.server.token)
    _loaded(page)
    edge = page.locator('#health-runtimes tr[data-runtime="edge-1"]')
    assert "verified" in edge.inner_text()
    assert "s ago" in edge.inner_text()
    group = page.locator("#health-runtimes th[scope=rowgroup]").first.inner_text()
    assert group == "Region eu, cluster c1"
    replica = page.locator("#health-replicas tbody tr")
    assert replica.count() == 1 and "(this one)" in replica.inner_text()
    assert "up" in replica.inner_text()
    size = httpx.get(busy.url + "/v1/log/checkpoint").json()["size"]
    tiles = page.locator("#health-tiles").inner_text()
    assert f"{size:,} entries" in tiles and "1 up" in tiles and "Active executions\n1" in tiles
    for name in CHARTS:
        plot = page.locator(f"#chart-{name}")
        assert plot.get_attribute("role") == "img" and plot.get_attribute("aria-label")
        box = plot.locator("canvas").bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100
    summary = page.locator("#chart-decisions-summary").inner_text()
    assert "Allowed: 2 in the hour" in summary and "Denied: 1 in the hour" in summary
    assert "Revoked: 1 in the hour" in page.locator("#chart-revocations-summary").inner_text()
    tab.shot("health")


def test_it_fits_a_phone_and_charts_follow_the_width(
    busy: Plane, open_page: Callable[..., Tab]
) -> None:
    tab = open_page(busy.url, PHONE)
    page = tab.open("/console/health", AUDITOR_SECRET)
    _loaded(page)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1
    width = page.locator("#chart-latency canvas").bounding_box()
    assert width is not None and width["width"] <= PHONE["width"]
    tab.shot("health-phone")
    page.set_viewport_size(DESKTOP)
    for _ in range(50):
        box = page.locator("#chart-latency canvas").bounding_box()
        if box is not None and box["width"] > 400:
            break
        page.wait_for_timeout(100)
    assert box is not None and box["width"] > 400, box


def test_signed_out_it_asks_for_a_credential(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    page = open_page(console_plane.url).open("/console/health")
    text = page.locator("#need-sign-in").inner_text()
    assert "the health of the control plane" in text


def _show(page: Page, visibility: str) -> None:
    """Pretend the tab was hidden or shown again (headless tabs are always visible)."""
    page.evaluate(
        """(state) => {
            Object.defineProperty(document, "visibilityState", {value: state, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        visibility,
    )


def test_one_request_per_refresh_and_none_while_hidden(
    busy: Plane, open_page: Callable[..., Tab]
) -> None:
    tab = open_page(busy.url)
    tab.page.clock.install()
    asked: list[str] = []

    def count(request: Request) -> None:
        if request.url.endswith("/v1/health"):
            asked.append(request.url)

    tab.page.on("request", count)
    page = tab.open("/console/health", busy.server.token)
    _loaded(page)
    assert len(asked) == 1
    page.clock.run_for(10_500)
    _refreshed(page, 2)
    assert len(asked) == 2
    _show(page, "hidden")
    page.clock.run_for(35_000)
    assert len(asked) == 2
    _show(page, "visible")
    _refreshed(page, 3)
    assert len(asked) == 3


def test_the_keyboard_pauses_updates(busy: Plane, open_page: Callable[..., Tab]) -> None:
    page = open_page(busy.url).open("/console/health", busy.server.token)
    _loaded(page)
    page.locator("#health-pause").focus()
    page.keyboard.press("Enter")
    assert page.locator("#health-pause").inner_text() == "Resume updates"
    assert page.locator("#status").inner_text() == "Updates paused."
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert focused == "Replicas table"  # scrollable tables take the focus, to scroll by keys
