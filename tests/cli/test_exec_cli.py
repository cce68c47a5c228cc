"""`lictor exec` (and `policy activate` revoking) against a real server over HTTP."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lictor.cli.main import main

from ..conftest import REPO

POLICIES = REPO / "examples" / "policies"
ENTITIES = REPO / "examples" / "entities.json"
PLANNER = 'Agent::"planner-7"'
COLUMNS = ("id", "state", "principal", "action", "resource", "runtime")


def cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@dataclass
class Plane:
    """A server with the example policies active and a verified runtime ``edge-1``."""

    url: str
    runtime_secret: str

    def request(self, resource: str = "payments-api-staging", parent: Any = None) -> Any:
        """A new execution of planner-7 deploying ``resource``; its reply (with its grant)."""
        body: dict[str, Any] = {
            "principal": {"type": "Agent", "id": "planner-7"},
            "action": {"type": "Action", "id": "deploy"},
            "resource": {"type": "Service", "id": resource},
        }
        if parent is not None:
            body["parent_grant"] = parent["grant"]
        headers = {"Authorization": f"Bearer {self.runtime_secret}"}
        r = httpx.post(self.url + "/v1/executions", json=body, headers=headers)
        assert r.status_code in (201, 403), r.text
        return r.json()


@pytest.fixture
def plane(serve: Callable[..., Any], capsys: Any, monkeypatch: pytest.MonkeyPatch) -> Plane:
    server = serve()
    monkeypatch.setenv("LICTOR_URL", server.url)
    monkeypatch.setenv("LICTOR_CREDENTIAL", server.token)
    version = cli(capsys, "policy", "push", str(POLICIES))[1].split()[1]
    assert cli(capsys, "entity", "put", str(ENTITIES))[0] == 0
    assert cli(capsys, "policy", "activate", version)[0] == 0
    code, out, _ = cli(capsys, "runtime", "add", "edge-1", "--region", "eu", "--cluster", "c1")
    assert code == 0
    secret = out.split("credential (shown once): ")[1].strip()
    r = httpx.post(
        server.url + "/v1/runtimes/edge-1/heartbeat",
        json={"attestation": {"state": "verified"}},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert r.status_code == 200, r.text
    return Plane(server.url, secret)


def ids(*replies: Any) -> list[str]:
    return [r["execution"]["id"] for r in replies]


def test_list_filters_and_prints_a_table(plane: Plane, capsys: Any) -> None:
    root = plane.request()
    child = plane.request(parent=root)
    denied = plane.request("payments-api")  # planner-7 may not deploy to production
    assert denied["execution"]["state"] == "denied"
    code, out, _ = cli(capsys, "exec", "list")
    header, *rows = out.splitlines()
    assert code == 0 and header.split() == [c.upper() for c in COLUMNS]
    assert [row.split()[0] for row in rows] == sorted(ids(root, child, denied))
    row = next(r for r in rows if r.startswith(root["execution"]["id"]))
    staging = 'Service::"payments-api-staging"'
    expected = [root["execution"]["id"], "active", PLANNER, 'Action::"deploy"', staging, "edge-1"]
    assert row.split() == expected
    code, out, _ = cli(capsys, "exec", "list", "--state", "denied", "--principal", PLANNER)
    assert [row.split()[0] for row in out.splitlines()[1:]] == ids(denied)
    code, out, _ = cli(capsys, "exec", "list", "--action", "deploy", "--runtime", "edge-1")
    assert len(out.splitlines()) == 4
    code, out, _ = cli(capsys, "exec", "list", "--principal", 'Agent::"nobody"')
    assert (code, out) == (0, "")
    code, out, err = cli(capsys, "exec", "list", "--limit", "2", "--json")
    page = json.loads(out)
    assert len(page["executions"]) == 2 and page["next"] and err == ""
    code, out, err = cli(capsys, "exec", "list", "--limit", "2")
    assert f"--after {page['next']}" in err
    code, out, _ = cli(capsys, "exec", "list", "--after", page["next"], "--json")
    assert len(json.loads(out)["executions"]) == 1


def test_show_prints_every_transition_with_its_log_index(plane: Plane, capsys: Any) -> None:
    root = plane.request()
    execution_id = root["execution"]["id"]
    code, out, _ = cli(capsys, "exec", "show", execution_id)
    assert code == 0
    assert f"execution  {execution_id}\n" in out and "state      active\n" in out
    assert "decision   allow by team-deploys-own-staging\n" in out
    index = root["transitions"][-1]["log_index"]
    assert f"  #{index:<6} " in out and out.rstrip().endswith("active")
    cli(capsys, "exec", "revoke", execution_id, "--reason", "operator says stop")
    view = json.loads(cli(capsys, "exec", "show", execution_id, "--json")[1])
    assert [t["state"] for t in view["transitions"]][-1] == "revoked"
    out = cli(capsys, "exec", "show", execution_id)[1]
    revoked_at = view["transitions"][-1]["log_index"]
    assert f"  #{revoked_at:<6} " in out and out.rstrip().endswith("operator says stop")


def test_lineage_prints_a_tree_and_revoke_cascades(plane: Plane, capsys: Any) -> None:
    root = plane.request()
    child = plane.request(parent=root)
    grandchild = plane.request(parent=child)
    other = plane.request()
    root_id, child_id, grandchild_id = ids(root, child, grandchild)
    code, out, _ = cli(capsys, "exec", "lineage", child_id)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[0].startswith(f"{root_id}  active  {PLANNER} ")
    assert lines[1].startswith(f"  {child_id}  active") and lines[1].endswith("<- this")
    assert lines[2].startswith(f"    {grandchild_id}  active")
    tree = json.loads(cli(capsys, "exec", "lineage", child_id, "--json")[1])
    assert ids(*tree["ancestors"]) == [root_id] and ids(*tree["descendants"]) == [grandchild_id]
    assert tree["execution"]["execution"]["id"] == child_id

    code, out, _ = cli(capsys, "exec", "revoke", child_id, "--reason", "runaway")
    assert code == 0 and out.splitlines() == [
        "revoked 2 execution(s):",
        f"  {child_id}",
        f"  {grandchild_id}",
    ]
    code, out, _ = cli(capsys, "exec", "list", "--state", "revoked")
    assert [row.split()[0] for row in out.splitlines()[1:]] == sorted([child_id, grandchild_id])
    reply = json.loads(cli(capsys, "exec", "revoke", root_id, "--reason", "done", "--json")[1])
    assert reply["revoked"] == [root_id] and reply["execution"]["state"] == "revoked"
    assert "active" in cli(capsys, "exec", "show", ids(other)[0])[1]


def test_errors_go_to_stderr_with_their_code(plane: Plane, capsys: Any) -> None:
    execution_id = ids(plane.request())[0]
    assert cli(capsys, "exec", "revoke", execution_id, "--reason", "once")[0] == 0
    code, out, err = cli(capsys, "exec", "revoke", execution_id, "--reason", "twice")
    assert (code, out) == (1, "") and err.startswith("lictor: invalid_transition:")
    for argv in (("show", "exec_nope"), ("lineage", "exec_nope")):
        code, out, err = cli(capsys, "exec", *argv)
        assert (code, out) == (1, "") and err.startswith("lictor: not_found:"), argv
    code, _, err = cli(capsys, "exec", "list", "--principal", "planner-7")
    assert code == 1 and err.startswith("lictor: invalid_request:")


def test_activating_a_stricter_version_revokes_and_prints_ids(
    plane: Plane, tmp_path: Path, capsys: Any
) -> None:
    staging = plane.request()
    stricter = tmp_path / "stricter"
    shutil.copytree(POLICIES, stricter)
    (stricter / "deploy.cedar").write_text("// nobody deploys\n")
    version = cli(capsys, "policy", "push", str(stricter))[1].split()[1]
    code, out, _ = cli(capsys, "policy", "activate", version)
    assert code == 0 and out.splitlines()[1:] == [
        "revoked 1 active execution(s):",
        f"  {staging['execution']['id']}",
    ]
    state = json.loads(cli(capsys, "exec", "show", ids(staging)[0], "--json")[1])
    assert state["execution"]["state"] == "revoked"
    assert state["execution"]["reason"] == f"policy_changed:{version}"


def test_replay_and_backtest(plane: Plane, tmp_path: Path, capsys: Any) -> None:
    allowed = plane.request()
    denied = plane.request(resource="payments-api")
    code, out, _ = cli(capsys, "replay", ids(allowed)[0])
    assert code == 0 and out.splitlines()[-1] == "identical" and "allow under" in out
    assert cli(capsys, "replay", ids(denied)[0])[0] == 0
    code, out, _ = cli(capsys, "policy", "backtest", str(POLICIES))
    assert code == 0 and "0 recorded decision(s) would change" in out
    stricter = tmp_path / "stricter"
    shutil.copytree(POLICIES, stricter)
    (stricter / "deploy.cedar").write_text("// nobody deploys\n")
    code, out, _ = cli(capsys, "policy", "backtest", str(stricter), "--json")
    changed = json.loads(out)["changed"]
    assert code == 0 and [c["execution"] for c in changed] == ids(allowed)
    code, out, _ = cli(
        capsys, "policy", "backtest", str(stricter), "--since", "2999-01-01T00:00:00Z"
    )
    assert code == 0 and "0 recorded decision(s)" in out
    code, _, err = cli(capsys, "policy", "backtest", str(stricter), "--since", "yesterday")
    assert code == 1 and "lictor: invalid_request:" in err


def test_principal_and_runtime_revoke(plane: Plane, capsys: Any) -> None:
    mine = plane.request()
    code, out, _ = cli(capsys, "principal", "revoke", PLANNER, "--reason", "compromised")
    assert code == 0 and out.splitlines() == [
        f"principal {PLANNER} revoked; 1 execution(s) revoked",
        f"  {ids(mine)[0]}",
    ]
    assert plane.request()["decision"]["reason_code"] == "principal_revoked"
    code, out, _ = cli(capsys, "runtime", "revoke", "edge-1", "--reason", "stolen", "--json")
    assert code == 0 and json.loads(out)["runtime"]["state"] == "revoked"
    code, _, err = cli(capsys, "principal", "revoke", "not a principal", "--reason", "x")
    assert code == 1 and err.startswith("lictor: invalid_request:")
