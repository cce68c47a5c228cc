"""`lictor log ...` driven through `lictor.cli.main.main`, as an outsider would run it."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from lictor.audit import read_checkpoint
from lictor.cli.main import main
from lictor.log.encoding import b64encode
from lictor.log.entry import canonical_entry
from lictor.log.merkle import leaf_hash
from lictor.log.note import Ed25519Signer
from lictor.log.proof import parse_tlog_proof

BuildLog = Callable[[Path, Ed25519Signer, str, Sequence[bytes]], bytes]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fails(capsys: pytest.CaptureFixture[str], code: str, *argv: str) -> str:
    exit_code, out, err = run(capsys, *argv)
    assert (exit_code, out) == (1, "")
    assert err.startswith(f"lictor: {code}: "), err
    return err


# checkpoint ------------------------------------------------------------------------


def test_checkpoint_unverified_prints_the_note(
    capsys: pytest.CaptureFixture[str], tessera: Any
) -> None:
    code, out, _ = run(capsys, "log", "checkpoint", str(tessera.log))
    assert code == 0
    assert out == (tessera.log / "checkpoint").read_text()


def test_checkpoint_verified(
    capsys: pytest.CaptureFixture[str], tessera: Any, http_serve: Callable[[Path], str]
) -> None:
    url = http_serve(tessera.log.parent)
    code, out, _ = run(capsys, "log", "checkpoint", url, "--key", tessera.vkey)
    assert code == 0
    assert "size   15\n" in out
    assert "signed by example.com/log/testdata+33d7b496 (verified)" in out
    code, out, _ = run(capsys, "log", "checkpoint", url, "--key", tessera.vkey, "--json")
    assert json.loads(out)["root"] == "rKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs="


def test_checkpoint_wrong_key(capsys: pytest.CaptureFixture[str], tessera: Any) -> None:
    other = Ed25519Signer.generate(tessera.origin).verifier.vkey()
    code, out, err = run(capsys, "log", "checkpoint", str(tessera.log), "--key", other)
    assert (code, out) == (1, "")
    assert err == "lictor: bad_signature: note has no verifiable signatures\n"


# prove and verify --------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 6, 7, 14])
def test_prove_then_verify(
    capsys: pytest.CaptureFixture[str],
    tessera: Any,
    tmp_path: Path,
    http_serve: Callable[[Path], str],
    index: int,
) -> None:
    proof, entry = tmp_path / "p.tlog-proof", tmp_path / "entry"
    url = http_serve(tessera.log) + "/"
    args = ["--index", str(index), "--key", tessera.vkey, "--entry-out", str(entry)]
    code, out, err = run(capsys, "log", "prove", url, *args, "--out", str(proof))
    assert (code, err) == (0, "")
    assert f"entry {index} at tree size 15" in out
    assert entry.read_bytes() == tessera.entries[index]
    assert proof.read_text().startswith(f"c2sp.org/tlog-proof@v1\nindex {index}\n")
    code, out, _ = run(
        capsys, "log", "verify", str(proof), "--key", tessera.vkey, "--entry", str(entry)
    )
    assert code == 0
    assert out.startswith(f"OK: entry {index} is in example.com/log/testdata at tree size 15")


def test_prove_prints_to_stdout_and_json(capsys: pytest.CaptureFixture[str], tessera: Any) -> None:
    code, out, err = run(capsys, "log", "prove", str(tessera.log), "--index", "2")
    assert code == 0
    assert "not verified" in err
    assert out.endswith((tessera.log / "checkpoint").read_text())
    code, out, _ = run(capsys, "log", "prove", str(tessera.log), "--index", "2", "--json")
    doc = json.loads(out)
    assert (doc["index"], doc["size"], doc["verified"], doc["entry"]) == (2, 15, False, "dGhyZWU=")


def test_prove_against_an_older_checkpoint(
    capsys: pytest.CaptureFixture[str], tessera: Any, tmp_path: Path
) -> None:
    old = str(tessera.log / "checkpoint.7")
    args = ["--index", "3", "--key", tessera.vkey, "--checkpoint", old, "--size", "7"]
    code, out, _ = run(capsys, "log", "prove", str(tessera.log), *args)
    assert code == 0
    assert out.endswith((tessera.log / "checkpoint.7").read_text())
    code, _, err = run(capsys, "log", "prove", str(tessera.log), "--index", "3", "--size", "7")
    assert code == 1
    assert "checkpoint has size 15, not the requested 7" in err


def test_prove_index_out_of_range(capsys: pytest.CaptureFixture[str], tessera: Any) -> None:
    code, _, err = run(capsys, "log", "prove", str(tessera.log), "--index", "15")
    assert code == 1
    assert "lictor: invalid_request: index 15 is not in the tree of size 15" in err


@pytest.fixture
def proof_file(capsys: pytest.CaptureFixture[str], tessera: Any, tmp_path: Path) -> Path:
    path = tmp_path / "5.tlog-proof"
    args = ["--index", "5", "--key", tessera.vkey, "--out", str(path)]
    assert run(capsys, "log", "prove", str(tessera.log), *args)[0] == 0
    return path


def verify(capsys: pytest.CaptureFixture[str], proof: Path, vkey: str, *extra: str) -> str:
    code, out, err = run(capsys, "log", "verify", str(proof), "--key", vkey, *extra)
    assert (code, out) == (1, "")
    return err


def test_verify_rejects_wrong_entry(
    capsys: pytest.CaptureFixture[str], tessera: Any, proof_file: Path, tmp_path: Path
) -> None:
    entry = tmp_path / "entry"
    entry.write_bytes(b"seven")  # entry 5 is "six"
    err = verify(capsys, proof_file, tessera.vkey, "--entry", str(entry))
    assert err == "lictor: invalid_proof: inclusion proof does not lead to the root\n"


def test_verify_rejects_tampered_proof(
    capsys: pytest.CaptureFixture[str], tessera: Any, proof_file: Path, tmp_path: Path
) -> None:
    entry = tmp_path / "entry"
    entry.write_bytes(b"six")
    lines = proof_file.read_text().split("\n")
    edits = {
        "index": [lines[0], "index 4", *lines[2:]],
        "swapped": [*lines[:2], lines[3], lines[2], *lines[4:]],
        "short": [*lines[:2], *lines[3:]],
        "long": [*lines[:2], lines[2], *lines[2:]],
    }
    for name, edited in edits.items():
        bad = tmp_path / name
        bad.write_text("\n".join(edited))
        assert "lictor: invalid_proof:" in verify(capsys, bad, tessera.vkey, "--entry", str(entry))
    bad = tmp_path / "badcp"
    bad.write_text(proof_file.read_text().replace("\n15\n", "\n16\n"))
    err = verify(capsys, bad, tessera.vkey, "--entry", str(entry))
    assert "lictor: bad_signature: invalid signature" in err


def test_verify_needs_the_entry(
    capsys: pytest.CaptureFixture[str], tessera: Any, proof_file: Path
) -> None:
    assert "pass --entry FILE" in verify(capsys, proof_file, tessera.vkey)


@pytest.fixture
def json_log(
    tmp_path: Path, tessera: Any, tessera_signer: Ed25519Signer, build_log: BuildLog
) -> tuple[Path, list[dict[str, Any]]]:
    entries: list[dict[str, Any]] = [
        {"kind": "decision", "seq": i, "ok": i % 2 == 0} for i in range(9)
    ]
    log = tmp_path / "jsonlog"
    build_log(log, tessera_signer, tessera.origin, [canonical_entry(e) for e in entries])
    return log, entries


def make_receipt(
    capsys: pytest.CaptureFixture[str], log: Path, vkey: str, index: int, entry: Any
) -> dict[str, Any]:
    """A receipt with every field a Lictor receipt has (no event)."""
    code, out, _ = run(capsys, "log", "prove", str(log), "--index", str(index), "--key", vkey)
    assert code == 0
    proof = parse_tlog_proof(out)
    return {
        "index": index,
        "entry": entry,
        "leaf_hash": b64encode(leaf_hash(canonical_entry(entry))),
        "tree_size": read_checkpoint(proof.checkpoint).size,
        "inclusion_proof": [b64encode(h) for h in proof.hashes],
        "checkpoint": proof.checkpoint.decode(),
        "tlog_proof": out,
    }


def test_verify_receipt(
    capsys: pytest.CaptureFixture[str],
    tessera: Any,
    tmp_path: Path,
    json_log: tuple[Path, list[dict[str, Any]]],
) -> None:
    log, entries = json_log
    receipt = make_receipt(capsys, log, tessera.vkey, 4, entries[4])
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt, indent=1))  # not canonical: the entry is re-encoded
    code, out, _ = run(capsys, "log", "verify", str(path), "--key", tessera.vkey, "--json")
    assert code == 0
    assert json.loads(out) == {
        "ok": True,
        "index": 4,
        "origin": tessera.origin,
        "size": 9,
        "root": json.loads(out)["root"],
        "event_checked": False,
    }


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"index": 5}, "receipt index 5 differs from the proof's index 4"),
        ({"entry": {"kind": "decision", "seq": 4, "ok": False}}, "leaf_hash is not the hash of"),
        ({"entry": "text"}, "receipt has no entry object"),
        ({"leaf_hash": "AAAA"}, "the receipt's leaf_hash is not the hash of its entry"),
        ({"event": {"seq": 4}, "salt": "AAAA"}, "event, salt or entry commitment is malformed"),
        ({"index": None}, "receipt index (missing) differs from the proof's index 4"),
        ({"index": [4]}, "receipt index (a list) differs"),
        ({"tree_size": 999}, "the receipt's tree_size 999 differs from its checkpoint's size 9"),
        ({"tree_size": "9"}, "the receipt's tree_size (a str) differs"),
        ({"tree_size": 2**70}, "the receipt's tree_size (a large int) differs"),
        ({"checkpoint": "garbage"}, "the receipt's checkpoint differs from the one in its"),
        ({"inclusion_proof": ["AAAA"]}, "the receipt's inclusion_proof differs from the hashes"),
        ({"inclusion_proof": []}, "the receipt's inclusion_proof differs from the hashes"),
        (  # the reviewer's receipt: every redundant field wrong at once
            {"tree_size": 999, "checkpoint": "garbage", "inclusion_proof": ["AAAA"]},
            "lictor: invalid_proof: the receipt's",
        ),
    ],
)
def test_verify_rejects_bad_receipt(
    capsys: pytest.CaptureFixture[str],
    tessera: Any,
    tmp_path: Path,
    json_log: tuple[Path, list[dict[str, Any]]],
    edit: dict[str, Any],
    message: str,
) -> None:
    log, entries = json_log
    receipt = {**make_receipt(capsys, log, tessera.vkey, 4, entries[4]), **edit}
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    assert message in verify(capsys, path, tessera.vkey)


def test_verify_receipt_without_redundant_fields(
    capsys: pytest.CaptureFixture[str],
    tessera: Any,
    tmp_path: Path,
    json_log: tuple[Path, list[dict[str, Any]]],
) -> None:
    log, entries = json_log
    full = make_receipt(capsys, log, tessera.vkey, 4, entries[4])
    path = tmp_path / "receipt.json"
    minimal = {k: full[k] for k in ("index", "entry", "tlog_proof")}
    path.write_text(json.dumps(minimal))
    assert run(capsys, "log", "verify", str(path), "--key", tessera.vkey)[0] == 0
    path.write_text(json.dumps({**minimal, "entry": {**entries[4], "ok": False}}))
    assert "does not lead to the root" in verify(capsys, path, tessera.vkey)


def test_verify_deeply_nested_receipt(
    capsys: pytest.CaptureFixture[str], tessera: Any, tmp_path: Path
) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"a": ' * 100_000)
    assert (
        verify(capsys, path, tessera.vkey)
        == "lictor: invalid_proof: receipt is nested too deeply\n"
    )
    proof = json.dumps("c2sp.org/tlog-proof@v1\nindex 0\n\nx")
    for depth in (200, 900, 990):  # parsed, then too deep for one step or another
        entry = '{"a": ' * depth + "1" + "}" * depth
        path.write_text(f'{{"index": 0, "tlog_proof": {proof}, "entry": {entry}}}')
        assert re.match(r"lictor: [a-z_]+: ", verify(capsys, path, tessera.vkey))


# audit -------------------------------------------------------------------------------


def test_audit_with_state(
    capsys: pytest.CaptureFixture[str],
    tessera: Any,
    tmp_path: Path,
    http_serve: Callable[[Path], str],
) -> None:
    log = Path(shutil.copytree(tessera.log, tmp_path / "log"))
    shutil.copyfile(log / "checkpoint.7", log / "checkpoint")
    url, state = http_serve(log), tmp_path / "state.json"
    key_file = tmp_path / "vkey"
    key_file.write_text(tessera.vkey)
    args = ["log", "audit", url, "--key", str(key_file), "--state", str(state)]
    code, out, _ = run(capsys, *args)
    assert code == 0
    assert "OK: example.com/log/testdata: size 0 -> 7" in out
    assert json.loads(state.read_text())["size"] == 7
    shutil.copyfile(log / "checkpoint.15", log / "checkpoint")
    code, out, _ = run(capsys, *args, "--json")
    doc = json.loads(out)
    assert (doc["old_size"], doc["size"], doc["entries_checked"], doc["tiles_checked"]) == (
        7,
        15,
        8,
        1,
    )
    saved = state.read_text()
    shutil.copyfile(log / "checkpoint.7", log / "checkpoint")
    code, out, err = run(capsys, *args)
    assert (code, out) == (1, "")
    assert err == "lictor: audit_failed: the tree shrank: size 7 after size 15 was audited\n"
    assert state.read_text() == saved  # a failed audit leaves the state alone


def test_audit_failure_exit_code(
    capsys: pytest.CaptureFixture[str], tessera: Any, tmp_path: Path
) -> None:
    log = Path(shutil.copytree(tessera.log, tmp_path / "log"))
    bundle = log / "tile/entries/000.p/15"
    bundle.write_bytes(bundle.read_bytes() + b"\x00\x01!")
    state = tmp_path / "state.json"
    code, _, err = run(
        capsys, "log", "audit", str(log), "--key", tessera.vkey, "--state", str(state)
    )
    assert code == 1
    assert "lictor: audit_failed: tile/entries/000.p/15: bundle has 16 entries, expected 15" in err
    assert not state.exists()


def test_audit_requires_key(capsys: pytest.CaptureFixture[str], tessera: Any) -> None:
    with pytest.raises(SystemExit) as e:
        main(["log", "audit", str(tessera.log)])
    assert e.value.code == 2
    assert "--key" in capsys.readouterr().err


def test_bad_key(capsys: pytest.CaptureFixture[str], tessera: Any) -> None:
    code, _, err = run(capsys, "log", "audit", str(tessera.log), "--key", "name+0000+AAAA")
    assert code == 1
    assert err.startswith("lictor: invalid_key:")


def test_key_that_is_neither(capsys: pytest.CaptureFixture[str], tessera: Any) -> None:
    code, _, err = run(capsys, "log", "checkpoint", str(tessera.log), "--key", "missing.vkey")
    assert code == 1
    assert "lictor: invalid_request: key 'missing.vkey' is neither" in err


def test_state_in_missing_directory(
    capsys: pytest.CaptureFixture[str], tessera: Any, tmp_path: Path
) -> None:
    state = str(tmp_path / "nope" / "state.json")
    args = ["log", "audit", str(tessera.log), "--key", tessera.vkey, "--state", state]
    code, _, err = run(capsys, *args)
    assert code == 1
    assert "no directory" in err


# origins -----------------------------------------------------------------------------


@pytest.fixture
def other_origin_log(
    tmp_path: Path, tessera: Any, tessera_signer: Ed25519Signer, build_log: BuildLog
) -> Path:
    """A log signed by the Tessera key but under another origin."""
    log = tmp_path / "other"
    build_log(log, tessera_signer, "example.com/other", tessera.entries[:5])
    return log


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "")
    assert "origin 'example.com/other' is not 'example.com/log/testdata'" in err
    assert "pass it with --origin" in err
    return err


def test_origin_defaults_to_key_name(
    capsys: pytest.CaptureFixture[str], tessera: Any, other_origin_log: Path, tmp_path: Path
) -> None:
    log, key, origin = str(other_origin_log), tessera.vkey, "example.com/other"
    refused(capsys, "log", "checkpoint", log, "--key", key)
    assert run(capsys, "log", "checkpoint", log, "--key", key, "--origin", origin)[0] == 0
    refused(capsys, "log", "prove", log, "--index", "3", "--key", key)
    proof, entry = tmp_path / "proof", tmp_path / "entry"
    args = ["--index", "3", "--key", key, "--origin", origin, "--entry-out", str(entry)]
    assert run(capsys, "log", "prove", log, *args, "--out", str(proof))[0] == 0
    refused(capsys, "log", "verify", str(proof), "--key", key, "--entry", str(entry))
    args = ["--key", key, "--entry", str(entry), "--origin", origin]
    assert run(capsys, "log", "verify", str(proof), *args)[0] == 0
    state = tmp_path / "state.json"
    refused(capsys, "log", "audit", log, "--key", key, "--state", str(state))
    assert not state.exists()
    args = ["--key", key, "--origin", origin, "--state", str(state)]
    code, out, _ = run(capsys, "log", "audit", log, *args)
    assert (code, out.split("\n")[0]) == (0, "OK: example.com/other: size 0 -> 5")
    err = fails(capsys, "audit_failed", "log", "audit", log, "--key", key, "--state", str(state))
    assert "the state is for 'example.com/other', not 'example.com/log/testdata'" in err
    assert "pass it with --origin" in err


def test_explicit_origin_is_checked_even_without_key(
    capsys: pytest.CaptureFixture[str], tessera: Any
) -> None:
    log = str(tessera.log)
    code, _, err = run(capsys, "log", "checkpoint", log, "--origin", "example.com/other")
    assert code == 1
    assert err == (
        "lictor: invalid_checkpoint: checkpoint origin 'example.com/log/testdata' "
        "is not 'example.com/other'\n"
    )
    code, _, err = run(capsys, "log", "prove", log, "--index", "0", "--origin", "x")
    assert (code, err.startswith("lictor: invalid_checkpoint:")) == (1, True)


# files and arguments that cannot be used: coded errors, never tracebacks ---------------


def test_long_key_without_plus(capsys: pytest.CaptureFixture[str], tessera: Any) -> None:
    key = "k" * 5000
    for command in ("checkpoint", "audit"):
        err = fails(capsys, "invalid_request", "log", command, str(tessera.log), "--key", key)
        assert "is neither a verifier key nor a file" in err
        assert len(err) < 200


def test_key_that_is_a_directory(
    capsys: pytest.CaptureFixture[str], tessera: Any, tmp_path: Path
) -> None:
    err = fails(capsys, "invalid_request", "log", "audit", str(tessera.log), "--key", str(tmp_path))
    assert "cannot read key file" in err and "Is a directory" in err


def test_long_source(capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(capsys, "invalid_request", "log", "checkpoint", "s" * 5000)
    assert "is neither an http(s) URL nor a directory" in err


def test_unreadable_input_files(
    capsys: pytest.CaptureFixture[str], tessera: Any, proof_file: Path, tmp_path: Path
) -> None:
    long = str(tmp_path / ("n" * 300))
    key, log = tessera.vkey, str(tessera.log)
    cases = {
        "proof file": ["log", "verify", str(tmp_path / "missing"), "--key", key],
        "entry file": ["log", "verify", str(proof_file), "--key", key, "--entry", long],
        "checkpoint": ["log", "prove", log, "--index", "0", "--checkpoint", str(tmp_path)],
        "state file": ["log", "audit", log, "--key", key, "--state", long],
    }
    for what, argv in cases.items():
        err = fails(capsys, "invalid_request", *argv)
        assert err.startswith(f"lictor: invalid_request: cannot read {what} {tmp_path}"), err


def test_state_file_that_is_a_directory(
    capsys: pytest.CaptureFixture[str], tessera: Any, tmp_path: Path
) -> None:
    args = ["log", "audit", str(tessera.log), "--key", tessera.vkey, "--state", str(tmp_path)]
    err = fails(capsys, "invalid_request", *args)
    assert err == f"lictor: invalid_request: cannot read state file {tmp_path}: Is a directory\n"


def test_state_file_that_is_not_json(
    capsys: pytest.CaptureFixture[str], tessera: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    state.write_bytes(b"{" * 100_000)
    args = ["log", "audit", str(tessera.log), "--key", tessera.vkey, "--state", str(state)]
    assert "malformed state" in fails(capsys, "audit_failed", *args)


def test_unwritable_output_files(
    capsys: pytest.CaptureFixture[str], tessera: Any, tmp_path: Path
) -> None:
    prove = ["log", "prove", str(tessera.log), "--index", "0", "--key", tessera.vkey]
    err = fails(capsys, "invalid_request", *prove, "--out", str(tmp_path))
    assert err == f"lictor: invalid_request: cannot write proof file {tmp_path}: Is a directory\n"
    nowhere = tmp_path / "missing" / "entry"
    err = fails(capsys, "invalid_request", *prove, "--entry-out", str(nowhere))
    assert err.startswith(f"lictor: invalid_request: cannot write entry file {nowhere}: ")
