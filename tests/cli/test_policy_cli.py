"""`lictor policy` and `lictor entity` against a real server over HTTP."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lictor.cli.main import main

from ..conftest import REPO

POLICIES = REPO / "examples" / "policies"
ENTITIES = REPO / "examples" / "entities.json"
STAGING_PERMIT = '@id("team-deploys-own-staging")'


def cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def edited_copy(tmp_path: Path, name: str, edit: Callable[[str], str]) -> Path:
    """A copy of the example policies with ``deploy.cedar`` edited."""
    copy = tmp_path / name
    shutil.copytree(POLICIES, copy)
    deploy = copy / "deploy.cedar"
    deploy.write_text(edit(deploy.read_text()))
    return copy


def without_staging_permit(text: str) -> str:
    head, _, tail = text.partition(STAGING_PERMIT)
    return head + "// removed\n" + tail.split(";", 1)[1]


@pytest.fixture
def admin(serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    server = serve()
    monkeypatch.setenv("LICTOR_URL", server.url)
    monkeypatch.setenv("LICTOR_CREDENTIAL", server.token)
    return server


def test_validate_ok_prints_count_and_version(capsys: Any) -> None:
    code, out, _ = cli(capsys, "policy", "validate", str(POLICIES))
    assert code == 0
    assert out.startswith("OK: 9 policies, version ")
    code, out, _ = cli(capsys, "policy", "validate", str(POLICIES), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["policies"] == 9 and report["issues"] == []
    assert out.count(report["version"]) == 1 and len(report["version"]) == 64


def test_validate_broken_prints_file_line_and_push_sends_nothing(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad_line = 'permit (principal, action == Action::"fly", resource);\n'
    broken = edited_copy(tmp_path, "broken", lambda text: text + bad_line)
    line = len((broken / "deploy.cedar").read_text().splitlines())
    code, out, _ = cli(capsys, "policy", "validate", str(broken))
    assert code == 1
    assert out.startswith(f"deploy.cedar:{line}:") and "fly" in out
    code, out, _ = cli(capsys, "policy", "validate", str(broken), "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert report["issues"][0]["file"] == "deploy.cedar" and report["issues"][0]["line"] == line
    monkeypatch.setenv("LICTOR_URL", "http://127.0.0.1:1")  # nothing may be sent
    code, out, err = cli(capsys, "policy", "push", str(broken))
    assert code == 1 and out.startswith(f"deploy.cedar:{line}:")
    assert err.startswith("lictor: invalid_request:") and "nothing pushed" in err


def test_validate_of_a_directory_without_schema_is_an_error(tmp_path: Path, capsys: Any) -> None:
    code, _, err = cli(capsys, "policy", "validate", str(tmp_path))
    assert code == 1 and err.startswith("lictor: invalid_request:") and "no schema" in err


def test_push_list_show_activate(admin: Any, tmp_path: Path, capsys: Any) -> None:
    code, out, _ = cli(capsys, "policy", "push", str(POLICIES))
    assert code == 0 and out.endswith("(new)\n")
    v1 = out.split()[1]
    code, out, _ = cli(capsys, "policy", "push", str(POLICIES), "--json")
    assert code == 0 and json.loads(out) == {"version": v1, "new": False}
    v2_dir = edited_copy(tmp_path, "v2", without_staging_permit)
    v2 = cli(capsys, "policy", "push", str(v2_dir))[1].split()[1]

    code, out, _ = cli(capsys, "policy", "list")
    assert code == 0 and {line[2:66] for line in out.splitlines()} == {v1, v2}
    assert "*" not in out
    code, out, _ = cli(capsys, "policy", "activate", v1[:10])
    assert code == 0 and out.startswith(f"activated {v1} (log index ")
    assert "revoked 0 active execution(s)\n" in out
    code, out, _ = cli(capsys, "policy", "list")
    assert f"* {v1}  " in out and f"  {v2}  " in out
    assert json.loads(cli(capsys, "policy", "list", "--json")[1])["active"] == v1

    code, out, _ = cli(capsys, "policy", "show", v2)
    assert code == 0 and out.startswith(f"version {v2}\n")
    assert "==> deploy.cedar <==\n" in out and "==> app.cedarschema <==\n" in out
    assert STAGING_PERMIT not in out and '@id("release-deploys-production")' in out
    shown = json.loads(cli(capsys, "policy", "show", v1[:8], "--json")[1])
    assert STAGING_PERMIT in shown["source"]["policies"]["deploy.cedar"]


def test_diff_versions_and_directories(admin: Any, tmp_path: Path, capsys: Any) -> None:
    v2_dir = edited_copy(tmp_path, "v2", without_staging_permit)
    v1 = cli(capsys, "policy", "push", str(POLICIES))[1].split()[1]
    v2 = cli(capsys, "policy", "push", str(v2_dir))[1].split()[1]
    code, out, _ = cli(capsys, "policy", "diff", v1, v2)
    assert code == 0
    assert out.startswith(f"--- {v1[:12]}/deploy.cedar\n+++ {v2[:12]}/deploy.cedar\n@@ ")
    assert f"-{STAGING_PERMIT}\n" in out and "+// removed\n" in out
    assert out.count("--- ") == 1  # only the one file that differs
    code, out, _ = cli(capsys, "policy", "diff", v1, str(POLICIES))
    assert (code, out) == (0, "identical\n")
    code, out, _ = cli(capsys, "policy", "diff", str(v2_dir), v1[:12], "--json")
    diff = json.loads(out)
    assert code == 0 and not diff["identical"] and list(diff["files"]) == ["deploy.cedar"]
    assert diff["files"]["deploy.cedar"].startswith(f"--- {v2_dir}/deploy.cedar\n")


def test_diff_shows_added_and_removed_files(admin: Any, tmp_path: Path, capsys: Any) -> None:
    more = edited_copy(tmp_path, "more", lambda text: text)
    (more / "extra.cedar").write_text('permit (principal, action == Action::"read", resource);')
    code, out, _ = cli(capsys, "policy", "diff", str(POLICIES), str(more))
    assert code == 0 and out.startswith("--- /dev/null\n+++ ")
    assert out.endswith("\n\\ No newline at end of file\n")


def test_unknown_versions_are_not_found(admin: Any, capsys: Any) -> None:
    for argv in (("show", "0" * 64), ("show", "abc"), ("activate", "f" * 64), ("diff", "a", "b")):
        code, out, err = cli(capsys, "policy", *argv)
        assert (code, out) == (1, "") and err.startswith("lictor: not_found:"), argv


def test_entity_put_and_show(admin: Any, tmp_path: Path, capsys: Any) -> None:
    code, out, _ = cli(capsys, "entity", "put", str(ENTITIES))
    assert code == 0 and out.startswith("entities version ") and out.endswith("(16 entities)\n")
    version = out.split()[2]
    code, out, _ = cli(capsys, "entity", "show")
    assert code == 0 and out.startswith(f"version {version}\n")
    assert 'Agent::"planner-7"  in Team::"payments"\n' in out
    assert 'Service::"payments-api"  {"environment": "production"' in out
    shown = json.loads(cli(capsys, "entity", "show", "--json")[1])
    assert shown["version"] == version
    assert shown["entities"] and len(shown["entities"]) == 16
    not_a_list = tmp_path / "one.json"
    not_a_list.write_text('{"uid": {"type": "Team", "id": "x"}}')
    code, _, err = cli(capsys, "entity", "put", str(not_a_list))
    assert code == 1 and err.startswith("lictor: invalid_request:") and "JSON list" in err
