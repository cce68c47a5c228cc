"""The steps of `lictor demo`, one function each, in the example policies' world.

Every step drives real work: `lictor run` processes (`lictor.demo.work`) or
SDK calls from this process, as runtime ``edge-<region>`` of the three
regions. Each checks what the promise says would happen, through exit
codes, marker files and the control plane's own record (the admin API),
and cites the log entries it saw, for the audit. The rules used are the
example policies as written (``examples/policies``), plus one demo-only
deploy freeze pushed by `policy_change`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lictor.cli.run import DENIED, LEASE_LOST, REVOKED
from lictor.demo.plane import EXAMPLES
from lictor.demo.proxy import Link
from lictor.demo.stage import Checks, Cited, Stage
from lictor.demo.work import gone, lictor_run, record_exit, shell
from lictor.errors import DeniedError, LictorError
from lictor.sdk import Client, current_execution, governed, verify_receipt

PLANNER = 'Agent::"planner-7"'
ANALYST = 'Agent::"analyst-3"'
ETL = 'Agent::"etl-1"'
STAGING = 'Service::"payments-api-staging"'
CUSTOMERS_EU = 'Dataset::"customers-eu"'
CLICKSTREAM_US = 'Dataset::"clickstream-us"'
CALL_TOOL = 'Action::"call_tool"'
SEARCH = 'Tool::"web-search"'
REFUND = 'Tool::"refund"'
EU, US, AP = "eu-west-1", "us-east-1", "ap-southeast-2"
FREEZE = (
    "// Demo only: a deploy freeze, activated while a deployment runs.\n"
    '@id("deploy-freeze")\n'
    'forbid (principal, action == Action::"deploy", resource);\n'
)
SILENT_TTL_S = 4
WRITE_ID = 'echo "$LICTOR_EXECUTION_ID" >"$DEMO_WORK/$0"'
LOG_INDEX = re.compile(r"log index (\d+)")


def allowed_work(stage: Stage, checks: Checks) -> str:
    """planner-7 deploys its team's staging service with `lictor run`."""
    eu = stage.runtime(EU)
    argv = [*lictor_run("deploy", STAGING, PLANNER), *shell(f"{WRITE_ID}; sleep 0.2", "allowed")]
    checks.code(stage.works.run(eu, stage.plane.url, argv), 0, "lictor run")
    execution_id = (stage.directory / "allowed").read_text().strip()
    view = stage.plane.execution(execution_id)
    _ended(view, checks, "completed", "succeeded")
    checks.cite(view)
    return f"deploy by planner-7 on {eu.name}: {execution_id} ran; {_history(view)}"


def sub_agents(stage: Stage, checks: Checks) -> str:
    """An SDK agent spawns two governed sub-agents, each running a real subprocess."""
    with Client(stage.plane.url, stage.runtime(EU).credential) as client:
        search = _search_agent(client)
        with client.execution(PLANNER, CALL_TOOL, SEARCH, root=True) as agent:
            children = [search(topic) for topic in ("refund policy", "chargeback rules")]
    root = stage.plane.execution(agent.id)
    _ended(root, checks, "completed", "succeeded")
    checks.cite(root)
    for child_id, output in children:
        view = stage.plane.execution(child_id)
        e = view["execution"]
        checks.that(e["parent_id"] == agent.id and e["depth"] == 1, f"{child_id} is no child")
        checks.that(output.startswith("searched:"), f"{child_id} printed {output!r}")
        _ended(view, checks, "completed", "succeeded")
        checks.cite(view)
    ids = ", ".join(child for child, _ in children)
    return f"agent {agent.id} (depth 0) -> sub-agents {ids} (depth 1), each ran `sh` and completed"


def _search_agent(client: Client) -> Callable[[str], tuple[str, str]]:
    @governed(client, principal=PLANNER, action=CALL_TOOL, resource=SEARCH)
    def search(topic: str) -> tuple[str, str]:
        handle = current_execution()
        if handle is None:
            raise LictorError("a governed call ran without its execution")
        done = subprocess.run(
            ["sh", "-c", 'echo "searched: $0"', topic], capture_output=True, text=True, check=True
        )
        handle.check()
        return handle.id, done.stdout.strip()

    return search


def denied_action(stage: Stage, checks: Checks) -> str:
    """A sub-agent asks to call a payment tool: denied by lineage, with a verifiable receipt."""
    marker = stage.directory / "refund-ran"
    with (
        Client(stage.plane.url, stage.runtime(EU).credential) as client,
        client.execution(PLANNER, CALL_TOOL, SEARCH, root=True) as agent,
    ):
        denied = _try_refund(client, marker)
    if denied is None:
        checks.that(False, "the delegated refund was allowed")
        return ""
    reasons = ", ".join(denied.reasons)
    checks.that(
        denied.reason_code == "denied_by_policy" and reasons == "no-delegated-payments",
        f"denied for {denied.reason_code} ({reasons})",
    )
    checks.that(not marker.exists(), "the refund command ran")
    verified = verify_receipt(denied.receipt or {}, stage.vkey)
    view = stage.plane.execution(str((denied.execution or {}).get("id")))
    checks.that(view["execution"]["parent_id"] == agent.id, "the denial is not the agent's child")
    checks.cite(view)
    return (
        f"sub-agent of {agent.id} asked for Tool::refund at depth 1: {denied.reason_code}"
        f" ({reasons}); its command never ran; receipt of log {verified.index} verified offline"
    )


def _try_refund(client: Client, marker: Path) -> DeniedError | None:
    try:
        with client.execution(PLANNER, CALL_TOOL, REFUND):
            subprocess.run(["sh", "-c", 'echo refunded > "$0"', str(marker)], check=True)
    except DeniedError as e:
        return e
    return None


def data_residency(stage: Stage, checks: Checks) -> str:
    """analyst-3 reads an EU dataset from each region's runtime: only the EU one runs."""
    read = lictor_run("read", CUSTOMERS_EU, ANALYST)
    runs = {
        r: stage.works.run(
            stage.runtime(r), stage.plane.url, [*read, *shell(WRITE_ID, f"read-{r}")]
        )
        for r in (EU, US, AP)
    }
    checks.code(runs.pop(EU), 0, f"the read on {EU}")
    view = stage.plane.execution((stage.directory / f"read-{EU}").read_text().strip())
    _ended(view, checks, "completed", "succeeded")
    checks.cite(view)
    ran = f"ran on {EU} ({_history(view)})"
    denials = []
    for region, done in runs.items():
        checks.code(done, DENIED, f"the read on {region}")
        checks.that("data-stays-in-region" in done.stderr, f"{region}: {done.stderr.strip()}")
        checks.that(not (stage.directory / f"read-{region}").exists(), f"it ran on {region}")
        found = LOG_INDEX.search(done.stderr)
        if found is None:
            checks.that(False, f"no log index in {done.stderr.strip()!r}")
            continue
        checks.cited.append(Cited(int(found.group(1)), None, "denied"))
        denials.append(f"{region} (log {found.group(1)})")
    return (
        f"read of customers-eu ({EU}) {ran}; denied on {', '.join(denials)}:"
        " data-stays-in-region, exit 77, never started"
    )


def cascade(stage: Stage, checks: Checks) -> str:
    """lictor run in lictor run in lictor run; revoking the root stops all three,
    and each `lictor run` exits with `REVOKED` (whether its own revocation or its
    parent's SIGTERM reaches it first)."""
    ap, d = stage.runtime(AP), stage.directory
    leaf = f"{WRITE_ID}; sleep 60 & wait"
    argv = [*lictor_run("deploy", STAGING, PLANNER), *record_exit(d / "level-2.exit")]
    argv += [*lictor_run("deploy", STAGING), *record_exit(d / "level-3.exit")]
    argv += [*lictor_run("deploy", STAGING), *shell(leaf, "leaf")]
    work = stage.works.start(ap, stage.plane.url, argv)
    leaf_id = stage.works.marker("leaf", work, timeout=30)
    lineage = stage.plane.admin("GET", f"/v1/executions/{leaf_id}/lineage")
    chain = [a["execution"]["id"] for a in lineage["ancestors"]] + [leaf_id]
    if not checks.that(len(chain) == 3, f"the leaf's lineage is {chain}"):
        return ""
    reply = stage.plane.admin("POST", f"/v1/executions/{chain[0]}/revoke", {"reason": "demo"})
    sent = time.monotonic()
    done = work.finish()
    took = time.monotonic() - sent
    checks.that(set(reply["revoked"]) == set(chain), f"revoked {reply['revoked']}, not {chain}")
    codes = [done.code, *(_exit_code(d / f"level-{n}.exit") for n in (2, 3))]
    last = (done.stderr.strip().splitlines() or [""])[-1]
    checks.that(codes == [REVOKED] * 3, f"the three lictor runs exited {codes}: {last}")
    views = [stage.plane.execution(execution_id) for execution_id in chain]
    for view in views:
        _ended(view, checks, "revoked")
        checks.cite(view)
    indexes = [view["transitions"][-1]["log_index"] for view in views]
    return (
        f"on {ap.name}: {' > '.join(chain)}; revoking the root revoked all 3"
        f" (log {_join(indexes)}); each lictor run learned of its own revocation and"
        f" exited {REVOKED}, all within {took:.2f} s"
    )


def _exit_code(path: Path) -> int | None:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text else None


def silent_runtime(stage: Stage, checks: Checks) -> str:
    """The US runtime's link is cut mid-run: the work stops before its lease ends."""
    us, link = stage.runtime(US), Link(stage.plane.port)
    line = 'echo "$LICTOR_EXECUTION_ID $$" > "$DEMO_WORK/silent"; exec sleep 60'
    argv = [*lictor_run("write", CLICKSTREAM_US, ETL, ttl=SILENT_TTL_S), *shell(line)]
    work = stage.works.start(us, link.url, argv)
    execution_id, pid = stage.works.marker("silent", work).split()
    time.sleep(SILENT_TTL_S / 2)  # renewals go through the link first
    link.cut()
    stopped_ms = gone(int(pid), timeout=SILENT_TTL_S + 5)
    done = work.finish()
    checks.code(done, LEASE_LOST, "lictor run")
    lease_end = stage.plane.execution(execution_id)["execution"]["lease"]["expires_at_ms"]
    early = lease_end - stopped_ms
    checks.that(early > 0, f"the work ran {-early} ms past its lease")
    view = _await_state(stage, execution_id, "expired", timeout=SILENT_TTL_S + 5)
    expired = _ended(view, checks, "expired")
    checks.cite(view)
    return (
        f"write by etl-1 on {us.name} ({execution_id}, ttl {SILENT_TTL_S} s): link cut;"
        f" the work stopped {early} ms before its lease ended, lictor run exited"
        f" {done.code} (lease lost); the control plane wrote {expired}"
    )


def _await_state(stage: Stage, execution_id: str, state: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = stage.plane.execution(execution_id)
        if view["execution"]["state"] == state or time.monotonic() > deadline:
            return view
        time.sleep(0.1)


def policy_change(stage: Stage, checks: Checks) -> str:
    """A deploy freeze is activated while a deployment runs: the deployment is revoked."""
    argv = [*lictor_run("deploy", STAGING, PLANNER), *shell(f"{WRITE_ID}; exec sleep 60", "frozen")]
    work = stage.works.start(stage.runtime(EU), stage.plane.url, argv)
    execution_id = stage.works.marker("frozen", work)
    version = stage.plane.push(_freeze_policies(stage.directory))
    try:
        activated = stage.plane.activate(version)
        done = work.finish()
    finally:
        stage.plane.activate(stage.setup.policy_version)
    checks.that(execution_id in activated["revoked"], f"{execution_id} not revoked by {version}")
    checks.code(done, REVOKED, "lictor run")
    view = stage.plane.execution(execution_id)
    reason = view["execution"]["reason"]
    checks.that(reason == f"policy_changed:{version}", f"{execution_id} revoked for {reason}")
    _ended(view, checks, "revoked")
    checks.cite(view)
    return (
        f"freeze {version[:12]} activated (log {activated['log_index']}) while {execution_id}"
        f" deployed: revoked (policy_changed), lictor run exited {done.code};"
        " example policies active again"
    )


def _freeze_policies(directory: Path) -> Path:
    """A copy of the example policies plus the deploy freeze."""
    frozen = directory / "policies-freeze"
    shutil.copytree(EXAMPLES / "policies", frozen)
    (frozen / "freeze.cedar").write_text(FREEZE)
    return frozen


def _ended(view: dict[str, Any], checks: Checks, state: str, outcome: str | None = None) -> str:
    """Check an execution ended in ``state`` (with ``outcome``); "<state> at log N"."""
    e = view["execution"]
    checks.that(
        e["state"] == state and (outcome is None or e["outcome"] == outcome),
        f"{e['id']} is {e['state']} {e['outcome'] or ''}, not {state} {outcome or ''}".strip(),
    )
    last = view["transitions"][-1]
    return f"{last['state']} at log {last['log_index']}"


def _history(view: dict[str, Any]) -> str:
    """An execution's transitions with their log indexes: "log 9 active, 10 completed"."""
    steps = [f"{t['log_index']} {t['state']}" for t in view["transitions"]]
    return "log " + ", ".join(steps)


def _join(indexes: list[int]) -> str:
    return ", ".join(str(i) for i in indexes)
