"""The proof viewer in a real browser: receipts and tlog-proofs verified with
WebCrypto, tampering caught at the step it breaks, log indexes and executions
picked, consistency between checkpoints; its JavaScript checked against the
transparency-dev/merkle probes, RFC 8785 and a Tessera log."""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import rfc8785
from playwright.sync_api import Page, expect

from lictor.log.merkle import leaf_hash, new_stored_hashes, prove_inclusion
from lictor.log.note import Ed25519Signer
from lictor.log.proof import TlogProof

from ..conftest import VECTORS
from ..sdk.conftest import DEPLOY, PLANNER, STAGING, Plane
from .conftest import PHONE, Tab

STEPS = [
    "Parse",
    "Entry",
    "Leaf hash",
    "Verifier key",
    "Checkpoint",
    "Inclusion path",
    "Root",
    "Signature",
]


def note_receipt(plane: Plane, text: str) -> dict[str, Any]:
    receipt: dict[str, Any] = plane.admin(
        "POST", "/v1/log/entries", {"kind": "note", "text": text}
    )["receipt"]
    return receipt


def checkpoint(plane: Plane) -> dict[str, Any]:
    reply: dict[str, Any] = httpx.get(plane.url + "/v1/log/checkpoint").json()
    return reply


def result(page: Page, verdict: str = "#verdict", steps: str = "#steps") -> dict[str, Any]:
    """The verdict once a check has finished, and each step's status."""
    expect(page.locator(verdict)).to_have_attribute("data-ok", re.compile("true|false"))
    items = page.locator(f"{steps} li.proof-step")
    return {
        "ok": page.locator(verdict).get_attribute("data-ok") == "true",
        "verdict": page.locator(verdict).inner_text(),
        "steps": {
            str(items.nth(i).get_attribute("data-step")): items.nth(i).get_attribute("data-status")
            for i in range(items.count())
        },
        "failed": page.locator(f"{steps} li.proof-step.failed").all_inner_texts(),
    }


def paste(page: Page, text: str, vkey: str = "", entry: str = "") -> dict[str, Any]:
    page.get_by_label("Verifier key to check against").fill(vkey)
    page.get_by_label("Receipt JSON or").fill(text)
    if entry and not page.get_by_label("Entry text, exactly").is_visible():
        page.get_by_text("Entry for a bare tlog-proof").click()
    if page.get_by_label("Entry text, exactly").is_visible():
        page.get_by_label("Entry text, exactly").fill(entry)
    page.get_by_role("button", name="Verify receipt").click()
    return result(page)


def assert_verified(seen: dict[str, Any], extra: Sequence[str] = ()) -> None:
    assert seen["ok"] and seen["verdict"].endswith("Verified"), seen
    assert list(seen["steps"]) == [*STEPS, *extra]
    assert set(seen["steps"].values()) == {"passed"}


def assert_failed_at(seen: dict[str, Any], step: str, message: str) -> None:
    assert not seen["ok"] and seen["verdict"].endswith(f"Failed at step: {step}"), seen
    names = list(seen["steps"])
    at = names.index(step)
    assert all(seen["steps"][n] == "passed" for n in names[:at]), seen
    assert seen["steps"][step] == "failed"
    assert all(seen["steps"][n] == "not-reached" for n in names[at + 1 :]), seen
    assert message in seen["failed"][0], seen["failed"]


def flip_b64(text: str, at: int) -> str:
    """``text`` with the base64 character at ``at`` changed (still base64)."""
    return text[:at] + ("B" if text[at] == "A" else "A") + text[at + 1 :]


def forged(note: str) -> str:
    """A checkpoint note with one signature byte changed (past the key id)."""
    return flip_b64(note, note.rindex(" ") + 12)


def with_checkpoint(receipt: dict[str, Any], note: str) -> dict[str, Any]:
    """The receipt with another checkpoint note, in its tlog_proof and its copy."""
    bad = copy.deepcopy(receipt)
    head = bad["tlog_proof"][: -len(bad["checkpoint"])]
    bad["checkpoint"] = note
    bad["tlog_proof"] = head + note
    return bad


def with_hash(receipt: dict[str, Any], which: int) -> dict[str, Any]:
    """The receipt with one inclusion hash changed, in its tlog_proof and its copy."""
    bad = copy.deepcopy(receipt)
    old = bad["inclusion_proof"][which]
    new = flip_b64(old, 5)
    bad["inclusion_proof"][which] = new
    bad["tlog_proof"] = bad["tlog_proof"].replace(f"\n{old}\n", f"\n{new}\n")
    return bad


def test_a_real_receipt_verifies_signed_out(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    note = note_receipt(console_plane, "break-glass approved by the on-call lead")
    with console_plane.client() as client:
        execution = client.request(PLANNER, DEPLOY, STAGING)["receipt"]
    tab = open_page(console_plane.url)
    page = tab.open("/console/proof")
    expect(page.locator("#server-key")).to_have_text(console_plane.vkey())
    assert page.locator("#sign-in").is_visible()
    for receipt in (note, execution):
        seen = paste(page, json.dumps(receipt, indent=2))
        assert_verified(seen, ["Commitment"])
        assert (
            f"entry {receipt['index']} is in the tree" in page.locator("#result-hint").inner_text()
        )
    svg = page.locator("#tree svg")
    expect(svg).to_be_visible()
    # The path drawn: the leaf, one sibling per proof hash, and the root.
    assert svg.locator(".sibling").count() == len(execution["inclusion_proof"])
    assert svg.locator(".root.ok").count() == 1
    assert "level 0" in (svg.text_content() or "")
    # The key pasted by hand is the same key: verified again, and it says so.
    assert_verified(paste(page, json.dumps(execution), vkey=console_plane.vkey()), ["Commitment"])
    assert "key you gave" in page.locator("#result-hint").inner_text()
    tab.shot("proof-verified")


def tampered(receipt: dict[str, Any], vkey: str) -> list[tuple[str, str, str, str, str]]:
    """(what, receipt text, verifier key, step it must fail at, words of the message)."""
    origin = vkey.split("+")[0]
    entry = copy.deepcopy(receipt)
    entry["entry"]["time"] = "2020-01-01T00:00:00.000Z"
    unstated = copy.deepcopy(entry)
    del unstated["leaf_hash"]
    event = copy.deepcopy(receipt)
    event["event"]["text"] = "something else"
    size = copy.deepcopy(receipt)
    size["tree_size"] += 1
    index = copy.deepcopy(receipt)
    index["index"] += 1
    only_proof = copy.deepcopy(receipt)
    only_proof["tlog_proof"] = with_hash(receipt, 0)["tlog_proof"]
    signature = with_checkpoint(receipt, forged(receipt["checkpoint"]))
    same_name = Ed25519Signer.generate(origin).verifier.vkey()
    other_name = Ed25519Signer.generate("other.example/log").verifier.vkey()
    text = json.dumps
    return [
        ("entry", text(entry), "", "Leaf hash", "not the hash of the entry"),
        ("entry, no leaf_hash", text(unstated), "", "Root", "does not lead to the checkpoint"),
        ("inclusion hash", text(with_hash(receipt, 0)), "", "Root", "does not lead"),
        ("tlog_proof only", text(only_proof), "", "Parse", "inclusion_proof differs"),
        ("signature byte", text(signature), "", "Signature", "invalid signature"),
        ("key of the same name", text(receipt), same_name, "Signature", "no signature by"),
        ("key of another name", text(receipt), other_name, "Checkpoint", "is not the key's name"),
        ("not a key", text(receipt), "lictor.local/x+0000", "Verifier key", "name+keyid+"),
        ("event", text(event), "", "Commitment", "do not open the entry's commitment"),
        ("tree_size", text(size), "", "Checkpoint", "tree_size"),
        ("index", text(index), "", "Parse", "differs from the proof's index"),
        ("garbage", "this is not a receipt", "", "Parse", "neither a Lictor receipt"),
        ("broken JSON", '{"index": 1,', "", "Parse", "receipt is not JSON"),
        ("not a receipt", '{"index": 1}', "", "Parse", "no tlog_proof"),
        ("empty", "   ", "", "Parse", "nothing to verify"),
    ]


def test_a_tampered_receipt_fails_at_the_step_it_breaks(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    for _ in range(3):  # a tree with a few levels
        note_receipt(console_plane, "filler")
    receipt = note_receipt(console_plane, "to be tampered with")
    tab = open_page(console_plane.url)
    page = tab.open("/console/proof")
    for what, text, vkey, step, message in tampered(receipt, console_plane.vkey()):
        seen = paste(page, text, vkey=vkey)
        assert_failed_at(seen, step, message)
        assert seen["verdict"].endswith(f"Failed at step: {step}"), what
        if what == "signature byte":
            expect(page.locator("#steps li.proof-step.failed")).to_contain_text("invalid signature")
            tab.shot("proof-tampered")
    # A changed inclusion hash still draws the path, up to a root that is not the checkpoint's.
    paste(page, json.dumps(with_hash(receipt, 0)))
    expect(page.locator("#tree svg .root.bad")).to_have_count(1)


def test_a_bare_tlog_proof_and_an_uploaded_file(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    receipt = note_receipt(console_plane, "for a bare proof")
    page = open_page(console_plane.url).open("/console/proof")
    # No entry given: this log's entry at the proof's index is used.
    assert_verified(paste(page, receipt["tlog_proof"]))
    assert "this log's entry" in page.locator("#steps li[data-step=Parse]").inner_text()
    # Copied without its final newline: still the same proof.
    assert_verified(paste(page, receipt["tlog_proof"].rstrip("\n")))
    # The entry given by hand must be the one logged.
    seen = paste(page, receipt["tlog_proof"], entry='{"kind":"note"}')
    assert_failed_at(seen, "Root", "does not lead")
    page.set_input_files(
        "#receipt-file",
        files=[
            {
                "name": "r.json",
                "mimeType": "application/json",
                "buffer": json.dumps(receipt).encode(),
            }
        ],
    )
    assert_verified(result(page), ["Commitment"])
    page.set_input_files(
        "#receipt-file",
        files=[{"name": "bad.tlog-proof", "mimeType": "text/plain", "buffer": b"\xff\xfe proof"}],
    )
    assert_failed_at(result(page), "Parse", "not UTF-8")


def tessera_proof(size: int, index: int) -> tuple[str, str, str]:
    """A tlog-proof for an entry of the Tessera test log, its entry and its key."""
    log = VECTORS / "tessera-testdata-log"
    facts = json.loads((log / "keys_and_entries.json").read_text())
    entries = [e.encode() for e in facts["entries_in_order"][:size]]
    stored: list[bytes] = []

    class Reader:
        def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
            return [stored[i] for i in indexes]

    for i, entry in enumerate(entries):
        stored += new_stored_hashes(i, leaf_hash(entry), Reader())
    hashes = tuple(prove_inclusion(index, size, Reader()))
    note = (log / "log" / f"checkpoint.{size}").read_bytes()
    text = TlogProof(index, hashes, note).encode()
    return text, entries[index].decode(), facts["log_public_key"]


def test_a_tlog_proof_from_another_log_with_its_key(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    text, entry, vkey = tessera_proof(7, 4)
    page = open_page(console_plane.url).open("/console/proof")
    assert_verified(paste(page, text, vkey=vkey, entry=entry))
    assert "example.com/log/testdata" in page.locator("#result-hint").inner_text()
    assert_failed_at(paste(page, text, vkey=vkey, entry=entry + "\n"), "Root", "does not lead")
    # This server's own key does not sign another log's checkpoint.
    assert_failed_at(paste(page, text, entry=entry), "Checkpoint", "is not the key's name")


def test_a_log_index_signed_out_and_by_link(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    index = note_receipt(console_plane, "linked to")["index"]
    tab = open_page(console_plane.url)
    page = tab.open(f"/console/proof#index={index}")
    assert_verified(result(page))
    assert page.get_by_label("Log index").input_value() == str(index)
    assert f"GET /v1/log/entries/{index}" in page.locator("#steps").inner_text()
    page.get_by_label("Log index").fill("0")
    page.get_by_role("button", name="Verify entry").click()
    assert_verified(result(page))
    assert page.evaluate("location.hash") == "#index=0"
    for bad, message in [("twelve", "whole number"), ("-1", "whole number"), ("99999", "no entry")]:
        page.get_by_label("Log index").fill(bad)
        page.get_by_role("button", name="Verify entry").click()
        assert_failed_at(result(page), "Parse", message)


def test_an_execution_picked_signed_in(console_plane: Plane, open_page: Callable[..., Tab]) -> None:
    with console_plane.client() as client, client.execution(PLANNER, DEPLOY, STAGING) as e:
        pass
    transitions = console_plane.execution(e.id)["transitions"]
    signed_out = open_page(console_plane.url).open(f"/console/proof#execution={e.id}")
    expect(signed_out.locator("#transitions")).to_contain_text("Sign in to see the transitions")
    assert signed_out.locator("#execution-form").is_hidden()
    tab = open_page(console_plane.url)
    page = tab.open(f"/console/proof#execution={e.id}", console_plane.server.token)
    buttons = page.locator("#transitions button")
    expect(buttons).to_have_count(len(transitions))
    assert [t["state"] for t in transitions] == ["active", "completed"]
    for i, t in enumerate(transitions):
        buttons.nth(i).click()
        seen = result(page)
        # Signed in as admin: the private event comes too, and opens the commitment.
        assert_verified(seen, ["Commitment"])
        assert f"entry {t['log_index']} is in the tree" in page.locator("#result-hint").inner_text()
    tab.allow("404")
    page.get_by_label("Execution id").fill("ex_missing")
    page.get_by_role("button", name="Load transitions").click()
    expect(page.locator("#transitions [role=alert]")).to_contain_text("Could not load")


def consistency(
    page: Page, older: str = "", newer: str = "", older_note: str = "", newer_note: str = ""
) -> dict[str, Any]:
    page.get_by_label("Older tree size").fill(older)
    page.get_by_label("Newer tree size").fill(newer)
    pasting = older_note or newer_note
    if pasting and not page.get_by_label("Older checkpoint").is_visible():
        page.get_by_text("Paste signed checkpoints instead").click()
    if page.get_by_label("Older checkpoint").is_visible():
        page.get_by_label("Older checkpoint (signed note)").fill(older_note)
        page.get_by_label("Newer checkpoint (signed note)").fill(newer_note)
    page.get_by_role("button", name="Check consistency").click()
    seen = result(page, "#consistency-verdict", "#consistency-steps")
    seen["hint"] = page.locator("#consistency-hint").inner_text()
    return seen


def test_consistency_between_two_checkpoints(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    first = checkpoint(console_plane)
    note_receipt(console_plane, "between two checkpoints")
    second = checkpoint(console_plane)
    tab = open_page(console_plane.url, PHONE)
    page = tab.open("/console/proof")
    for older, newer in [("1", ""), (str(first["size"]), str(second["size"])), ("3", "3")]:
        seen = consistency(page, older, newer)
        assert seen["ok"] and seen["verdict"].endswith("Consistent"), seen
        assert set(seen["steps"].values()) == {"passed"}
        assert "Not signed" in seen["hint"]
    seen = consistency(page, older_note=first["checkpoint"], newer_note=second["checkpoint"])
    assert seen["ok"] and "Both checkpoints are signed" in seen["hint"], seen
    assert (
        f"from size {first['size']} to size {second['size']}"
        in page.locator("#consistency-steps").inner_text()
    )
    seen = consistency(
        page, older_note=forged(first["checkpoint"]), newer_note=second["checkpoint"]
    )
    assert_failed_at(seen, "Older tree", "invalid signature")
    seen = consistency(page, older_note=second["checkpoint"], newer_note=first["checkpoint"])
    assert_failed_at(seen, "Older tree", "larger than the newer")
    for older, message in [
        ("", "give the older tree size"),
        ("0", "empty tree"),
        ("10000", "larger"),
    ]:
        assert_failed_at(consistency(page, older), "Older tree", message)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1
    tab.shot("proof-consistency-phone")


def merkle_probes() -> list[dict[str, Any]]:
    """The transparency-dev/merkle probes, each with the verdict that
    tests/log/test_vectors_merkle.py expects of lictor.log.merkle."""
    root = VECTORS / "transparency-dev-merkle" / "testdata"
    probes = []
    for kind in ("inclusion", "consistency"):
        for path in sorted((root / kind).rglob("*.json")):
            p = json.loads(path.read_text())
            hashes = [p.get("root1"), p.get("root2"), *(p["proof"] or [])]
            short = kind == "consistency" and any(
                len(base64.b64decode(h or "")) != 32 for h in hashes
            )
            numbers = ("leafIdx", "treeSize", "size1", "size2")
            probes.append(
                {**p, **{k: str(p[k]) for k in numbers if k in p}, "kind": kind}
                | {"wantErr": p["wantErr"] or short, "name": str(path.relative_to(root))}
            )
    return probes


CHECK_PROBES = """async (probes) => {
  const t = await import("/console/static/tlog.js");
  const b = (s) => (s ? t.fromBase64(s) : new Uint8Array(0));
  const n = BigInt;
  const out = [];
  for (const p of probes) {
    try {
      const proof = (p.proof || []).map(b);
      if (p.kind === "inclusion") {
        await t.verifyInclusion(n(p.leafIdx), n(p.treeSize), b(p.leafHash), proof, b(p.root));
      } else {
        await t.verifyConsistency(n(p.size1), n(p.size2), b(p.root1), b(p.root2), proof);
      }
      out.push("ok");
    } catch (e) {
      out.push(e instanceof t.TlogError ? "error" : `unexpected ${e}`);
    }
  }
  return out;
}"""


def test_the_merkle_math_agrees_with_transparency_dev(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    probes = merkle_probes()
    assert len(probes) > 150
    page = open_page(console_plane.url).open("/console/proof")
    got = page.evaluate(CHECK_PROBES, probes)
    want = ["error" if p["wantErr"] else "ok" for p in probes]
    wrong = [(p["name"], g) for p, g, w in zip(probes, got, want, strict=True) if g != w]
    assert not wrong


JCS_CASES = [
    '{"b": 1, "a": 2, "A": 3, "aa": 4, "": 5}',
    '{"\\u20ac": 1, "\\r": 2, "\\ud83d\\ude00": 3, "\\ufb33": 4, "\\u0080": 5, "1": 6}',
    "[0.1, 1e-7, 1e21, 1e20, 1.2345678901234568e20, -0.0, 5e-324, 333333333.3333333, -1.5e300]",
    '["\\u0001\\u001f\\u007f\\"\\\\/\\b\\f\\n\\r\\t", "\\u2028\\u2029", "é", "\\ud83d\\ude00"]',
    '{"nested": {"z": [true, false, null, {"y": "x", "x": "y"}]}, "n": 9007199254740991}',
]


def test_rfc8785_in_the_browser_matches_the_python_encoder(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    page = open_page(console_plane.url).open("/console/proof")
    got = page.evaluate(
        """async (cases) => {
          const t = await import("/console/static/tlog.js");
          return cases.map((c) => t.canonicalJson(JSON.parse(c)));
        }""",
        JCS_CASES,
    )
    assert got == [rfc8785.dumps(json.loads(c)).decode() for c in JCS_CASES]
    refused = page.evaluate(
        """async () => {
          const t = await import("/console/static/tlog.js");
          try { t.canonicalJson(JSON.parse('["\\\\ud800"]')); return "accepted"; }
          catch (e) { return e.message; }
        }"""
    )
    assert "lone surrogate" in refused


def test_the_c2sp_signed_note_example_verifies(
    console_plane: Plane, open_page: Callable[..., Tab]
) -> None:
    example = VECTORS / "c2sp-spec-examples"
    note = (example / "signed-note-example.note").read_text()
    vkey = (example / "signed-note-example.vkey").read_text().strip()
    page = open_page(console_plane.url).open("/console/proof")
    got = page.evaluate(
        """async ([note, vkey]) => {
          const t = await import("/console/static/tlog.js");
          const key = await t.parseVerifierKey(vkey);
          const parsed = t.parseNote(note);
          const good = await t.verifyNoteSignature(parsed, key);
          const bad = { ...parsed, text: parsed.text.replace("example", "exemple") };
          let refused = "";
          try { await t.verifyNoteSignature(bad, key); } catch (e) { refused = e.message; }
          return [parsed.text, good.length, refused];
        }""",
        [note, vkey],
    )
    assert got == [
        "This is an example message.\n",
        1,
        "invalid signature for key example.com/foo+530d903a",
    ]
