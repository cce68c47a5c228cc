"""`lictor.audit` against real tiled logs: Tessera's test log and logs built here."""

from __future__ import annotations

import base64
import http.server
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from lictor.audit import AuditState, audit, load_state, prove, save_state, verify_proof
from lictor.errors import (
    AuditError,
    CheckpointError,
    InvalidRequestError,
    KeyFormatError,
    UnavailableError,
)
from lictor.log.merkle import leaf_hash
from lictor.log.note import Ed25519Signer, Verifier, parse_verifier_key, sign_note
from lictor.log.tiles import Tile
from lictor.tilesource import DirectorySource, HttpSource, fetch_tile, load_verifier, open_source

BuildLog = Callable[[Path, Ed25519Signer, str, Sequence[bytes]], bytes]
SignCheckpoint = Callable[[Ed25519Signer, str, Sequence[bytes]], bytes]


@pytest.fixture
def verifier(tessera: Any) -> Verifier:
    return parse_verifier_key(tessera.vkey)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def at_size(log: Path, size: int) -> Path:
    """Make the log's ``checkpoint`` the Tessera checkpoint of ``size``."""
    shutil.copyfile(log / f"checkpoint.{size}", log / "checkpoint")
    return log


# (a) the Tessera log, as a directory and over HTTP -----------------------------


def test_audit_tessera_directory(tessera: Any, verifier: Verifier) -> None:
    result = audit(DirectorySource(tessera.log), verifier)
    assert (result.origin, result.old_size, result.size) == (tessera.origin, 0, 15)
    assert (result.entries_checked, result.bundles_checked, result.tiles_checked) == (15, 1, 1)
    assert base64.b64encode(result.root) == b"rKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs="
    assert result.state.checkpoint == (tessera.log / "checkpoint").read_bytes()


def test_audit_tessera_over_http(
    tessera: Any, verifier: Verifier, http_serve: Callable[[Path], str]
) -> None:
    url = http_serve(tessera.log)
    with open_source(url) as source:
        assert audit(source, verifier).size == 15


def test_bare_server_url_falls_back_to_log_prefix(
    tessera: Any, verifier: Verifier, http_serve: Callable[[Path], str]
) -> None:
    url = http_serve(tessera.log.parent)  # serves <url>/log/checkpoint, like Lictor
    source = HttpSource(url + "/")
    try:
        assert audit(source, verifier).size == 15
        assert source.prefix == url + "/log"
    finally:
        source.close()


@pytest.mark.parametrize("size", range(16))
def test_audit_every_tessera_size(tessera_copy: Path, verifier: Verifier, size: int) -> None:
    result = audit(DirectorySource(at_size(tessera_copy, size)), verifier)
    assert result.size == result.entries_checked == size
    assert result.tiles_checked == (1 if size else 0)


# (b) tampering is caught -------------------------------------------------------


def audit_error(log: Path, verifier: Verifier, state: AuditState | None = None) -> str:
    with pytest.raises(AuditError) as e:
        audit(DirectorySource(log), verifier, state)
    return e.value.message


def test_flipped_hash_tile_byte(tessera_copy: Path, verifier: Verifier) -> None:
    flip(tessera_copy / "tile/0/000.p/15", 32 * 5 + 7)
    message = audit_error(tessera_copy, verifier)
    assert "tile/0/000.p/15: hash 5" in message
    assert "recomputed from the entries" in message


def test_flipped_entry_byte(tessera_copy: Path, verifier: Verifier) -> None:
    flip(tessera_copy / "tile/entries/000.p/15", 4)  # "one" -> "ond"
    message = audit_error(tessera_copy, verifier)
    assert "entries 0..14 give root" in message
    assert "but the checkpoint says rKbDipCv" in message
    assert "tile/0/000.p/15: hash 0" in message  # the tile still has the old leaf


def test_modified_checkpoint_root(tessera_copy: Path, verifier: Verifier) -> None:
    cp = tessera_copy / "checkpoint"
    cp.write_bytes(cp.read_bytes().replace(b"rKbDipCv", b"rKbDipCw"))
    assert "checkpoint: bad_signature: invalid signature" in audit_error(tessera_copy, verifier)


def test_checkpoint_signed_by_another_key(
    tessera: Any, tessera_copy: Path, verifier: Verifier
) -> None:
    text = (tessera_copy / "checkpoint").read_text().split("\n\n")[0] + "\n"
    impostor = Ed25519Signer.generate(tessera.origin)
    (tessera_copy / "checkpoint").write_bytes(sign_note(text, [impostor]))
    assert "no verifiable signatures" in audit_error(tessera_copy, verifier)


def test_tile_of_wrong_length(tessera_copy: Path, verifier: Verifier) -> None:
    tile = tessera_copy / "tile/0/000.p/15"
    tile.write_bytes(tile.read_bytes()[:-1])
    assert "tile/0/000.p/15: tile has 479 bytes, expected 480" in audit_error(
        tessera_copy, verifier
    )


@pytest.mark.parametrize(
    ("garbage", "expected"),
    [(b"\x00", "truncated in a length prefix"), (b"\x00\x01x", "has 16 entries, expected 15")],
)
def test_bundle_with_trailing_garbage(
    tessera_copy: Path, verifier: Verifier, garbage: bytes, expected: str
) -> None:
    bundle = tessera_copy / "tile/entries/000.p/15"
    bundle.write_bytes(bundle.read_bytes() + garbage)
    assert expected in audit_error(tessera_copy, verifier)


def test_missing_tile(tessera_copy: Path, verifier: Verifier) -> None:
    (tessera_copy / "tile/0/000.p/15").unlink()
    message = audit_error(tessera_copy, verifier)
    assert "tile/0/000.p/15: missing (and so is tile/0/000)" in message


def test_tampering_over_http(
    tessera_copy: Path, verifier: Verifier, http_serve: Callable[[Path], str]
) -> None:
    flip(tessera_copy / "tile/0/000.p/15", 0)
    with open_source(http_serve(tessera_copy)) as source, pytest.raises(AuditError) as e:
        audit(source, verifier)
    assert "tile/0/000.p/15: hash 0" in e.value.message


# (c) state: resume, forks, rollbacks --------------------------------------------


@pytest.fixture
def state7(tessera_copy: Path, verifier: Verifier) -> AuditState:
    return audit(DirectorySource(at_size(tessera_copy, 7)), verifier).state


def test_resume_from_state(tessera_copy: Path, verifier: Verifier, state7: AuditState) -> None:
    assert (state7.size, len(state7.edge)) == (7, 3)
    result = audit(DirectorySource(at_size(tessera_copy, 15)), verifier, state7)
    assert (result.old_size, result.size, result.entries_checked) == (7, 15, 8)
    assert result.state.size == 15
    again = audit(DirectorySource(tessera_copy), verifier, result.state)
    assert (again.old_size, again.size, again.entries_checked, again.tiles_checked) == (
        15,
        15,
        0,
        0,
    )


def test_state_file_round_trip(state7: AuditState, tmp_path: Path) -> None:
    (tmp_path / "states").mkdir()
    path = tmp_path / "states" / "state.json"
    assert load_state(path) is None
    save_state(path, state7)
    assert load_state(path) == state7
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary left


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: {**s, "root": s["compact_range"][0]},
        lambda s: {**s, "compact_range": s["compact_range"][:1]},
        lambda s: {**s, "size": "7"},
        lambda s: {**s, "checkpoint": s["checkpoint"].replace("\n7\n", "\n6\n")},
        lambda s: {k: v for k, v in s.items() if k != "origin"},
    ],
)
def test_malformed_state_is_rejected(state7: AuditState, edit: Callable[[Any], Any]) -> None:
    with pytest.raises(AuditError, match="malformed state"):
        AuditState.from_json(edit(state7.to_json()))


def test_forked_log_fails_consistency(
    tessera: Any,
    tessera_signer: Ed25519Signer,
    state7: AuditState,
    verifier: Verifier,
    build_log: BuildLog,
    tmp_path: Path,
) -> None:
    entries = list(tessera.entries)
    entries[3] = b"FOUR"  # before the audited size 7: a fork
    fork = tmp_path / "fork"
    build_log(fork, tessera_signer, tessera.origin, entries)
    message = audit_error(fork, verifier, state7)
    assert "entries 0..6 are not those of the tree of size 7" in message
    assert "not consistent with the state" in message
    # Without the state, the forked log is a perfectly fine log.
    assert audit(DirectorySource(fork), verifier).size == 15


def test_entries_after_the_state_may_differ(
    tessera: Any,
    tessera_signer: Ed25519Signer,
    state7: AuditState,
    verifier: Verifier,
    build_log: BuildLog,
    tmp_path: Path,
) -> None:
    entries = [*tessera.entries[:7], b"other", b"entries"]
    build_log(tmp_path / "other", tessera_signer, tessera.origin, entries)
    assert audit(DirectorySource(tmp_path / "other"), verifier, state7).size == 9


def test_same_size_different_root(
    tessera: Any,
    tessera_signer: Ed25519Signer,
    tessera_copy: Path,
    verifier: Verifier,
    build_log: BuildLog,
    tmp_path: Path,
) -> None:
    state = audit(DirectorySource(tessera_copy), verifier).state
    build_log(tmp_path / "fork", tessera_signer, tessera.origin, [*tessera.entries[:14], b"x"])
    assert "fork: two roots for size 15" in audit_error(tmp_path / "fork", verifier, state)


def test_shrinking_tree(tessera_copy: Path, verifier: Verifier) -> None:
    state = audit(DirectorySource(tessera_copy), verifier).state
    message = audit_error(at_size(tessera_copy, 7), verifier, state)
    assert "the tree shrank: size 7 after size 15" in message


def test_changed_origin(
    tessera: Any,
    tessera_signer: Ed25519Signer,
    state7: AuditState,
    verifier: Verifier,
    build_log: BuildLog,
    tmp_path: Path,
) -> None:
    build_log(tmp_path / "moved", tessera_signer, "example.com/elsewhere", tessera.entries)
    message = audit_error(tmp_path / "moved", verifier, state7)
    assert "checkpoint origin 'example.com/elsewhere' is not 'example.com/log/testdata'" in message
    with pytest.raises(AuditError) as e:  # --origin does not override the state
        audit(DirectorySource(tmp_path / "moved"), verifier, state7, origin="example.com/elsewhere")
    assert e.value.message == (
        "origin changed: the state is for 'example.com/log/testdata', not 'example.com/elsewhere'"
    )


# Origins are pinned: to the key's name unless given ------------------------------


@pytest.fixture
def other_origin_log(
    tessera: Any, tessera_signer: Ed25519Signer, build_log: BuildLog, tmp_path: Path
) -> Path:
    """A log signed by the Tessera key under another origin (a key shared by two logs)."""
    build_log(tmp_path / "other", tessera_signer, "example.com/other", tessera.entries[:5])
    return tmp_path / "other"


def test_audit_pins_origin_to_key_name(other_origin_log: Path, verifier: Verifier) -> None:
    message = audit_error(other_origin_log, verifier)
    assert "checkpoint origin 'example.com/other' is not 'example.com/log/testdata'" in message
    assert "pass it with --origin" in message
    result = audit(DirectorySource(other_origin_log), verifier, origin="example.com/other")
    assert (result.origin, result.size) == ("example.com/other", 5)


def test_explicit_origin_must_match(tessera: Any, verifier: Verifier) -> None:
    with pytest.raises(AuditError) as e:
        audit(DirectorySource(tessera.log), verifier, origin="example.com/other")
    assert e.value.message.endswith("is not 'example.com/other'")  # no hint: it was explicit


def test_prove_and_verify_pin_origin(other_origin_log: Path, verifier: Verifier) -> None:
    source = DirectorySource(other_origin_log)
    with pytest.raises(CheckpointError, match="pass it with --origin"):
        prove(source, 2, verifier)
    with pytest.raises(CheckpointError, match=r"is not 'example\.com/log/testdata'"):
        prove(source, 2, None, origin="example.com/log/testdata")  # checked even unsigned
    proved = prove(source, 2, verifier, origin="example.com/other")
    with pytest.raises(CheckpointError, match="pass it with --origin"):
        verify_proof(proved.proof, proved.entry, verifier)
    assert verify_proof(proved.proof, proved.entry, verifier, "example.com/other").size == 5


def test_state_from_another_key(state7: AuditState, tessera_copy: Path) -> None:
    other = Ed25519Signer.generate("example.com/log/testdata").verifier
    message = audit_error(tessera_copy, other, state7)
    assert "the saved state's checkpoint does not verify" in message


# A larger log: full tiles, level-1 tiles, partials gone -------------------------


@pytest.fixture
def big_log(
    tmp_path: Path,
    tessera_signer: Ed25519Signer,
    build_log: BuildLog,
    checkpoint_for: SignCheckpoint,
) -> Iterator[tuple[Path, bytes, bytes]]:
    """A 300-entry log (tile/0/000, 001.p/44, 1/000.p/1) and a size-200 checkpoint
    whose partial tiles (000.p/200) were never written: clients must use full tiles."""
    entries = [f"record {i}".encode() for i in range(300)]
    log = tmp_path / "big"
    note300 = build_log(log, tessera_signer, "example.com/log/testdata", entries)
    note200 = checkpoint_for(tessera_signer, "example.com/log/testdata", entries[:200])
    yield log, note200, note300


def test_partial_tiles_fall_back_to_full_tiles(
    big_log: tuple[Path, bytes, bytes], verifier: Verifier
) -> None:
    log, note200, note300 = big_log
    (log / "checkpoint").write_bytes(note200)
    first = audit(DirectorySource(log), verifier)
    assert (first.size, first.bundles_checked, first.tiles_checked) == (200, 1, 1)
    (log / "checkpoint").write_bytes(note300)
    second = audit(DirectorySource(log), verifier, first.state)
    assert (second.old_size, second.size, second.entries_checked) == (200, 300, 100)
    assert (second.bundles_checked, second.tiles_checked) == (2, 3)
    assert second.state == audit(DirectorySource(log), verifier).state


def test_resume_checks_old_hashes_in_reused_tiles(
    big_log: tuple[Path, bytes, bytes], verifier: Verifier
) -> None:
    log, note200, note300 = big_log
    (log / "checkpoint").write_bytes(note200)
    state = audit(DirectorySource(log), verifier).state
    flip(log / "tile/0/000", 32 * 100)
    (log / "checkpoint").write_bytes(note300)
    assert "tile/0/000: hashes 0..199 differ from the tree audited before" in audit_error(
        log, verifier, state
    )


def test_level_one_tile_is_checked(big_log: tuple[Path, bytes, bytes], verifier: Verifier) -> None:
    log, _, _ = big_log
    flip(log / "tile/1/000.p/1", 31)
    assert "tile/1/000.p/1: hash 0 (node 0 of tree level 8)" in audit_error(log, verifier)


def test_full_tile_used_for_a_missing_partial_must_be_full(
    big_log: tuple[Path, bytes, bytes], verifier: Verifier
) -> None:
    log, note200, _ = big_log
    (log / "checkpoint").write_bytes(note200)
    tile = log / "tile/0/000"
    tile.write_bytes(tile.read_bytes()[: 32 * 200])
    assert "tile/0/000: tile has 6400 bytes, expected 8192" in audit_error(log, verifier)


def test_prove_uses_full_tiles_for_an_older_checkpoint(
    big_log: tuple[Path, bytes, bytes], verifier: Verifier
) -> None:
    log, note200, _ = big_log
    source = DirectorySource(log)
    for index in (0, 150, 199):
        proved = prove(source, index, verifier, note=note200)
        assert proved.entry == f"record {index}".encode()
        assert verify_proof(proved.proof, proved.entry, verifier).size == 200
    assert len(fetch_tile(source, Tile(0, 0, 200))) == 6400


# Sources and keys ----------------------------------------------------------------


def test_unreachable_server_is_unavailable() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    with open_source(f"http://127.0.0.1:{port}/log") as source, pytest.raises(UnavailableError):
        source.checkpoint()


class _RedirectHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(302)
        port = cast(http.server.HTTPServer, self.server).server_port
        self.send_header("Location", f"http://localhost:{port}/x")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_redirect_to_another_host_is_refused() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RedirectHandler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/log"
        with open_source(url) as source, pytest.raises(UnavailableError, match="another host"):
            source.checkpoint()
    finally:
        server.shutdown()
        server.server_close()


def test_source_must_be_url_or_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError), open_source(str(tmp_path / "nope")):
        pass
    with pytest.raises(InvalidRequestError), open_source("ftp://example.com/log"):
        pass


def test_directory_source_stays_inside(tessera: Any) -> None:
    with pytest.raises(InvalidRequestError):
        DirectorySource(tessera.log).read("../keys_and_entries.json")


def test_key_from_string_or_file(tessera: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "log.vkey"
    key_file.write_text(tessera.vkey + "\n")
    assert load_verifier(str(key_file)).key_id == load_verifier(tessera.vkey).key_id == 0x33D7B496


def test_key_is_parsed_before_it_is_taken_for_a_path(tessera: Any) -> None:
    name, key_id, key = tessera.vkey.split("+", 2)
    long_name = name + "/" + "x" * 300  # as a path, too long for the file system
    with pytest.raises(KeyFormatError, match="key id does not match"):
        load_verifier(f"{long_name}+{key_id}+{key}")
    with pytest.raises(InvalidRequestError, match="neither a verifier key nor a file"):
        load_verifier("k" * 5000)


def test_key_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match=r"cannot read key file .*Is a directory"):
        load_verifier(str(tmp_path))
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidRequestError, match="is not UTF-8"):
        load_verifier(str(tmp_path / "binary"))


def test_state_files_that_cannot_be_read_or_written(state7: AuditState, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match=r"cannot write state file .*Is a directory"):
        save_state(tmp_path, state7)
    assert list(tmp_path.iterdir()) == [tmp_path / "tessera"]  # no temporary left
    with pytest.raises(InvalidRequestError, match=r"cannot read state file .*Is a directory"):
        load_state(tmp_path)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    with pytest.raises(AuditError, match=r"malformed state: .* is not UTF-8 JSON"):
        load_state(deep)


def test_prove_checks_entry_against_root(tessera_copy: Path, verifier: Verifier) -> None:
    proved = prove(DirectorySource(tessera_copy), 14, verifier)
    assert proved.entry == b"fivten"
    assert leaf_hash(proved.entry) == (tessera_copy / "tile/0/000.p/15").read_bytes()[-32:]
    flip(tessera_copy / "tile/entries/000.p/15", 9)  # "two" -> "twn"
    with pytest.raises(AuditError, match="do not match its root"):
        prove(DirectorySource(tessera_copy), 1, verifier)
