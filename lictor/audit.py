"""Checking a tiled transparency log from outside, with only its URL and key.

An auditor trusts nothing the log serves except what the log's key signed:
the checkpoint. Everything else is recomputed and compared:

* `audit` fetches every entry bundle from the last audited size on, rehashes
  every entry into a `CompactRange` and requires the root of the checkpoint;
  it also fetches every hash tile touched since then and requires each of its
  hashes to equal the subtree recomputed from the entries (or, for hashes
  before the resume point, from the saved right edge). A saved `AuditState`
  pins origin, size, root and right edge, so the next audit proves the new
  tree extends the old one: the old edge gives the old root, and extending it
  with the new entries gives the new root.
* `prove` builds a c2sp.org/tlog-proof from the checkpoint and the log's own
  tiles (never a server-side proof) and checks it against the entry bundle
  before returning it.
* `verify_proof` checks a tlog-proof offline (`lictor.receipt` reads one from
  a file or a Lictor receipt).

Every checkpoint must name the expected origin: the one given, else the
verifier key's name (as for Lictor, Tessera and Sigsum-style logs), so that a
key shared by two logs cannot make one answer for the other.

Sources are `lictor.tilesource.TileSource`s: an HTTP(S) tlog-tiles prefix or a
local directory.
A tile or bundle the checkpoint implies but the source lacks is an
`AuditError`; a source that cannot be reached is an `UnavailableError`.
Partial tiles are fetched as the checkpoint implies, falling back to the full
tile (and using its prefix) when the partial is gone.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lictor.errors import (
    AuditError,
    CheckpointError,
    InvalidRequestError,
    LogError,
    ProofError,
)
from lictor.log.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint
from lictor.log.encoding import b64encode
from lictor.log.merkle import (
    HASH_SIZE,
    CompactRange,
    leaf_hash,
    merkle_root,
    prove_inclusion,
    verify_inclusion,
)
from lictor.log.note import Verifier, parse_note
from lictor.log.proof import TlogProof
from lictor.log.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    TileHashReader,
)
from lictor.tilesource import TileSource, fetch_bundle, fetch_entry, fetch_tile

STATE_VERSION = 1


# Checkpoints ------------------------------------------------------------------


def verify_checkpoint(note: bytes, verifier: Verifier, origin: str | None = None) -> Checkpoint:
    """The checkpoint of a note signed by ``verifier`` (other signatures are ignored),
    whose origin is ``origin`` or, by default, the key's name."""
    checkpoint, _ = open_checkpoint(note, [verifier])
    check_origin(checkpoint, verifier, origin)
    return checkpoint


def expected_origin(verifier: Verifier | None, origin: str | None) -> str | None:
    """The origin a checkpoint must have: ``origin`` if given, else the key's name
    (None, no constraint, without either)."""
    if origin is not None:
        return origin
    return verifier.name if verifier is not None else None


def check_origin(checkpoint: Checkpoint, verifier: Verifier | None, origin: str | None) -> None:
    """Raise `CheckpointError` unless the checkpoint has the `expected_origin`."""
    want = expected_origin(verifier, origin)
    if want is not None and checkpoint.origin != want:
        raise CheckpointError(
            f"checkpoint origin {checkpoint.origin!r} is not {want!r}" + _origin_hint(origin)
        )


def _origin_hint(origin: str | None) -> str:
    if origin is not None:
        return ""
    return (
        " (the verifier key's name); if the log's origin legitimately differs from its"
        " key name, pass it with --origin"
    )


def read_checkpoint(note: bytes) -> Checkpoint:
    """The checkpoint of a note WITHOUT checking any signature."""
    return parse_checkpoint(parse_note(note).text)


# Proofs -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProvedEntry:
    """A tlog-proof built from a log's tiles, the entry it proves, and its checkpoint."""

    proof: TlogProof
    entry: bytes
    checkpoint: Checkpoint
    verified: bool


def prove(
    source: TileSource,
    index: int,
    verifier: Verifier | None = None,
    *,
    note: bytes | None = None,
    size: int | None = None,
    origin: str | None = None,
) -> ProvedEntry:
    """Build the tlog-proof for entry ``index`` from the log's checkpoint and tiles.

    ``note`` replaces the log's current checkpoint (e.g. an older one); ``size``,
    if given, must be the checkpoint's size. The signature is checked when a
    ``verifier`` is given, the origin against `expected_origin`. The proof is
    checked against the entry bundle before it is returned.
    """
    note = source.checkpoint() if note is None else note
    checkpoint = verify_checkpoint(note, verifier, origin) if verifier else read_checkpoint(note)
    check_origin(checkpoint, verifier, origin)
    if size is not None and checkpoint.size != size:
        raise AuditError(f"checkpoint has size {checkpoint.size}, not the requested {size}")
    if not 0 <= index < checkpoint.size:
        raise InvalidRequestError(f"index {index} is not in the tree of size {checkpoint.size}")
    reader = TileHashReader(checkpoint.size, lambda tile: fetch_tile(source, tile))
    path = prove_inclusion(index, checkpoint.size, reader)
    entry = fetch_entry(source, index, checkpoint.size)
    try:
        verify_inclusion(index, checkpoint.size, leaf_hash(entry), path, checkpoint.root)
    except ProofError as e:
        raise AuditError(f"the log's tiles and entry {index} do not match its root: {e}") from e
    return ProvedEntry(TlogProof(index, tuple(path), note), entry, checkpoint, verifier is not None)


def verify_proof(
    proof: TlogProof, entry: bytes, verifier: Verifier, origin: str | None = None
) -> Checkpoint:
    """Check a tlog-proof offline: the checkpoint's signature and `expected_origin`,
    and the entry's inclusion."""
    checkpoint = verify_checkpoint(proof.checkpoint, verifier, origin)
    verify_inclusion(proof.index, checkpoint.size, leaf_hash(entry), proof.hashes, checkpoint.root)
    return checkpoint


# Audit state ------------------------------------------------------------------


@dataclass(frozen=True)
class AuditState:
    """What an auditor remembers between runs: the last tree it fully checked."""

    origin: str
    size: int
    root: bytes
    edge: tuple[bytes, ...]
    checkpoint: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "origin": self.origin,
            "size": self.size,
            "root": b64encode(self.root),
            "compact_range": [b64encode(h) for h in self.edge],
            "checkpoint": self.checkpoint.decode(),
        }

    @classmethod
    def from_json(cls, value: Any) -> AuditState:
        try:
            if value["version"] != STATE_VERSION:
                raise AuditError(f"unknown state version {value['version']!r}")
            origin, size, text = value["origin"], value["size"], value["checkpoint"]
            if not (isinstance(origin, str) and type(size) is int and isinstance(text, str)):
                raise TypeError("origin, size or checkpoint has the wrong type")
            root = _unb64(value["root"])
            edge = tuple(_unb64(h) for h in value["compact_range"])
        except (KeyError, TypeError, AttributeError, ValueError, binascii.Error) as e:
            raise AuditError(f"malformed state: {type(e).__name__}: {e}") from e
        state = cls(origin, size, root, edge, text.encode())
        state.check()
        return state

    def check(self) -> None:
        """Raise `AuditError` unless the fields agree with each other."""
        try:
            edge_root = CompactRange(self.size, self.edge).root()
            checkpoint = read_checkpoint(self.checkpoint)
        except LogError as e:
            raise AuditError(f"malformed state: {e.message}") from e
        if edge_root != self.root:
            raise AuditError("malformed state: the compact range does not give the root")
        if (checkpoint.origin, checkpoint.size, checkpoint.root) != (
            self.origin,
            self.size,
            self.root,
        ):
            raise AuditError("malformed state: the checkpoint does not match the state")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def load_state(path: Path) -> AuditState | None:
    """The state saved at ``path``, or None if there is none yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InvalidRequestError(f"cannot read state file {path}: {e.strerror or e}") from e
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise AuditError(f"malformed state: {path} is not UTF-8 JSON: {e}") from e
    return AuditState.from_json(value)


def save_state(path: Path, state: AuditState) -> None:
    """Write the state atomically: a temporary file, fsync, then rename over ``path``."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        _write_then_rename(fd, Path(tmp), path, state)
    except OSError as e:
        raise InvalidRequestError(f"cannot write state file {path}: {e.strerror or e}") from e


def _write_then_rename(fd: int, tmp: Path, path: Path, state: AuditState) -> None:
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# Audit ------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditResult:
    """A fully successful audit: the tree checked and the state to save."""

    origin: str
    old_size: int
    size: int
    root: bytes
    entries_checked: int
    bundles_checked: int
    tiles_checked: int
    state: AuditState


def audit(
    source: TileSource,
    verifier: Verifier,
    state: AuditState | None = None,
    *,
    origin: str | None = None,
) -> AuditResult:
    """Check the log's checkpoint, entries and hash tiles, and that it extends ``state``.

    The checkpoint (and the state) must have `expected_origin`. Raises
    `AuditError` naming the first mismatch found; returns only if everything
    matched.
    """
    if state is not None:
        _check_state(state, verifier, origin)
    note = source.checkpoint()
    try:
        checkpoint = verify_checkpoint(note, verifier, origin)
    except LogError as e:
        raise AuditError(f"checkpoint: {e.code}: {e.message}") from e
    if state is not None:
        _check_against_state(checkpoint, state)
    start = CompactRange(state.size, state.edge) if state else CompactRange()
    replay = _Replay(source, checkpoint.size, start)
    replay.run()
    replay.check_root(checkpoint.root, resumed=state is not None)
    new_state = AuditState(
        checkpoint.origin, checkpoint.size, checkpoint.root, tuple(start.hashes), note
    )
    old_size = state.size if state else 0
    return AuditResult(
        checkpoint.origin,
        old_size,
        checkpoint.size,
        checkpoint.root,
        checkpoint.size - old_size,
        replay.bundles,
        replay.tiles.checked,
        new_state,
    )


def _check_state(state: AuditState, verifier: Verifier, origin: str | None) -> None:
    want = expected_origin(verifier, origin)
    if state.origin != want:
        raise AuditError(
            f"origin changed: the state is for {state.origin!r}, not {want!r}"
            + _origin_hint(origin)
        )
    try:
        verify_checkpoint(state.checkpoint, verifier, origin)
    except LogError as e:
        raise AuditError(f"the saved state's checkpoint does not verify: {e.message}") from e


def _check_against_state(checkpoint: Checkpoint, state: AuditState) -> None:
    if checkpoint.origin != state.origin:
        raise AuditError(
            f"origin changed: the state has {state.origin!r}, the log {checkpoint.origin!r}"
        )
    if checkpoint.size < state.size:
        raise AuditError(
            f"the tree shrank: size {checkpoint.size} after size {state.size} was audited"
        )
    if checkpoint.size == state.size and checkpoint.root != state.root:
        raise AuditError(
            f"fork: two roots for size {state.size}: audited {b64encode(state.root)}, "
            f"now {b64encode(checkpoint.root)}"
        )


def edge_levels(frontier: CompactRange) -> dict[int, bytes]:
    """The compact range's hashes keyed by tree level: for each set bit ``level``
    of its size, the root of the perfect subtree of ``2**level`` leaves it holds.

    (The same set-bit decomposition as the sequencer's right-edge loader.)
    """
    levels = [lv for lv in reversed(range(frontier.size.bit_length())) if frontier.size >> lv & 1]
    return dict(zip(levels, frontier.hashes, strict=True))


def _prefix_matches(hashes: Sequence[bytes], edge: dict[int, bytes], level: int) -> bool:
    """Whether ``hashes`` (nodes of ``level`` at the start of a tile, fewer than 256)
    merge into the edge hashes at levels ``level + bit`` for each set bit of their count."""
    pos = 0
    for bit in reversed(range(TILE_HEIGHT)):
        if len(hashes) >> bit & 1:
            if merkle_root(hashes[pos : pos + (1 << bit)]) != edge.get(level + bit):
                return False
            pos += 1 << bit
    return True


@dataclass
class _Pending:
    index: int
    prefix: int
    hashes: list[bytes] = field(default_factory=list)


class _TileChecker:
    """Compares each hash tile, once all its hashes are known, with the recomputed ones.

    Hashes before the resume point are checked against the saved edge.
    Mismatches are collected, not raised, so that a wrong entry (which also
    breaks the root) is reported as such rather than as a wrong tile.
    """

    def __init__(self, source: TileSource, edge: dict[int, bytes]) -> None:
        self._source = source
        self._edge = edge
        self._pending: dict[int, _Pending] = {}
        self.checked = 0
        self.mismatches: list[str] = []

    def add(self, closed: Sequence[tuple[int, int, bytes]]) -> None:
        for level, n, h in closed:
            if level % TILE_HEIGHT:
                continue
            tile_level = level // TILE_HEIGHT
            pending = self._pending.setdefault(
                tile_level, _Pending(n // TILE_WIDTH, n % TILE_WIDTH)
            )
            pending.hashes.append(h)
            if pending.prefix + len(pending.hashes) == TILE_WIDTH:
                self._check(tile_level, self._pending.pop(tile_level))

    def finish(self) -> None:
        for tile_level in sorted(self._pending):
            self._check(tile_level, self._pending.pop(tile_level))

    def _check(self, level: int, pending: _Pending) -> None:
        tile = Tile(level, pending.index, pending.prefix + len(pending.hashes))
        data = fetch_tile(self._source, tile)
        got = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        self.checked += 1
        if not _prefix_matches(got[: pending.prefix], self._edge, level * TILE_HEIGHT):
            self.mismatches.append(
                f"{tile.path}: hashes 0..{pending.prefix - 1} differ from the tree audited before"
            )
        for i, want in enumerate(pending.hashes, start=pending.prefix):
            if got[i] != want:
                self.mismatches.append(
                    f"{tile.path}: hash {i} (node {pending.index * TILE_WIDTH + i} of tree "
                    f"level {level * TILE_HEIGHT}) differs from the one recomputed from the entries"
                )
                return


class _Replay:
    """Rehashes the entries from ``frontier.size`` up to ``size`` into ``frontier``."""

    def __init__(self, source: TileSource, size: int, frontier: CompactRange) -> None:
        self._source = source
        self._size = size
        self._frontier = frontier
        self._old_size = frontier.size
        self._edge = edge_levels(frontier)
        self.tiles = _TileChecker(source, self._edge)
        self.bundles = 0

    def run(self) -> None:
        if self._size == self._old_size:
            return
        first = self._old_size // TILE_WIDTH
        last = (self._size + TILE_WIDTH - 1) // TILE_WIDTH
        for index in range(first, last):
            self._bundle(index)
        self.tiles.finish()

    def _bundle(self, index: int) -> None:
        base = index * TILE_WIDTH
        tile = Tile(0, index, min(TILE_WIDTH, self._size - base), entries=True)
        leaves = [leaf_hash(entry) for entry in fetch_bundle(self._source, tile)]
        self.bundles += 1
        old = max(0, self._old_size - base)
        if not _prefix_matches(leaves[:old], self._edge, 0):
            raise AuditError(
                f"{tile.path}: entries {base}..{base + old - 1} are not those of the tree of "
                f"size {self._old_size} audited before: the log is not consistent with the state"
            )
        for leaf in leaves[old:]:
            self.tiles.add(self._frontier.append(leaf))

    def check_root(self, root: bytes, *, resumed: bool) -> None:
        got = self._frontier.root()
        if got != root:
            hint = "; ".join(self.tiles.mismatches[:1])
            raise AuditError(
                f"entries {self._old_size}..{self._size - 1} give root {b64encode(got)} at size "
                f"{self._size}, but the checkpoint says {b64encode(root)}"
                + (f" (extending the audited tree of size {self._old_size})" if resumed else "")
                + (f"; also {hint}" if hint else "")
            )
        if self.tiles.mismatches:
            raise AuditError("; ".join(self.tiles.mismatches))
