"""Unit tests for `lictor.log.tiles`: paths, tile arithmetic, bundles, TileHashReader."""

from __future__ import annotations

import pytest
from naive_rfc6962 import MemoryTree

from lictor.errors import TileError, TreeError
from lictor.log import merkle, tiles
from lictor.log.tiles import TILE_WIDTH, Tile, TileHashReader, parse_tile_path


@pytest.mark.parametrize(
    "n,text",
    [
        (0, "000"),
        (7, "007"),
        (999, "999"),
        (1000, "x001/000"),
        (1234067, "x001/x234/067"),
        (123456789, "x123/x456/789"),
        (2**64 - 1, "x018/x446/x744/x073/x709/x551/615"),
    ],
)
def test_format_index(n: int, text: str) -> None:
    assert tiles.format_index(n) == text
    assert tiles.parse_index(text.split("/")) == (n, TILE_WIDTH)


def test_format_index_rejects_negative_indexes() -> None:
    # (It used to loop forever: -1 // 1000 == -1.)
    with pytest.raises(TileError):
        tiles.format_index(-1)


def test_paths() -> None:
    assert Tile(0, 0).path == "tile/0/000"
    assert Tile(2, 1234067, 17).path == "tile/2/x001/x234/067.p/17"
    assert Tile(0, 5, 255, entries=True).path == "tile/entries/005.p/255"
    assert Tile(63, 1, 1).path == "tile/63/001.p/1"
    assert Tile(0, 1).is_partial is False and Tile(0, 1, 255).is_partial is True


@pytest.mark.parametrize(
    "path,tile",
    [
        ("tile/0/000", Tile(0, 0)),
        ("tile/1/x001/000.p/1", Tile(1, 1000, 1)),
        ("tile/entries/x001/x234/067", Tile(0, 1234067, entries=True)),
        ("tile/entries/000.p/255", Tile(0, 0, 255, entries=True)),
        ("tile/63/x018/x446/x744/x073/x709/x551/615", Tile(63, 2**64 - 1)),
    ],
)
def test_parse_tile_path(path: str, tile: Tile) -> None:
    assert parse_tile_path(path) == tile
    assert tile.path == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile",
        "tile/0",
        "tiles/0/000",
        "/tile/0/000",
        "tile//000",
        "tile/00/000",
        "tile/01/000",
        "tile/64/000",
        "tile/-1/000",
        "tile/a/000",
        "tile/data/000",
        "tile/0/00",
        "tile/0/0000",
        "tile/0/x000",
        "tile/0/x000/001",
        "tile/entries/x000/x000/255.p/3",
        "tile/0/001/002",
        "tile/0/x1/000",
        "tile/0/X001/000",
        "tile/0/x001/x002",
        "tile/0/000/",
        "tile/0/000.p",
        "tile/0/000.p/",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/007",
        "tile/0/000.p/1/2",
        "tile/0/000.p/+1",
        "tile/0/000.q/1",
        "tile/0/ 000",
        "tile/0/٠٠٠",
        "tile/0/x018/x446/x744/x073/x709/x551/616",
        "tile/0/x001/x001/x001/x001/x001/x001/x001/001",
        "tile/entries/000.p/256",
        "tile/entries/1/000",
    ],
)
def test_invalid_tile_paths(path: str) -> None:
    with pytest.raises(TileError):
        parse_tile_path(path)


@pytest.mark.parametrize(
    "args",
    [
        (-1, 0, 256, False),
        (64, 0, 256, False),
        (1, 0, 256, True),
        (0, -1, 256, False),
        (0, 2**64, 256, False),
        (0, 0, 0, False),
        (0, 0, 257, False),
    ],
)
def test_tile_constructor_validates(args: tuple[int, int, int, bool]) -> None:
    with pytest.raises(TileError):
        Tile(*args)


def test_level_width_and_tile_for() -> None:
    assert [tiles.level_width(70000, level) for level in range(4)] == [70000, 273, 1, 0]
    assert tiles.tile_for(0, 0, 70000) == Tile(0, 0)
    assert tiles.tile_for(0, 69999, 70000) == Tile(0, 273, 112)
    assert tiles.tile_for(1, 272, 70000) == Tile(1, 1, 17)
    assert tiles.tile_for(2, 0, 70000) == Tile(2, 0, 1)
    assert tiles.tile_for(0, 255, 256, entries=True) == Tile(0, 0, entries=True)
    for level, position, size in [(0, 70000, 70000), (0, -1, 70000), (2, 1, 70000), (3, 0, 70000)]:
        with pytest.raises(TreeError):
            tiles.tile_for(level, position, size)
    for size, level in [(-1, 0), (10, -1)]:
        with pytest.raises(TreeError):
            tiles.level_width(size, level)
    with pytest.raises(TreeError):
        tiles.tiles_for_size(-1)


def test_tiles_for_size() -> None:
    assert tiles.tiles_for_size(0) == []
    assert tiles.tiles_for_size(1) == [Tile(0, 0, 1)]
    assert tiles.tiles_for_size(256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles.tiles_for_size(512) == [Tile(0, 0), Tile(0, 1), Tile(1, 0, 2)]
    big = tiles.tiles_for_size(2**16)
    assert big[-2:] == [Tile(1, 0), Tile(2, 0, 1)] and len(big) == 256 + 1 + 1


def test_hash_indexes() -> None:
    assert Tile(0, 0, 3).hash_indexes() == [0, 1, 3]
    assert Tile(1, 0, 2).hash_indexes() == [
        merkle.stored_hash_index(8, 0),
        merkle.stored_hash_index(8, 1),
    ]
    assert Tile(0, 1, 1).hash_indexes() == [merkle.stored_hash_index(0, 256)]


def test_split_hashes() -> None:
    body = bytes(range(64))
    assert tiles.split_hashes(body, 2) == [body[:32], body[32:]]
    for width, data in [(2, body[:63]), (1, body), (3, body), (1, b"")]:
        with pytest.raises(TileError):
            tiles.split_hashes(data, width)


def test_bundles() -> None:
    entries = [b"", b"one", b"\x00" * 300, b"x" * 0xFFFF]
    data = tiles.encode_bundle(entries)
    assert data.startswith(b"\x00\x00\x00\x03one\x01\x2c")
    assert tiles.decode_bundle(data) == entries
    assert tiles.encode_bundle([]) == b"" and tiles.decode_bundle(b"") == []
    with pytest.raises(TileError):
        tiles.encode_bundle([b"x" * 0x10000])
    for bad in [b"\x00", b"\x00\x03on", data[:-1], data + b"\x00", b"\x00\x01"]:
        with pytest.raises(TileError):
            tiles.decode_bundle(bad)


# --- TileHashReader against an in-memory tree ----------------------------------------


@pytest.fixture(scope="module")
def big_tree() -> MemoryTree:
    # Large enough for a level-2 tile: 65,536 + 300 leaves.
    return MemoryTree.of_entries([i.to_bytes(4, "big") for i in range(65836)])


def _tile_store(tree: MemoryTree, size: int) -> dict[str, bytes]:
    return {
        t.path: b"".join(tree.read_hashes(t.hash_indexes())) for t in tiles.tiles_for_size(size)
    }


class Fetcher:
    def __init__(self, store: dict[str, bytes]) -> None:
        self.store = store
        self.fetched: list[str] = []

    def __call__(self, tile: Tile) -> bytes:
        self.fetched.append(tile.path)
        return self.store[tile.path]


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 300, 511, 512, 513, 65535, 65536, 65836])
def test_tile_hash_reader_matches_stored_hashes(big_tree: MemoryTree, size: int) -> None:
    fetch = Fetcher(_tile_store(big_tree, size))
    reader = TileHashReader(size, fetch)
    assert merkle.tree_hash(size, reader) == merkle.tree_hash(size, big_tree)
    for index in {0, size // 3, size - 1}:
        assert merkle.prove_inclusion(index, size, reader) == merkle.prove_inclusion(
            index, size, big_tree
        )
    for first in {1, size // 2 or 1, size}:
        assert merkle.prove_consistency(first, size, reader) == merkle.prove_consistency(
            first, size, big_tree
        )
    # Every tile body is fetched once, then served from the cache.
    assert len(fetch.fetched) == len(set(fetch.fetched))


def test_tile_hash_reader_refuses_nodes_outside_the_tree(big_tree: MemoryTree) -> None:
    reader = TileHashReader(300, Fetcher(_tile_store(big_tree, 300)))
    assert reader.read_hashes([merkle.stored_hash_index(1, 149)]) == big_tree.read_hashes(
        [merkle.stored_hash_index(1, 149)]
    )
    # Leaves 300-301 and the partial subtree over 256-299 do not exist yet:
    # a partial tile is never hashed upward.
    for level, n in [(0, 300), (1, 150), (8, 1), (6, 4), (9, 0)]:
        with pytest.raises(TreeError):
            reader.read_hashes([merkle.stored_hash_index(level, n)])


def test_tile_hash_reader_checks_tile_bodies(big_tree: MemoryTree) -> None:
    store = _tile_store(big_tree, 300)
    store["tile/0/001.p/44"] = store["tile/0/001.p/44"][:-1]
    with pytest.raises(TileError):
        merkle.tree_hash(300, TileHashReader(300, Fetcher(store)))


HUGE = 2**20_000  # printing it in a message used to raise ValueError instead


def test_huge_numbers_raise_log_errors() -> None:
    for args in ((HUGE, 0), (0, HUGE), (0, 0, HUGE), (-HUGE, 0)):
        with pytest.raises(TileError, match="out of range"):
            Tile(*args)
    with pytest.raises(TileError):
        tiles.format_index(-HUGE)
    for level, position, size in ((0, HUGE, 10), (HUGE, 0, 10), (0, 0, -HUGE), (-HUGE, 0, 1)):
        with pytest.raises(TreeError):
            tiles.tile_for(level, position, size)


@pytest.mark.parametrize(
    "size", [-1, merkle.MAX_TREE_SIZE + 1, HUGE], ids=["-1", "2^63", "2^20000"]
)
def test_tile_hash_reader_rejects_sizes_out_of_range(size: int) -> None:
    with pytest.raises(TreeError, match="out of range"):
        tiles.TileHashReader(size, lambda tile: b"")
