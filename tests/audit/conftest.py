"""Fixtures for auditing tiled logs: the Tessera test log, logs built here, a static server."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lictor.log.checkpoint import Checkpoint
from lictor.log.merkle import CompactRange, leaf_hash
from lictor.log.note import Ed25519Signer, parse_signer_key, sign_note
from lictor.log.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, encode_bundle

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
TESSERA = VECTORS / "tessera-testdata-log"


@dataclass(frozen=True)
class Tessera:
    """The Tessera POSIX test log (sizes 0..15) and its keys."""

    log: Path
    vkey: str
    skey: str
    origin: str
    entries: list[bytes]


@pytest.fixture(scope="session")
def tessera() -> Tessera:
    meta: dict[str, Any] = json.loads((TESSERA / "keys_and_entries.json").read_text())
    entries = [e.encode() for e in meta["entries_in_order"]]
    return Tessera(
        TESSERA / "log", meta["log_public_key"], meta["log_private_key"], meta["origin"], entries
    )


@pytest.fixture
def tessera_copy(tessera: Tessera, tmp_path: Path) -> Path:
    """A writable copy of the Tessera log, to tamper with."""
    return Path(shutil.copytree(tessera.log, tmp_path / "tessera"))


@pytest.fixture
def tessera_signer(tessera: Tessera) -> Ed25519Signer:
    return parse_signer_key(tessera.skey)


@pytest.fixture
def build_log() -> Callable[[Path, Ed25519Signer, str, Sequence[bytes]], bytes]:
    """`write_log`, for tests (importlib mode cannot import conftest helpers)."""
    return write_log


@pytest.fixture
def checkpoint_for() -> Callable[[Ed25519Signer, str, Sequence[bytes]], bytes]:
    """`sign_checkpoint`, for tests."""
    return sign_checkpoint


def sign_checkpoint(signer: Ed25519Signer, origin: str, entries: Sequence[bytes]) -> bytes:
    """A checkpoint note for a log holding exactly ``entries``."""
    frontier = CompactRange()
    for entry in entries:
        frontier.append(leaf_hash(entry))
    return sign_note(Checkpoint(origin, len(entries), frontier.root()).text(), [signer])


def write_log(
    directory: Path, signer: Ed25519Signer, origin: str, entries: Sequence[bytes]
) -> bytes:
    """Write a tlog-tiles log of ``entries`` (tiles for its final size only); return
    its checkpoint note, also written to ``directory/checkpoint``."""
    hashes: dict[int, list[bytes]] = {}
    frontier = CompactRange()
    for entry in entries:
        for level, _, h in frontier.append(leaf_hash(entry)):
            if level % TILE_HEIGHT == 0:
                hashes.setdefault(level // TILE_HEIGHT, []).append(h)
    for level, level_hashes in hashes.items():
        for start in range(0, len(level_hashes), TILE_WIDTH):
            chunk = level_hashes[start : start + TILE_WIDTH]
            _write(directory, Tile(level, start // TILE_WIDTH, len(chunk)), b"".join(chunk))
    for start in range(0, len(entries), TILE_WIDTH):
        bundle = entries[start : start + TILE_WIDTH]
        tile = Tile(0, start // TILE_WIDTH, len(bundle), entries=True)
        _write(directory, tile, encode_bundle(bundle))
    note = sign_checkpoint(signer, origin, entries)
    (directory / "checkpoint").write_bytes(note)
    return note


def _write(directory: Path, tile: Tile, data: bytes) -> None:
    path = directory / tile.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_serve() -> Iterator[Callable[[Path], str]]:
    """Serve directories over real HTTP on 127.0.0.1; returns the base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()
