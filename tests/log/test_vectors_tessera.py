"""transparency-dev/tessera vectors: the POSIX test log (checkpoints 0-15, hash
tiles, entry bundles) and the tile-path layout tests of `api/layout`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from naive_rfc6962 import MemoryTree, Naive

from lictor.errors import TileError
from lictor.log import checkpoint, merkle, note, tiles
from lictor.log.tiles import Tile, TileHashReader


@pytest.fixture(scope="module")
def tessera(vectors: Path) -> Path:
    return vectors / "tessera-testdata-log"


@pytest.fixture(scope="module")
def keys(tessera: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tessera / "keys_and_entries.json").read_text())
    return data


@pytest.fixture(scope="module")
def entries(keys: dict[str, Any]) -> list[bytes]:
    return [e.encode() for e in keys["entries_in_order"]]


SIZES = range(16)


def test_the_log_has_sixteen_checkpoints(tessera: Path, entries: list[bytes]) -> None:
    assert len(entries) == 15
    assert sorted(p.name for p in (tessera / "log").glob("checkpoint.*")) == sorted(
        f"checkpoint.{n}" for n in SIZES
    )
    assert (tessera / "log" / "checkpoint").read_bytes() == (
        tessera / "log" / "checkpoint.15"
    ).read_bytes()


@pytest.mark.parametrize("size", SIZES)
def test_checkpoint(tessera: Path, keys: dict[str, Any], entries: list[bytes], size: int) -> None:
    verifier = note.parse_verifier_key(keys["log_public_key"])
    signer = note.parse_signer_key(keys["log_private_key"])
    assert signer.verifier.vkey() == keys["log_public_key"]
    data = (tessera / "log" / f"checkpoint.{size}").read_bytes()
    cp, opened = checkpoint.open_checkpoint(data, [verifier], origin=keys["origin"])
    assert cp.size == size
    # Ed25519 is deterministic: our signature over the same body is the same.
    assert note.sign_note(opened.text, [signer]) == data
    assert cp.text() == opened.text
    assert cp.root == merkle.merkle_root([merkle.leaf_hash(e) for e in entries[:size]])
    assert cp.root == Naive.of_entries(entries[:size]).root(size)


@pytest.mark.parametrize("size", SIZES[1:])
def test_tiles_and_bundles(tessera: Path, entries: list[bytes], size: int) -> None:
    hash_tile = (tessera / "log" / "tile" / "0" / "000.p" / str(size)).read_bytes()
    assert tiles.split_hashes(hash_tile, size) == [merkle.leaf_hash(e) for e in entries[:size]]
    bundle = (tessera / "log" / "tile" / "entries" / "000.p" / str(size)).read_bytes()
    assert tiles.decode_bundle(bundle) == entries[:size]
    assert tiles.encode_bundle(entries[:size]) == bundle
    assert tiles.tile_for(0, size - 1, size, entries=True).path == f"tile/entries/000.p/{size}"


@pytest.mark.parametrize("size", SIZES[1:])
def test_root_and_proofs_from_the_tiles(tessera: Path, entries: list[bytes], size: int) -> None:
    def fetch(tile: Tile) -> bytes:
        return (tessera / "log" / tile.path).read_bytes()

    reader = TileHashReader(size, fetch)
    root = checkpoint.parse_checkpoint(
        note.parse_note((tessera / "log" / f"checkpoint.{size}").read_bytes()).text
    ).root
    assert merkle.tree_hash(size, reader) == root
    for index in range(size):
        proof = merkle.prove_inclusion(index, size, reader)
        merkle.verify_inclusion(index, size, merkle.leaf_hash(entries[index]), proof, root)


def test_successive_checkpoints_are_consistent(
    tessera: Path, keys: dict[str, Any], entries: list[bytes]
) -> None:
    verifier = note.parse_verifier_key(keys["log_public_key"])
    notes = [(tessera / "log" / f"checkpoint.{n}").read_bytes() for n in SIZES]
    cps = [checkpoint.open_checkpoint(data, [verifier])[0] for data in notes]
    tree = MemoryTree.of_entries(entries)
    # Successive non-empty checkpoints (nothing is proven from size 0).
    for old, new in itertools.pairwise(cps[1:]):
        proof = merkle.prove_consistency(old.size, new.size, tree)
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    for first in SIZES[1:]:
        for second in SIZES[first:]:
            proof = merkle.prove_consistency(first, second, tree)
            merkle.verify_consistency(first, second, cps[first].root, cps[second].root, proof)
    assert cps[0].root == merkle.EMPTY_ROOT


# --- api/layout ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def layout(vectors: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vectors / "tessera-layout" / "tile_paths.json").read_text())
    return data


def _width(case: dict[str, Any]) -> int:
    # Tessera writes a full tile as partial width 0.
    return case.get("p") or tiles.TILE_WIDTH


def test_entries_path_for_log_index(layout: dict[str, Any]) -> None:
    assert layout["EntriesPathForLogIndex"]
    for case in layout["EntriesPathForLogIndex"]:
        tile = tiles.tile_for(0, case["seq"], case["logSize"], entries=True)
        assert tile.path == case["wantPath"]
        assert tiles.parse_tile_path(case["wantPath"]) == tile


def test_entries_path(layout: dict[str, Any]) -> None:
    assert layout["EntriesPath"]
    for case in layout["EntriesPath"]:
        tile = Tile(0, case["N"], _width(case), entries=True)
        assert tile.path == case["wantPath"]
        assert tiles.parse_tile_path(case["wantPath"]) == tile


def test_tile_path(layout: dict[str, Any]) -> None:
    assert layout["TilePath"]
    for case in layout["TilePath"]:
        tile = Tile(case["level"], case["index"], _width(case))
        assert tile.path == case["wantPath"]
        assert tiles.parse_tile_path(case["wantPath"]) == tile


def test_n_with_suffix(layout: dict[str, Any]) -> None:
    assert layout["NWithSuffix"]
    for case in layout["NWithSuffix"]:
        tile = Tile(case["level"], case["index"], _width(case))
        assert tile.path == f"tile/{case['level']}/{case['wantPath']}"
        assert tiles.parse_index(case["wantPath"].split("/")) == (case["index"], _width(case))


def test_parse_tile_level_index_partial(layout: dict[str, Any]) -> None:
    cases = layout["ParseTileLevelIndexPartial"]
    assert len(cases) == 19
    for case in cases:
        path = f"tile/{case['pathLevel']}/{case['pathIndex']}"
        if case.get("wantErr"):
            with pytest.raises(TileError):
                tiles.parse_tile_path(path)
        else:
            tile = tiles.parse_tile_path(path)
            assert (tile.level, tile.index) == (case["wantLevel"], case["wantIndex"])
            assert tile.width == (case["wantP"] or tiles.TILE_WIDTH)
            assert tile.path == path


def _recording_reader(tree: MemoryTree, size: int) -> tuple[TileHashReader, list[Tile]]:
    """A TileHashReader over ``tree``'s tiles, and the list of tiles it fetches."""
    fetched: list[Tile] = []

    def fetch(tile: Tile) -> bytes:
        fetched.append(tile)
        return b"".join(tree.read_hashes(tile.hash_indexes()))

    return TileHashReader(size, fetch), fetched


def test_node_coords_to_tile_address(layout: dict[str, Any]) -> None:
    """Reading tree node (level, index) through a TileHashReader fetches the
    expected tile and hashes the expected node inside it."""
    cases = layout["NodeCoordsToTileAddress"]
    assert cases
    size = 2 * tiles.TILE_WIDTH
    tree = MemoryTree.of_entries([i.to_bytes(3, "big") for i in range(size)])
    for case in cases:
        reader, fetched = _recording_reader(tree, size)
        index = merkle.stored_hash_index(case["treeLevel"], case["treeIndex"])
        (got,) = reader.read_hashes([index])
        assert got == tree.read_hashes([index])[0]
        assert [(t.level, t.index) for t in fetched] == [
            (case["wantTileLevel"], case["wantTileIndex"])
        ]
        tile_hashes = reader.tile_hashes(fetched[0])
        node_level, node_index = case["wantNodeLevel"], case["wantNodeIndex"]
        span = tile_hashes[node_index << node_level : (node_index + 1) << node_level]
        assert merkle.merkle_root(span) == got
