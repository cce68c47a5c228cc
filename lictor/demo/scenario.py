"""The scenario of `lictor demo`: the steps in order, then an audit of the whole log.

`play` sets a running control plane up as an admin would
(`lictor.demo.plane.govern`), plays every step of `STEPS` in order and
returns one `Row` per step, then one for `AUDIT`. A step that raises is a
failed row; the others still run. The audit trusts nothing but the log's
verifier key: it fetches the checkpoint and every tile over the public
tlog-tiles paths, recomputes the tree (`lictor.audit.audit`), and reads each
entry a step cited back from the audited tiles, requiring the execution and
state the step saw. `held` is true only if every row is ok.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from lictor.audit import audit
from lictor.demo import steps
from lictor.demo.plane import ControlPlane, govern
from lictor.demo.stage import Checks, Row, Stage, Step
from lictor.demo.work import Works
from lictor.log.entry import parse_entry
from lictor.log.note import parse_verifier_key
from lictor.tilesource import fetch_entry, open_source

STEPS: tuple[Step, ...] = (
    Step(
        "allowed work",
        "authorized before it starts; each transition logged",
        steps.allowed_work,
    ),
    Step(
        "agent spawns sub-agents",
        "delegated work is a child execution in one lineage",
        steps.sub_agents,
    ),
    Step(
        "denied action",
        "deny with a reason; never runs; receipt verifies offline",
        steps.denied_action,
    ),
    Step(
        "data residency",
        "work on data runs only in the data's region",
        steps.data_residency,
    ),
    Step(
        "revocation cascade",
        "revoking a parent stops every descendant at once",
        steps.cascade,
    ),
    Step(
        "runtime goes silent",
        "work stops by its own deadline, before the lease ends",
        steps.silent_runtime,
    ),
    Step(
        "policy change",
        "activating a policy re-verifies and revokes running work",
        steps.policy_change,
    ),
)


def audit_log(stage: Stage, checks: Checks) -> str:
    """Audit the log from outside, then read back every entry the steps cited."""
    verifier = parse_verifier_key(stage.vkey)
    with open_source(stage.plane.url + "/log") as source:
        result = audit(source, verifier)
        for cited in stage.cited:
            if not checks.that(cited.index < result.size, f"log {cited.index} is not audited"):
                continue
            entry = parse_entry(fetch_entry(source, cited.index, result.size))
            checks.that(cited.matches(entry), f"log {cited.index} holds {entry}, not {cited}")
    return (
        f"{result.size} entries and {result.tiles_checked} hash tile(s) recomputed to the signed"
        f" checkpoint of {result.origin}; the {len(stage.cited)} entries the steps cite match"
    )


AUDIT = Step("log audit", "anyone can verify the log with its URL and key", audit_log)


def play(
    plane: ControlPlane,
    directory: Path,
    progress: Callable[[Step], object] = lambda step: print(f"  {step.name} ..."),
    played: Callable[[Row], object] = lambda row: None,
) -> list[Row]:
    """Set ``plane`` up, play the steps (work files in ``directory``) and audit the log;
    ``progress`` hears of each step as it starts, ``played`` of its row when it ends."""
    works = Works(directory)
    try:
        stage = Stage(plane, govern(plane), works, plane.vkey())
        rows = []
        for step in (*STEPS, AUDIT):
            progress(step)
            rows.append(step.play(stage))
            played(rows[-1])
        return rows
    finally:
        works.close()


def held(rows: Sequence[Row]) -> bool:
    return all(row.ok for row in rows)
