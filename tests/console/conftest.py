"""The console in a real browser: Debian's Chromium, headless, driven by Playwright.

`browser` is one Chromium per test module. `console_plane` is a real
`lictor serve` with the example policies active, a verified runtime and an
auditor credential. `open_page` gives a fresh tab (1280 px wide unless told)
that records every console error and uncaught exception; a test fails at
teardown if its page logged any. `Tab.shot` saves a screenshot under
`tests/artifacts/` (not committed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright

from lictor.datadir import hash_secret, open_data_dir
from lictor.store.base import Credential

from ..conftest import REPO, Server, free_port
from ..run.conftest import start_run  # noqa: F401  (a fixture the console tests use)
from ..sdk.conftest import Plane, govern

CHROMIUM = os.environ.get("LICTOR_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
AUDITOR_SECRET = "lictor_console-auditor-secret"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module: Playwright's sync API keeps an event loop running
    in this thread while it is open, which would break later tests' ``asyncio.run``."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


def add_auditor(data_dir: Path) -> None:
    """Give a data directory an auditor credential, before its server starts."""
    data = open_data_dir(data_dir, "console.test/log")
    try:
        data.store.add_credential(Credential("auditor-1", "auditor", hash_secret(AUDITOR_SECRET)))
    finally:
        data.close()


@pytest.fixture(scope="module")
def console_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """A real server for a module's console tests, governed as in the SDK tests."""
    data = tmp_path_factory.mktemp("console") / "data"
    add_auditor(data)
    server = Server(data, free_port()).start()
    try:
        yield govern(server)
    finally:
        server.kill()


@dataclass
class Tab:
    """A browser tab on a control plane, and the errors its page has logged."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def allow(self, text: str) -> None:
        """Expect console errors containing ``text`` (a refusal the test provokes)."""
        self.allowed.append(text)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]

    def open(self, path: str, credential: str | None = None) -> Page:
        """Go to ``path``; with ``credential``, signed in through the header form."""
        self.page.goto(self.base + path)
        if credential is not None:
            self.page.get_by_label("Credential").fill(credential)
            self.page.get_by_role("button", name="Sign in").click()
            self.page.locator("#who").wait_for()
        return self.page

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Tab]]:
    """Open tabs on a base URL; each must end with no console errors."""
    tabs: list[Tab] = []

    def open_tab(base: str, viewport: dict[str, int] | None = None) -> Tab:
        context = browser.new_context(viewport=viewport or DESKTOP)  # type: ignore[arg-type]
        tab = Tab(context.new_page(), base)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                tab.errors.append(f"console: {message.text}")

        def on_error(error: Error) -> None:
            tab.errors.append(f"uncaught: {error}")

        tab.page.on("console", on_console)
        tab.page.on("pageerror", on_error)
        tabs.append(tab)
        return tab

    yield open_tab
    errors = [error for tab in tabs for error in tab.unexpected()]
    for tab in tabs:
        tab.page.context.close()
    assert not errors, errors
