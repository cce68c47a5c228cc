"""The governance console in a real browser: live executions, revocation that stops a
real `lictor run`, read-only auditors, policy diff and activation after a backtest."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from playwright.sync_api import expect

from lictor.policydir import load_policy_dir
from lictor.service.policies import source_json

from ..run.conftest import Run, wait_dead
from ..sdk.conftest import POLICIES, Plane
from .conftest import AUDITOR_SECRET, Tab

REVOKED = 86
DEPLOY = 'Action::"deploy"'
PLANNER = 'Agent::"planner-7"'
STAGING = 'Service::"payments-api-staging"'
LIVE_TIMEOUT = 10_000  # ms: pushed from the events stream, well within this


def test_revoking_from_the_console_stops_a_real_process_live(
    console_plane: Plane, open_page: Callable[..., Tab], start_run: Callable[..., Run]
) -> None:
    tab = open_page(console_plane.url)
    page = tab.open("/console/", console_plane.server.token)
    expect(page.locator("#live")).to_have_text("live", timeout=LIVE_TIMEOUT)
    run = start_run(console_plane)
    pids = run.pids(3)
    # the new execution appears without a reload: pushed by the events stream
    row = page.locator("#executions-body tr[data-state='active']")
    expect(row).to_have_count(1, timeout=LIVE_TIMEOUT)
    execution_id = row.get_attribute("data-id")
    assert execution_id

    page.locator(f"button[data-execution='{execution_id}']").click()
    page.get_by_role("button", name="Revoke…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("no active descendants")
    dialog.get_by_label("Reason").fill("stopped from the console")
    dialog.get_by_role("button", name="Revoke").click()

    code, _, err = run.finish()
    assert code == REVOKED, err
    assert wait_dead(pids, 10) == []
    revoked = page.locator(f"#executions-body tr[data-id='{execution_id}']")
    expect(revoked).to_have_attribute("data-state", "revoked", timeout=LIVE_TIMEOUT)
    expect(page.locator("#transitions")).to_contain_text("stopped from the console")
    tab.shot("governance-revoked")
    view = console_plane.execution(execution_id)
    assert view["execution"]["state"] == "revoked"
    assert view["execution"]["reason"] == "stopped from the console"


def test_an_auditor_sees_everything_and_cannot_revoke(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    with console_plane.client() as client:
        granted = client.request(PLANNER, DEPLOY, STAGING, ttl=120)
    execution_id = granted["execution"]["id"]
    tab = open_page(console_plane.url)
    tab.allow("403")
    page = tab.open("/console/", AUDITOR_SECRET)
    page.locator(f"button[data-execution='{execution_id}']").click()
    expect(page.locator("#read-only")).to_contain_text("only an admin may revoke")
    expect(page.get_by_role("button", name="Revoke…")).to_have_count(0)
    expect(page.locator("#transitions")).to_contain_text("active")
    # the server refuses it too, whatever the page shows
    status = page.evaluate(
        """async (id) => (await fetch(`/v1/executions/${id}/revoke`, {method: 'POST',
            headers: {Authorization: 'Bearer ' + sessionStorage.getItem('lictor.credential'),
                      'Content-Type': 'application/json'},
            body: JSON.stringify({reason: 'auditor'})})).status""",
        execution_id,
    )
    assert status == 403
    assert console_plane.execution(execution_id)["execution"]["state"] == "active"
    expect(page.locator("#activate")).to_have_count(0)
    tab.shot("governance-auditor")


def test_filters_narrow_the_live_list(console_plane: Plane, open_page: Callable[..., Tab]) -> None:
    with console_plane.client() as client:
        client.request(PLANNER, DEPLOY, STAGING, ttl=120)
    page = open_page(console_plane.url).open("/console/", console_plane.server.token)
    page.get_by_label("State").select_option("denied")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#executions-body tr[data-state='active']")).to_have_count(0)
    page.get_by_label("State").select_option("active")
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("#executions-body tr")
    expect(rows.first).to_have_attribute("data-state", "active")
    states = rows.evaluate_all("rows => rows.map(r => r.dataset.state)")
    assert states and set(states) == {"active"}


def test_activation_shows_the_diff_and_a_backtest_first(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    with console_plane.client() as client:
        granted = client.request(PLANNER, DEPLOY, STAGING, ttl=120)
    source = source_json(load_policy_dir(POLICIES))
    before = console_plane.admin("GET", "/v1/policies")["active"]
    source["policies"]["freeze.cedar"] = (
        '@id("deploy-freeze")\nforbid (principal, action == Action::"deploy", resource);\n'
    )
    version = console_plane.admin("POST", "/v1/policies", {"source": source})["version"]

    tab = open_page(console_plane.url)
    page = tab.open("/console/", console_plane.server.token)
    page.locator(f"#policy-versions tr[data-version='{version}'] button").click()
    diff = page.locator("#policy-diff")
    expect(diff.locator("ins")).to_contain_text('forbid (principal, action == Action::"deploy"')
    expect(page.locator("#policy-view")).to_contain_text("line(s) added, 0 removed")
    page.get_by_role("button", name="Activate…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator("#backtest-result")).to_contain_text("would change")
    expect(dialog.locator("#backtest-changes")).to_contain_text(granted["execution"]["id"])
    expect(dialog.locator("#backtest-changes")).to_contain_text("deny (deploy-freeze)")
    tab.shot("governance-backtest")
    assert console_plane.admin("GET", "/v1/policies")["active"] == before  # nothing yet
    dialog.get_by_role("button", name="Activate").click()
    expect(page.locator(f"#policy-versions tr[data-version='{version}']")).to_contain_text("active")
    assert console_plane.admin("GET", "/v1/policies")["active"] == version
    # activation re-verified the running execution under the freeze, and revoked it
    view = console_plane.execution(granted["execution"]["id"])
    assert view["execution"]["state"] == "revoked"
    console_plane.admin("POST", f"/v1/policies/{before}/activate")


def test_signed_out_the_console_asks_for_a_credential(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    page = open_page(console_plane.url).open("/console/")
    expect(page.locator("#need-sign-in")).to_contain_text("Sign in")
    assert httpx.get(console_plane.url + "/v1/executions").status_code == 401
