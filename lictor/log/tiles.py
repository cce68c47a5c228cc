"""C2SP tlog-tiles (c2sp.org/tlog-tiles): paths, hash tiles, entry bundles; no I/O.

A tile is 256 hashes of tree level ``8 * L``; the rightmost tile of a level
may be partial (``.p/W``, 1 <= W <= 255) and is never hashed upward. Entry
bundles hold the entries behind a level-0 tile as ``uint16 BE length ||
entry``. `TileHashReader` turns any tile source into a `HashReader`, so the
same proof code runs against Lictor's database and against any tiled log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from lictor.errors import TileError, TreeError
from lictor.log.encoding import describe_int
from lictor.log.merkle import (
    HASH_SIZE,
    MAX_TREE_SIZE,
    merkle_root,
    split_stored_hash_index,
    stored_hash_index,
)

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_ENTRY_SIZE = 0xFFFF
MAX_LEVEL = 63
_INDEX_GROUP = re.compile(r"[0-9]{3}")


@dataclass(frozen=True)
class Tile:
    """One hash tile (``level`` >= 0) or entry bundle (``entries`` set, level 0)."""

    level: int
    index: int
    width: int = TILE_WIDTH
    entries: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_LEVEL:
            raise TileError(f"tile level {describe_int(self.level)} out of range")
        if self.entries and self.level != 0:
            raise TileError("entry bundles are level 0")
        if self.index < 0 or self.index >= 1 << 64:
            raise TileError(f"tile index {describe_int(self.index)} out of range")
        if not 1 <= self.width <= TILE_WIDTH:
            raise TileError(f"tile width {describe_int(self.width)} out of range")

    @property
    def path(self) -> str:
        kind = "entries" if self.entries else str(self.level)
        suffix = "" if self.width == TILE_WIDTH else f".p/{self.width}"
        return f"tile/{kind}/{format_index(self.index)}{suffix}"

    @property
    def is_partial(self) -> bool:
        return self.width < TILE_WIDTH

    def hash_indexes(self) -> list[int]:
        """Stored-hash indexes of this hash tile's hashes, left to right."""
        base = self.index * TILE_WIDTH
        return [stored_hash_index(self.level * TILE_HEIGHT, base + i) for i in range(self.width)]


def format_index(n: int) -> str:
    """``1234067`` -> ``x001/x234/067``."""
    if n < 0:
        raise TileError(f"tile index {describe_int(n)} out of range")
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def parse_tile_path(path: str) -> Tile:
    """Parse ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]``."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TileError(f"not a tile path: {path[:80]!r}")
    entries = parts[1] == "entries"
    level = 0 if entries else _parse_level(parts[1])
    index, width = parse_index(parts[2:])
    return Tile(level, index, width, entries)


def _parse_level(text: str) -> int:
    if not re.fullmatch(r"0|[1-9][0-9]?", text) or int(text) > MAX_LEVEL:
        raise TileError(f"invalid tile level {text[:20]!r}")
    return int(text)


def parse_index(groups: Sequence[str]) -> tuple[int, int]:
    """Parse the ``<N>[.p/<W>]`` path elements; returns (index, width)."""
    groups = list(groups)
    width = TILE_WIDTH
    if len(groups) >= 2 and groups[-2].endswith(".p"):
        width = _parse_width(groups[-1])
        groups = [*groups[:-2], groups[-2][:-2]]
    if not 1 <= len(groups) <= 7:
        raise TileError("tile index must have 1 to 7 groups")
    if len(groups) > 1 and groups[0] == "x000":
        raise TileError("tile index has a leading zero group")  # one URL per tile
    n = 0
    for i, group in enumerate(groups):
        last = i == len(groups) - 1
        digits = group if last else group.removeprefix("x")
        if (not last and not group.startswith("x")) or not _INDEX_GROUP.fullmatch(digits):
            raise TileError(f"invalid tile index element {group[:20]!r}")
        n = n * 1000 + int(digits)
    if n >= 1 << 64:
        raise TileError("tile index out of range")
    return n, width


def _parse_width(text: str) -> int:
    if not re.fullmatch(r"[1-9][0-9]{0,2}", text) or int(text) >= TILE_WIDTH:
        raise TileError(f"invalid partial tile width {text[:20]!r}")
    return int(text)


def level_width(size: int, level: int) -> int:
    """How many hashes exist at tile level ``level`` for a tree of ``size``."""
    if size < 0 or level < 0:
        raise TreeError(
            f"invalid tree size {describe_int(size)} or tile level {describe_int(level)}"
        )
    return size >> (TILE_HEIGHT * level)


def tile_for(level: int, position: int, size: int, entries: bool = False) -> Tile:
    """The tile holding hash ``position`` of tile level ``level`` in a tree of ``size``."""
    count = level_width(size, level)
    if not 0 <= position < count:
        raise TreeError(
            f"no hash {describe_int(position)} at tile level {describe_int(level)}"
            f" in a tree of size {describe_int(size)}"
        )
    index = position // TILE_WIDTH
    return Tile(level, index, min(TILE_WIDTH, count - index * TILE_WIDTH), entries)


def tiles_for_size(size: int) -> list[Tile]:
    """Every hash tile of a tree of ``size``, level by level (full, then partial)."""
    tiles = []
    level = 0
    while level_width(size, level) > 0:
        count = level_width(size, level)
        for index in range((count + TILE_WIDTH - 1) // TILE_WIDTH):
            tiles.append(Tile(level, index, min(TILE_WIDTH, count - index * TILE_WIDTH)))
        level += 1
    return tiles


def split_hashes(data: bytes, width: int) -> list[bytes]:
    """The hashes of a tile body, checked against the expected width."""
    if len(data) != width * HASH_SIZE:
        raise TileError(f"tile has {len(data)} bytes, expected {width * HASH_SIZE}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle: each entry as ``uint16 BE length || bytes``."""
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise TileError(f"entry of {len(entry)} bytes exceeds {MAX_ENTRY_SIZE}")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(data: bytes) -> list[bytes]:
    """Split an entry bundle; a truncated or trailing-garbage bundle is a `TileError`."""
    return list(_iter_bundle(data))


def _iter_bundle(data: bytes) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise TileError("entry bundle truncated in a length prefix")
        n = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + n > len(data):
            raise TileError("entry bundle truncated in an entry")
        yield data[pos + 2 : pos + 2 + n]
        pos += 2 + n


class TileHashReader:
    """A `HashReader` over the hash tiles of a tree of known ``size``.

    ``fetch(tile)`` returns a tile body; bodies are checked for length and
    cached. Hashes between tile levels are recomputed from the tile below, so
    only hashes the tree of ``size`` (at most `MAX_TREE_SIZE`) really has can
    be read.
    """

    def __init__(self, size: int, fetch: Callable[[Tile], bytes]) -> None:
        if not 0 <= size <= MAX_TREE_SIZE:
            raise TreeError(f"tree size {describe_int(size)} is out of range 0..{MAX_TREE_SIZE}")
        self.size = size
        self._fetch = fetch
        self._cache: dict[tuple[int, int], list[bytes]] = {}

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        return [self._node(*split_stored_hash_index(i)) for i in indexes]

    def tile_hashes(self, tile: Tile) -> list[bytes]:
        key = (tile.level, tile.index)
        cached = self._cache.get(key)
        if cached is None or len(cached) < tile.width:
            cached = split_hashes(self._fetch(tile), tile.width)
            self._cache[key] = cached
        return cached

    def _node(self, level: int, n: int) -> bytes:
        tile_level, sub = divmod(level, TILE_HEIGHT)
        first = n << sub
        last = first + (1 << sub)
        if last > level_width(self.size, tile_level):
            raise TreeError(f"node ({level}, {n}) is not in a tree of size {self.size}")
        tile = tile_for(tile_level, last - 1, self.size)
        hashes = self.tile_hashes(tile)
        offset = tile.index * TILE_WIDTH
        return merkle_root(hashes[first - offset : last - offset])
