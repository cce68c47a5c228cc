"""FiloSottile/sunlight vectors: skylight's Ed25519 cosignatures (0x04) and
300-leaf mirror tree, and real navigli2025h2 level-0 tiles.

The log's own RFC 6962 TreeHeadSignature (type 0x05) is not verified: lictor
has no 0x05 verifier, so that signature is only carried as an unknown one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from naive_rfc6962 import MemoryTree, Naive

from lictor.errors import SignatureError
from lictor.log import checkpoint, cosignature, merkle, note, tiles
from lictor.log.tiles import Tile, TileHashReader

TIMESTAMP = 1767139200


@pytest.fixture(scope="module")
def skylight(vectors: Path) -> Path:
    return vectors / "sunlight-skylight"


@pytest.fixture(scope="module")
def keys(skylight: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((skylight / "keys_and_leaves.json").read_text())
    return data


def _cosigner(keys: dict[str, Any], name: str) -> cosignature.Cosigner:
    derivation = keys["derivation_from_gen_go"][name]
    seed = hashlib.sha256(derivation["seed_string"].encode()).digest()
    assert seed.hex() == derivation["seed_hex"]
    return cosignature.Cosigner(name, seed, keys["derivation_from_gen_go"]["cosignature_timestamp"])


def _origin_dir(origin: str) -> str:
    return hashlib.sha256(origin.encode()).hexdigest()


@pytest.mark.parametrize(
    "name,metadata",
    [
        ("witness.example.org", "witness/witness.v0.json"),
        ("witness2.example.org", "witness2/witness.v0.json"),
        ("mirror.example.org", "witness/mirror/mirror.v0.json"),
    ],
)
def test_derived_cosigner_keys(
    skylight: Path, keys: dict[str, Any], name: str, metadata: str
) -> None:
    vkey = _cosigner(keys, name).verifier.vkey()
    assert [vkey] == keys["vkeys"][name]
    assert json.loads((skylight / metadata).read_text())["verifier_keys"] == [vkey]
    assert isinstance(note.parse_verifier_key(vkey), cosignature.CosignatureVerifier)


@pytest.mark.parametrize(
    "name,origin,folder",
    [
        ("witness.example.org", "rome2026h1.example.org", "witness"),
        ("witness2.example.org", "milan2026h1.example.org", "witness2"),
    ],
)
def test_witness_cosignatures(
    skylight: Path, keys: dict[str, Any], name: str, origin: str, folder: str
) -> None:
    assert keys["origin_hash_dirs"][origin] == _origin_dir(origin)
    data = (skylight / folder / _origin_dir(origin) / "checkpoint").read_bytes()
    verifier = note.parse_verifier_key(keys["vkeys"][name][0])
    cp, opened = checkpoint.open_checkpoint(data, [verifier], origin=origin)
    assert cp.size == 300
    (cosig,) = opened.verified
    assert cosig.name == name and cosignature.cosignature_time(cosig) == TIMESTAMP
    # Ed25519 is deterministic: re-cosigning gives the same bytes.
    assert _cosigner(keys, name).sign(opened.text.encode()) == cosig.signature
    assert data.decode().endswith(cosig.line())
    tampered = data.replace(b"\n300\n", b"\n301\n")
    with pytest.raises(SignatureError):
        checkpoint.open_checkpoint(tampered, [verifier])


def test_log_signature_is_carried_as_unknown(skylight: Path, keys: dict[str, Any]) -> None:
    tree = (skylight / "tree" / "checkpoint").read_bytes()
    (log_sig,) = note.parse_note(tree).signatures
    assert log_sig.name == "rome2026h1.example.org"
    witnessed = skylight / "witness" / _origin_dir("rome2026h1.example.org") / "checkpoint"
    verifier = note.parse_verifier_key(keys["vkeys"]["witness.example.org"][0])
    _, opened = checkpoint.open_checkpoint(witnessed.read_bytes(), [verifier])
    assert opened.unverified == (log_sig,)
    # The log's note alone has no signature we can verify.
    with pytest.raises(SignatureError):
        checkpoint.open_checkpoint(tree, [verifier])
    # Its root is a placeholder (not a Merkle root), as documented.
    fake_root = hashlib.sha256(b"skylight test tree root").digest()
    assert checkpoint.parse_checkpoint(opened.text).root == fake_root


# --- the 300-leaf mirror tree ------------------------------------------------------


@pytest.fixture(scope="module")
def mirror(skylight: Path) -> Path:
    return skylight / "witness" / "mirror" / _origin_dir("rome2026h1.example.org")


@pytest.fixture(scope="module")
def records() -> list[bytes]:
    return [f"record {i}".encode() for i in range(300)]


@pytest.fixture(scope="module")
def mirror_checkpoint(mirror: Path, keys: dict[str, Any]) -> checkpoint.Checkpoint:
    verifier = note.parse_verifier_key(keys["vkeys"]["mirror.example.org"][0])
    cp, opened = checkpoint.open_checkpoint((mirror / "checkpoint").read_bytes(), [verifier])
    assert [s.name for s in opened.verified] == ["mirror.example.org"]
    assert opened.unverified == ()
    return cp


def test_mirror_tiles(mirror: Path, records: list[bytes]) -> None:
    leaves = [merkle.leaf_hash(r) for r in records]
    full = (mirror / "tile" / "0" / "000").read_bytes()
    assert len(full) == 8192
    assert tiles.split_hashes(full, 256) == leaves[:256]
    partial = (mirror / "tile" / "0" / "001.p" / "44").read_bytes()
    assert tiles.split_hashes(partial, 44) == leaves[256:]
    level1 = (mirror / "tile" / "1" / "000.p" / "1").read_bytes()
    assert tiles.split_hashes(level1, 1) == [merkle.merkle_root(leaves[:256])]
    assert [t.path for t in tiles.tiles_for_size(300)] == [
        "tile/0/000",
        "tile/0/001.p/44",
        "tile/1/000.p/1",
    ]


def test_mirror_root(
    mirror: Path, records: list[bytes], mirror_checkpoint: checkpoint.Checkpoint
) -> None:
    assert (mirror_checkpoint.origin, mirror_checkpoint.size) == ("rome2026h1.example.org", 300)
    assert mirror_checkpoint.root == Naive.of_entries(records).root(300)
    level1 = (mirror / "tile" / "1" / "000.p" / "1").read_bytes()
    partial = tiles.split_hashes((mirror / "tile" / "0" / "001.p" / "44").read_bytes(), 44)
    assert mirror_checkpoint.root == merkle.node_hash(level1, merkle.merkle_root(partial))
    fetched: list[str] = []

    def fetch(tile: Tile) -> bytes:
        fetched.append(tile.path)
        return (mirror / tile.path).read_bytes()

    assert merkle.tree_hash(300, TileHashReader(300, fetch)) == mirror_checkpoint.root
    # The root needs the level-1 tile and the partial tile, not tile/0/000.
    assert sorted(fetched) == ["tile/0/001.p/44", "tile/1/000.p/1"]


def test_mirror_proofs_through_tiles(
    mirror: Path, records: list[bytes], mirror_checkpoint: checkpoint.Checkpoint
) -> None:
    reader = TileHashReader(300, lambda tile: (mirror / tile.path).read_bytes())
    root = mirror_checkpoint.root
    naive = Naive.of_entries(records)
    tree = MemoryTree.of_entries(records)
    for index, record in enumerate(records):
        proof = merkle.prove_inclusion(index, 300, reader)
        assert proof == naive.inclusion(index, 300) == merkle.prove_inclusion(index, 300, tree)
        merkle.verify_inclusion(index, 300, merkle.leaf_hash(record), proof, root)
    for first in range(1, 301):
        proof = merkle.prove_consistency(first, 300, reader)
        merkle.verify_consistency(first, 300, naive.root(first), root, proof)


# --- navigli2025h2 ----------------------------------------------------------------


def test_navigli_partial_tile_is_a_prefix(vectors: Path) -> None:
    folder = vectors / "sunlight-navigli2025h2"
    for n in ("000", "001", "002", "003"):
        tile = tiles.parse_tile_path(f"tile/0/{n}")
        data = (folder / tile.path).read_bytes()
        assert len(data) == 8192 == tiles.TILE_WIDTH * merkle.HASH_SIZE
        assert len(set(tiles.split_hashes(data, tile.width))) == 256
    partial_tile = tiles.parse_tile_path("tile/0/003.p/10")
    assert partial_tile == Tile(0, 3, 10)
    partial = (folder / partial_tile.path).read_bytes()
    full = (folder / "tile" / "0" / "003").read_bytes()
    assert len(partial) == 320
    assert full.startswith(partial)
    assert tiles.split_hashes(partial, 10) == tiles.split_hashes(full, 256)[:10]
