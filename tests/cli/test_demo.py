"""`lictor demo --once`: the whole scenario against a real control plane, and its verdict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lictor.cli.main import main
from lictor.demo import scenario
from lictor.demo.stage import Checks, Stage, Step

from ..conftest import REPO


def _row(out: str, step: str) -> str:
    """The table line of ``step``: its name, result and promise."""
    lines = [line for line in out.splitlines() if line.startswith(f"{step}  ")]
    assert len(lines) == 1, out
    return lines[0]


def test_demo_once_plays_every_step_and_audits_the_log(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LICTOR_", "TRACEPARENT"))}
    result = subprocess.run(
        [sys.executable, "-m", "lictor.cli.main", "demo", "--once"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for step in (*scenario.STEPS, scenario.AUDIT):
        assert _row(result.stdout, step.name).split()[len(step.name.split())] == "ok"
    assert "entries the steps cite match" in result.stdout
    count = len(scenario.STEPS) + 1
    assert f"{count}/{count} ok: all promises held" in result.stdout
    assert not list(tmp_path.iterdir()), "the demo left files behind"


def _raises(stage: Stage, checks: Checks) -> str:
    raise RuntimeError("injected fault")


def _fails(stage: Stage, checks: Checks) -> str:
    checks.that(stage.plane.vkey() == "", "the promise did not hold")
    return "looked"


def test_a_failed_promise_makes_demo_once_exit_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = (Step("step that raises", "p1", _raises), Step("step that fails", "p2", _fails))
    monkeypatch.setattr(scenario, "STEPS", broken)
    assert main(["demo", "--once"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in _row(out, "step that raises") and "FAILED" in _row(out, "step that fails")
    assert "RuntimeError: injected fault" in out
    assert "FAILED: the promise did not hold; looked" in out
    assert " ok " in _row(out, "log audit")
    assert "1/3 ok: 2 FAILED" in out
