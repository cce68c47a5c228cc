"""The demo page in a real browser: play the built-in scenario on a `lictor serve --demo`
and watch every promise hold; play it again and stop it; auditors only watch."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from lictor.demo import scenario
from lictor.demo.plane import ControlPlane

from ..sdk.conftest import Plane
from .conftest import AUDITOR_SECRET, Tab, add_auditor

SCENARIO_TIMEOUT = 180_000  # ms: the whole scenario takes under a minute here


@pytest.fixture(scope="module")
def demo_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root: Path = tmp_path_factory.mktemp("demo")
    add_auditor(root / "data")
    plane = ControlPlane.start(root)
    try:
        yield plane
    finally:
        plane.stop()


def _attached(port: int) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"demo --attach {port}"], capture_output=True)
    return found.stdout.decode().split()


def test_playing_the_scenario_from_the_browser_shows_every_promise_held(
    demo_plane: ControlPlane, open_page: Callable[..., Tab]
) -> None:
    tab = open_page(demo_plane.url)
    page = tab.open("/console/demo", demo_plane.token)
    expect(page.locator("#demo-state")).to_have_attribute("data-state", "idle")
    page.get_by_role("button", name="Play the scenario").click()
    expect(page.locator("#demo-state")).to_have_attribute("data-state", "running")
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    state = page.locator("#demo-state")
    expect(state).to_have_attribute("data-state", "finished", timeout=SCENARIO_TIMEOUT)
    assert "every promise held" in state.inner_text(), page.locator("#demo-steps").inner_text()
    steps = page.locator("#demo-steps li")
    expect(steps).to_have_count(len(scenario.STEPS) + 1)
    assert steps.evaluate_all("items => items.map(i => i.dataset.status)") == ["ok"] * (
        len(scenario.STEPS) + 1
    )
    for step in (*scenario.STEPS, scenario.AUDIT):
        expect(page.locator(f"li[data-step='{step.name}']")).to_contain_text(step.promise)
    # the feed showed the log as it committed, each entry linked to its proof
    cascade = page.locator("li[data-step='revocation cascade'] .cited a").first
    assert (cascade.get_attribute("href") or "").startswith("/console/proof#index=")
    expect(page.locator("#demo-feed li").first).to_be_visible()
    assert page.locator("#demo-feed .state-revoked").count() >= 3
    tab.shot("demo-finished")


def test_the_scenario_plays_again_and_stops_on_request(
    demo_plane: ControlPlane, open_page: Callable[..., Tab]
) -> None:
    runs = demo_plane.admin("GET", "/v1/demo")["runs"]
    page = open_page(demo_plane.url).open("/console/demo", demo_plane.token)
    page.get_by_role("button", name="Play the scenario").click()
    state = page.locator("#demo-state")
    expect(state).to_contain_text(f"Playing (run {runs + 1}")  # the last run's steps are gone
    second = page.locator("li[data-step='agent spawns sub-agents']")
    expect(second).to_have_attribute("data-status", "ok", timeout=SCENARIO_TIMEOUT)
    page.get_by_role("button", name="Stop").click()
    expect(state).to_have_attribute("data-state", "stopped", timeout=30_000)
    expect(state).to_contain_text(f"run {runs + 1}")
    expect(page.locator("li[data-step='log audit']")).to_have_attribute("data-status", "stopped")
    assert _attached(demo_plane.port) == []
    # each run sets up runtimes of its own, beside the earlier runs'
    runtimes = {r["id"] for r in demo_plane.admin("GET", "/v1/runtimes")["runtimes"]}
    assert len(runtimes) == 3 * (runs + 1), (runs, runtimes)


def test_an_auditor_watches_but_cannot_play(
    demo_plane: ControlPlane, open_page: Callable[..., Tab]
) -> None:
    page = open_page(demo_plane.url).open("/console/demo", AUDITOR_SECRET)
    expect(page.locator("#read-only")).to_contain_text("only an admin")
    expect(page.get_by_role("button", name="Play the scenario")).to_be_disabled()


def test_a_server_without_the_demo_says_how_to_get_it(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    page = open_page(console_plane.url).open("/console/demo", console_plane.server.token)
    expect(page.locator("#demo-state")).to_contain_text("not started by lictor demo")
    expect(page.get_by_role("button", name="Play the scenario")).to_be_disabled()


def test_the_scenario_stops_when_its_server_dies(tmp_path: Path) -> None:
    plane = ControlPlane.start(tmp_path)
    try:
        plane.admin("POST", "/v1/demo/start")
        deadline = time.monotonic() + 30
        while not _attached(plane.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _attached(plane.port), "the scenario did not start"
        assert plane.process is not None
        plane.process.send_signal(signal.SIGKILL)  # no shutdown code runs
        plane.process.wait()
        deadline = time.monotonic() + 30
        while _attached(plane.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _attached(plane.port) == [], "the scenario outlived its server"
    finally:
        plane.stop()
