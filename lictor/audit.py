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
* `verify_proof` checks a tlog-proof (or a Lictor receipt) offline.

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
    InvalidRequestError,
    LogError,
    ProofError,
)
from lictor.log.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint
from lictor.log.commitment import check_commitment
from lictor.log.entry import canonical_entry
from lictor.log.merkle import (
    HASH_SIZE,
    CompactRange,
    leaf_hash,
    merkle_root,
    prove_inclusion,
    verify_inclusion,
)
from lictor.log.note import Verifier, parse_note
from lictor.log.proof import TlogProof, parse_tlog_proof, verify_tlog_proof
from lictor.log.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    TileHashReader,
)
from lictor.tilesource import TileSource, fetch_bundle, fetch_entry, fetch_tile

STATE_VERSION = 1


# Checkpoints ------------------------------------------------------------------


def verify_checkpoint(note: bytes, verifier: Verifier) -> Checkpoint:
    """The checkpoint of a note signed by ``verifier`` (other signatures are ignored)."""
    checkpoint, _ = open_checkpoint(note, [verifier])
    return checkpoint


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
) -> ProvedEntry:
    """Build the tlog-proof for entry ``index`` from the log's checkpoint and tiles.

    ``note`` replaces the log's current checkpoint (e.g. an older one); ``size``,
    if given, must be the checkpoint's size. The signature is checked when a
    ``verifier`` is given. The proof is checked against the entry bundle before
    it is returned.
    """
    note = source.checkpoint() if note is None else note
    checkpoint = verify_checkpoint(note, verifier) if verifier else read_checkpoint(note)
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


@dataclass(frozen=True)
class ProofFile:
    """A parsed proof file: the tlog-proof, and for a receipt its entry bytes and
    whether it carried a private event that was checked against the entry's commitment."""

    proof: TlogProof
    entry: bytes | None = None
    event_checked: bool = False


def read_proof_file(data: bytes) -> ProofFile:
    """Parse tlog-proof text, or a Lictor receipt.

    A receipt is ``{"index": n, "entry": {...}, "tlog_proof": "<text>", ...}``;
    its entry bytes are the RFC 8785 form of ``entry`` and its index must be the
    proof's. If it also holds ``event`` and ``salt``, they must open the entry's
    ``commitment``; a ``leaf_hash``, if present, must be the entry's.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProofError("proof file is not UTF-8") from e
    if not text.lstrip().startswith("{"):
        return ProofFile(parse_tlog_proof(text))
    try:
        receipt = json.loads(text)
    except ValueError as e:
        raise ProofError(f"receipt is not JSON: {e}") from e
    return _read_receipt(receipt)


def _read_receipt(receipt: Any) -> ProofFile:
    if not isinstance(receipt, dict) or not isinstance(receipt.get("tlog_proof"), str):
        raise ProofError("receipt has no tlog_proof text")
    if not isinstance(receipt.get("entry"), dict):
        raise ProofError("receipt has no entry object")
    proof = parse_tlog_proof(receipt["tlog_proof"])
    index = receipt.get("index")
    if type(index) is not int or index != proof.index:
        raise ProofError(f"receipt index {index!r} differs from the proof's index {proof.index}")
    entry = canonical_entry(receipt["entry"])
    if "leaf_hash" in receipt and receipt["leaf_hash"] != _b64(leaf_hash(entry)):
        raise ProofError("the receipt's leaf_hash is not the hash of its entry")
    return ProofFile(proof, entry, _check_event(receipt))


def _check_event(receipt: dict[str, Any]) -> bool:
    event, salt = receipt.get("event"), receipt.get("salt")
    if event is None and salt is None:
        return False
    commitment = receipt["entry"].get("commitment")
    if not (isinstance(event, dict) and isinstance(salt, str) and isinstance(commitment, str)):
        raise ProofError("the receipt's event, salt or entry commitment is malformed")
    if not check_commitment(commitment, event, salt):
        raise ProofError("the receipt's event and salt do not open the entry's commitment")
    return True


def verify_proof(proof: TlogProof, entry: bytes, verifier: Verifier) -> Checkpoint:
    """Check a tlog-proof offline: the checkpoint's signature and the entry's inclusion."""
    checkpoint, _ = verify_tlog_proof(proof, entry, [verifier])
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
            "root": _b64(self.root),
            "compact_range": [_b64(h) for h in self.edge],
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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def load_state(path: Path) -> AuditState | None:
    """The state saved at ``path``, or None if there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise AuditError(f"cannot read state file {path}: {e}") from e
    try:
        value = json.loads(text)
    except ValueError as e:
        raise AuditError(f"state file {path} is not JSON: {e}") from e
    return AuditState.from_json(value)


def save_state(path: Path, state: AuditState) -> None:
    """Write the state atomically: a temporary file, fsync, then rename over ``path``."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as e:
        raise InvalidRequestError(f"cannot write state file {path}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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


def audit(source: TileSource, verifier: Verifier, state: AuditState | None = None) -> AuditResult:
    """Check the log's checkpoint, entries and hash tiles, and that it extends ``state``.

    Raises `AuditError` naming the first mismatch found; returns only if
    everything matched.
    """
    if state is not None:
        _check_state_signature(state, verifier)
    note = source.checkpoint()
    try:
        checkpoint = verify_checkpoint(note, verifier)
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


def _check_state_signature(state: AuditState, verifier: Verifier) -> None:
    try:
        verify_checkpoint(state.checkpoint, verifier)
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
            f"fork: two roots for size {state.size}: audited {_b64(state.root)}, "
            f"now {_b64(checkpoint.root)}"
        )


def edge_levels(frontier: CompactRange) -> dict[int, bytes]:
    """The compact range's hashes keyed by tree level (one per set bit of its size)."""
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
                f"entries {self._old_size}..{self._size - 1} give root {_b64(got)} at size "
                f"{self._size}, but the checkpoint says {_b64(root)}"
                + (f" (extending the audited tree of size {self._old_size})" if resumed else "")
                + (f"; also {hint}" if hint else "")
            )
        if self.tiles.mismatches:
            raise AuditError("; ".join(self.tiles.mismatches))
