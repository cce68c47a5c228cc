"""The execution lineage explorer in a real browser, on a real server.

Trees are made through the SDK's low-level calls (each child asks with its
parent's grant), so they stay active until the test revokes them. The graph
is a canvas: tests read it through `window.lictorLineage.cy` and through the
list of executions beside it, which carries each one's state.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from playwright.sync_api import Page, expect

from ..sdk.conftest import DEPLOY, PLANNER, STAGING, Plane
from .conftest import AUDITOR_SECRET, PHONE, Tab

ANALYST = {"type": "Agent", "id": "analyst-3"}
ETL = {"type": "Agent", "id": "etl-1"}
CALL_TOOL = {"type": "Action", "id": "call_tool"}
WEB_SEARCH = {"type": "Tool", "id": "web-search"}
WAIT_MS = 15_000


def three_levels(plane: Plane) -> list[str]:
    """Root (planner-7) → child (planner-7) → grandchild (analyst-3), all active."""
    with plane.client() as client:
        root = client.request(PLANNER, DEPLOY, STAGING, ttl=600)
        child = client.request(PLANNER, DEPLOY, STAGING, parent_grant=root["grant"], ttl=600)
        grandchild = client.request(
            ANALYST, CALL_TOOL, WEB_SEARCH, parent_grant=child["grant"], ttl=600
        )
    return [reply["execution"]["id"] for reply in (root, child, grandchild)]


def drawn(page: Page, count: int) -> None:
    """Wait until the list of executions holds ``count`` items."""
    expect(page.locator("#lineage-nodes li")).to_have_count(count, timeout=WAIT_MS)


def graph(page: Page) -> dict[str, int]:
    """How many nodes, edges and cascade edges the graph holds."""
    counts: dict[str, int] = page.evaluate(
        """() => {
            const cy = window.lictorLineage.cy;
            return {nodes: cy.nodes().length, edges: cy.edges().length,
                    cascades: cy.edges('[?cascade]').length};
        }"""
    )
    return counts


def test_the_lineage_graph_shows_a_three_level_tree_and_its_cascade(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    root, child, grandchild = three_levels(console_plane)
    tab = open_page(console_plane.url)
    page = tab.open(f"/console/lineage#execution={grandchild}", console_plane.server.token)
    drawn(page, 3)
    assert graph(page) == {"nodes": 3, "edges": 2, "cascades": 0}
    items = page.locator("#lineage-nodes li")
    assert [items.nth(i).get_attribute("data-id") for i in range(3)] == [root, child, grandchild]
    for i in range(3):
        expect(items.nth(i)).to_contain_text("— active")
    labels = page.evaluate("window.lictorLineage.cy.edges().map(e => e.data('label'))")
    assert sorted(labels) == ['delegates to Agent::"analyst-3"', 'delegates to Agent::"planner-7"']
    assert page.evaluate("window.lictorLineage.cy.$(':selected').id()") == grandchild
    expect(page.locator("#lineage-details h2")).to_contain_text(grandchild)
    expect(page.locator("#lineage-live")).to_have_text("Live", timeout=WAIT_MS)

    page.evaluate("window.notReloaded = true")
    console_plane.revoke(root)
    for i in range(3):
        expect(items.nth(i)).to_have_attribute("data-state", "revoked", timeout=WAIT_MS)
        expect(items.nth(i)).to_contain_text("— revoked")
    page.wait_for_function(
        "window.lictorLineage.cy.nodes('[state = \"revoked\"]').length === 3", timeout=WAIT_MS
    )
    assert graph(page)["cascades"] == 2
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#lineage-details")).to_contain_text(f"ancestor_revoked:{root}")
    tab.shot("lineage-cascade")


def test_a_principal_search_draws_the_trees_of_its_roots(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    with console_plane.client() as client:
        first = client.request(ETL, CALL_TOOL, WEB_SEARCH, ttl=600)
        under = client.request(ANALYST, CALL_TOOL, WEB_SEARCH, parent_grant=first["grant"])
        second = client.request(ETL, CALL_TOOL, WEB_SEARCH, ttl=600)
    ids = {r["execution"]["id"] for r in (first, under, second)}
    tab = open_page(console_plane.url)
    page = tab.open("/console/lineage", console_plane.server.token)
    page.get_by_label("Search by").select_option("principal")
    page.get_by_label("Principal").fill("Agent::etl-1")
    page.get_by_role("button", name="Show lineage").click()
    drawn(page, 3)
    listed = page.locator("#lineage-nodes li")
    assert {listed.nth(i).get_attribute("data-id") for i in range(3)} == ids
    assert page.locator("#lineage-nodes li.match").count() == 2
    assert graph(page) == {"nodes": 3, "edges": 1, "cascades": 0}
    assert page.evaluate("location.hash") == "#principal=" + quote('Agent::"etl-1"', safe="")
    expect(page.locator("#lineage-summary")).to_contain_text("2 roots")
    tab.shot("lineage-principal")


def test_a_node_links_to_the_proof_of_each_transition(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    root, child, _ = three_levels(console_plane)
    console_plane.revoke(child)
    page = open_page(console_plane.url).open(
        f"/console/lineage#root={root}", console_plane.server.token
    )
    drawn(page, 3)
    page.locator(f'#lineage-nodes li[data-id="{child}"] button').click()
    details = page.locator("#lineage-details")
    expect(details.locator("h2")).to_contain_text(child)
    indexes = [t["log_index"] for t in console_plane.execution(child)["transitions"]]
    links = details.get_by_role("link", name="proof of log entry")
    expect(links).to_have_count(len(indexes))
    hrefs = [links.nth(i).get_attribute("href") for i in range(len(indexes))]
    assert hrefs == [f"/console/proof#index={i}" for i in indexes]
    proofs = details.get_by_role("link", name="Proofs of this execution")
    assert proofs.get_attribute("href") == f"/console/proof#execution={child}"


def test_the_list_works_with_a_keyboard_and_fits_a_phone(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    root, child, grandchild = three_levels(console_plane)
    tab = open_page(console_plane.url, PHONE)
    page = tab.open(f"/console/lineage#execution={root}", console_plane.server.token)
    drawn(page, 3)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the lineage page is {overflow} px wider than a phone"
    page.locator(f'#lineage-nodes li[data-id="{root}"] button').focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#lineage-details h2")).to_contain_text(child)
    assert page.evaluate("window.lictorLineage.cy.$(':selected').id()") == child
    current = page.locator('#lineage-nodes button[aria-current="true"]')
    expect(current).to_contain_text(child)
    zoom = page.evaluate("window.lictorLineage.cy.zoom()")
    page.get_by_role("button", name="Zoom in").click()
    assert page.evaluate("window.lictorLineage.cy.zoom()") > zoom
    page.get_by_role("button", name="Fit").click()
    assert grandchild in page.locator("#lineage-nodes").inner_text()
    tab.shot("lineage-phone")


def test_an_auditor_sees_the_lineage(console_plane: Plane, open_page: Callable[..., Tab]) -> None:
    _, child, _ = three_levels(console_plane)
    page = open_page(console_plane.url).open(f"/console/lineage#execution={child}", AUDITOR_SECRET)
    drawn(page, 3)
    assert page.locator("#who").inner_text() == "auditor-1 (auditor)"


def test_a_search_for_no_such_execution_says_so(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    tab = open_page(console_plane.url)
    tab.allow("404")
    page = tab.open("/console/lineage#execution=not-an-id", console_plane.server.token)
    expect(page.locator("#lineage-error")).to_contain_text("not an execution id")
    missing = "ex_" + "a" * 26
    page.get_by_label("Execution id").fill(missing)
    page.get_by_role("button", name="Show lineage").click()
    expect(page.locator("#lineage-error")).to_contain_text("no execution")
    assert page.locator("#lineage-nodes li").count() == 0


def test_signed_out_the_page_asks_to_sign_in(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    page = open_page(console_plane.url).open("/console/lineage#execution=ex_x")
    expect(page.locator("#need-sign-in")).to_contain_text("execution lineage")
    assert page.locator("#lineage-graph").count() == 0
