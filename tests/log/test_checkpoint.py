"""Unit tests for `lictor.log.checkpoint`: checkpoint bodies, parsing and opening."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lictor.errors import CheckpointError, NoteError, SignatureError
from lictor.log import checkpoint, merkle, note
from lictor.log.checkpoint import Checkpoint, parse_checkpoint
from lictor.log.cosignature import Cosigner

ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()
LOG = note.Ed25519Signer("example.com/log", hashlib.sha256(b"log").digest())
WITNESS_SEED = hashlib.sha256(b"witness").digest()
WITNESS = Cosigner("example.com/witness", WITNESS_SEED, 1_700_000_000)


def test_text_and_parse() -> None:
    cp = Checkpoint("example.com/log", 42, ROOT)
    assert cp.text() == f"example.com/log\n42\n{ROOT_B64}\n"
    assert parse_checkpoint(cp.text()) == cp
    ext = Checkpoint("example.com/log", 0, ROOT, ("ext one", "ext two"))
    assert ext.text().endswith(f"{ROOT_B64}\next one\next two\n")
    assert parse_checkpoint(ext.text()) == ext


def test_legacy_origins_with_spaces_are_accepted() -> None:
    text = f"rekor.sigstore.dev - 2605736670972794746\n7\n{ROOT_B64}\n"
    assert parse_checkpoint(text).origin == "rekor.sigstore.dev - 2605736670972794746"


def test_size_bounds() -> None:
    assert parse_checkpoint(f"o\n0\n{ROOT_B64}\n").size == 0
    top = f"o\n{2**63 - 1}\n{ROOT_B64}\n"
    assert parse_checkpoint(top).size == merkle.MAX_TREE_SIZE == 2**63 - 1
    with pytest.raises(CheckpointError):
        parse_checkpoint(f"o\n{2**63}\n{ROOT_B64}\n")


@pytest.mark.parametrize(
    "size", [2**63, 2**64, 2**20_000, -(2**20_000)], ids=["2^63", "2^64", "2^20000", "-2^20000"]
)
def test_absurd_sizes_are_checkpoint_errors(size: int) -> None:
    # Sizes past 4,300 digits used to escape as ValueError from the message.
    with pytest.raises(CheckpointError, match="out of range"):
        Checkpoint("o", size, ROOT)
    with pytest.raises(CheckpointError, match="canonical decimal"):
        parse_checkpoint(f"o\n{'9' * 100_000}\n{ROOT_B64}\n")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        f"o\n1\n{ROOT_B64}",
        "o\n1\n",
        f"o\n{ROOT_B64}\n",
        f"\n1\n{ROOT_B64}\n",
        f" o\n1\n{ROOT_B64}\n",
        f"o \n1\n{ROOT_B64}\n",
        f"o\n01\n{ROOT_B64}\n",
        f"o\n00\n{ROOT_B64}\n",
        f"o\n+1\n{ROOT_B64}\n",
        f"o\n-1\n{ROOT_B64}\n",
        f"o\n 1\n{ROOT_B64}\n",
        f"o\n1 \n{ROOT_B64}\n",
        f"o\n1.0\n{ROOT_B64}\n",
        f"o\n0x1\n{ROOT_B64}\n",
        f"o\n١\n{ROOT_B64}\n",
        f"o\n\n{ROOT_B64}\n",
        f"o\n{'9' * 20}\n{ROOT_B64}\n",
        f"o\n1\n{ROOT_B64[:-1]}\n",
        f"o\n1\n{ROOT_B64} \n",
        f"o\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"o\n1\n{base64.b64encode(ROOT + b'x').decode()}\n",
        "o\n1\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n",
        "o\n1\n\n",
        f"o\n1\n{ROOT_B64}\n\n",
        f"o\n1\n{ROOT_B64}\next\n\n",
        f"o\n1\n{ROOT_B64}\n\next\n",
        f"o\r\n1\n{ROOT_B64}\n",
    ],
)
def test_malformed_checkpoints(text: str) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint(text)


@pytest.mark.parametrize(
    "args",
    [
        ("", 1, ROOT, ()),
        (" o", 1, ROOT, ()),
        ("o\nx", 1, ROOT, ()),
        ("o", -1, ROOT, ()),
        ("o", 2**63, ROOT, ()),
        ("o", 1, ROOT[:31], ()),
        ("o", 1, ROOT + b"\x00", ()),
        ("o", 1, ROOT, ("",)),
        ("o", 1, ROOT, ("a\nb",)),
    ],
)
def test_checkpoint_constructor_validates(args: tuple[str, int, bytes, tuple[str, ...]]) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint(*args)


def test_open_checkpoint() -> None:
    cp = Checkpoint("example.com/log", 5, ROOT)
    signed = note.sign_note(cp.text(), [LOG])
    parsed, opened = checkpoint.open_checkpoint(signed, [LOG.verifier])
    assert parsed == cp and opened.text == cp.text()
    assert checkpoint.open_checkpoint(signed, [LOG.verifier], origin="example.com/log")[0] == cp
    with pytest.raises(CheckpointError, match="origin"):
        checkpoint.open_checkpoint(signed, [LOG.verifier], origin="example.com/other")
    with pytest.raises(SignatureError):
        checkpoint.open_checkpoint(signed, [WITNESS.verifier])
    not_a_checkpoint = note.sign_note("just text\n", [LOG])
    with pytest.raises(CheckpointError):
        checkpoint.open_checkpoint(not_a_checkpoint, [LOG.verifier])
    with pytest.raises(NoteError):
        checkpoint.open_checkpoint(cp.text().encode(), [LOG.verifier])


@given(st.integers(0, merkle.MAX_TREE_SIZE), st.binary(min_size=32, max_size=32))
def test_a_checkpoint_signer_writes_what_sign_note_writes(size: int, root: bytes) -> None:
    signed = checkpoint.CheckpointSigner(LOG).sign(size, root)
    assert signed == note.sign_note(Checkpoint(LOG.name, size, root).text(), [LOG])
    opened, _ = checkpoint.open_checkpoint(signed, [LOG.verifier], LOG.name)
    assert (opened.size, opened.root) == (size, root)


def test_a_checkpoint_signer_refuses_what_is_no_checkpoint() -> None:
    signer = checkpoint.CheckpointSigner(LOG)
    for size, root in [(-1, bytes(32)), (merkle.MAX_TREE_SIZE + 1, bytes(32)), (1, bytes(31))]:
        with pytest.raises(CheckpointError):
            signer.sign(size, root)
