"""Every console page: loads without console errors, fits 1280 px and a phone, has
labels and keyboard access, is served with a strict CSP; a screenshot of each."""

from __future__ import annotations

import json
from collections.abc import Callable
from hashlib import sha256

import httpx
import pytest
from playwright.sync_api import expect

from lictor.server.console import PAGES, STATIC

from ..sdk.conftest import Plane
from .conftest import AUDITOR_SECRET, DESKTOP, PHONE, Tab

PATHS = {name or "governance": f"/console/{name}" for name in PAGES}


@pytest.mark.parametrize("name", sorted(PATHS))
@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_page_loads_signed_in_and_fits(
    console_plane: Plane, open_page: Callable[..., Tab], name: str, width: str
) -> None:
    tab = open_page(console_plane.url, DESKTOP if width == "desktop" else PHONE)
    page = tab.open(PATHS[name], console_plane.server.token)
    page.wait_for_load_state("load")
    page.wait_for_timeout(1000)  # live pages keep a stream open: the network is never idle
    assert page.locator("#who").inner_text() == "admin (admin)"
    assert page.locator("h1").count() == 1
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"{name} is {overflow} px wider than a {width} screen"
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden' && !e.labels?.length && !e.getAttribute('aria-label'))
            .map(e => e.outerHTML)"""
    )
    assert unlabelled == []
    tab.shot(f"{name}-{width}")


def test_keyboard_reaches_the_navigation(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    page = open_page(console_plane.url).open("/console/proof")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    seen = []
    for _ in range(7):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.textContent"))
    assert seen == ["Lictor", "Governance", "Tools", "Lineage", "Proof viewer", "Health", "Demo"]
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # follows the Health link
    page.wait_for_url("**/console/health")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the skip link
    assert page.evaluate("document.activeElement.id") == "main"


def test_signing_in_with_a_wrong_credential_says_so(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    tab = open_page(console_plane.url)
    tab.allow("401")
    page = tab.open("/console/")
    page.get_by_label("Credential").fill("lictor_not-a-credential")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-error")).to_contain_text("not accepted")
    page.get_by_label("Credential").fill(AUDITOR_SECRET)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text("auditor-1 (auditor)")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Credential").wait_for()


def test_console_responses_carry_a_strict_policy(console_plane: Plane) -> None:
    for path in [*PATHS.values(), "/console/static/common.js"]:
        r = httpx.get(console_plane.url + path)
        assert r.status_code == 200, path
        policy = r.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert r.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(console_plane.url + "/console").status_code == 308


@pytest.mark.parametrize(
    "path",
    [
        "/console/nope",
        "/console/static/../pages/proof.html",
        "/console/static/%2e%2e/%2e%2e/datadir.py",
        "/console/static/vendor/missing.js",
        "/console/static/",
        "/console/static/a%00b.js",
    ],
)
def test_nothing_outside_the_console_files_is_served(console_plane: Plane, path: str) -> None:
    r = httpx.get(console_plane.url + path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_vendored_libraries_are_the_recorded_npm_files() -> None:
    manifest = json.loads((STATIC / "vendor" / "vendor.json").read_text())
    vendored = set()
    for package in manifest["packages"]:
        assert package["version"] and package["license"]
        assert (STATIC / "vendor" / package["license_file"]).is_file()
        for name, facts in package["files"].items():
            digest = sha256((STATIC / "vendor" / name).read_bytes()).hexdigest()
            assert digest == facts["sha256"], name
            vendored.add(name)
    on_disk = {p.name for p in (STATIC / "vendor").iterdir()}
    assert on_disk - vendored == {"vendor.json"} | {p["license_file"] for p in manifest["packages"]}


def test_signed_out_only_the_proof_viewer_and_public_log_reads_answer(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    tab = open_page(console_plane.url)
    tab.allow("401")
    for name in ("governance", "tools", "lineage", "health", "demo"):
        page = tab.open(PATHS[name])
        page.locator("#need-sign-in").wait_for()
        assert "Sign in" in page.locator("#need-sign-in").inner_text()
    page = tab.open("/console/proof")
    page.wait_for_load_state("load")
    assert page.locator("#need-sign-in").count() == 0
    statuses = page.evaluate(
        """async (paths) => Object.fromEntries(await Promise.all(paths.map(async p => {
              const r = await fetch(p); await r.body?.cancel(); return [p, r.status]; })))""",
        [
            "/v1/executions",
            "/v1/policies",
            "/v1/runtimes",
            "/v1/health",
            "/v1/demo",
            "/v1/events",
            "/v1/session",
            "/v1/entities",
            "/v1/credentials",
            "/v1/tools",
            "/v1/log/key",
            "/v1/log/checkpoint",
            "/v1/log/entries/0",
            "/v1/log/proof/inclusion?index=0",
            "/log/checkpoint",
        ],
    )
    public = {p for p in statuses if "/log/" in p}
    assert {p: s for p, s in statuses.items() if p in public} == dict.fromkeys(public, 200)
    assert {p: s for p, s in statuses.items() if p not in public} == {
        p: 401 for p in statuses if p not in public
    }
