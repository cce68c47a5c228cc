"""A control plane's data directory: signing key, admin credential, database.

First start creates, each with mode 0600 and never overwritten:
``log.key`` (the log's Ed25519 signer key, ``PRIVATE+KEY+...``),
``admin.token`` (the admin credential; only its SHA-256 goes into the
database), ``grant.key`` (the seed that signs execution grants) and
``lictor.db`` (SQLite). Later starts load them; only a rotation of the admin
credential rewrites ``admin.token`` (`replace_private`). Files are
written whole or not at all (temp file, fsync, link, fsync of the directory),
so a crash never leaves an empty key behind.

One process at a time: opening takes an exclusive lock on ``lock`` for as
long as the directory is open, so two servers can never sign checkpoints for
the same SQLite log.

Replicas: with ``database`` (a ``postgresql://`` URL) the log lives in
PostgreSQL instead of ``lictor.db``, and every replica must hold the same
keys and admin credential. Give each replica a data directory holding copies
of the first one's ``log.key``, ``grant.key`` and ``admin.token``, or set
``LICTOR_LOG_KEY``, ``LICTOR_GRANT_KEY`` and ``LICTOR_ADMIN_TOKEN`` (which win
over files and are never written to disk).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lictor.errors import ConflictError, InvalidRequestError
from lictor.log.note import Ed25519Signer, parse_signer_key
from lictor.store.base import Credential, Store
from lictor.store.sqlite import SQLiteStore

KEY_FILE = "log.key"
GRANT_KEY_FILE = "grant.key"
TOKEN_FILE = "admin.token"
DB_FILE = "lictor.db"
LOCK_FILE = "lock"
TOKEN_PREFIX = "lictor_"


def hash_secret(secret: str) -> bytes:
    """How credentials are stored: SHA-256 of a high-entropy random secret."""
    return hashlib.sha256(secret.encode()).digest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def write_private(path: Path, text: str) -> bool:
    """Create ``path`` with mode 0600 holding ``text``, atomically and durably.

    Returns False, writing nothing, if ``path`` already exists.
    """
    try:
        _put_private(path, text, os.link)
    except FileExistsError:
        return False
    return True


def replace_private(path: Path, text: str) -> None:
    """Make ``path`` hold ``text`` with mode 0600, replacing it atomically and durably:
    a reader or a crash sees the old text or the new, never a mix or an empty file."""
    _put_private(path, text, os.replace)


def _put_private(path: Path, text: str, put: Callable[[Path, Path], None]) -> None:
    """Write ``text`` to a new 0600 file beside ``path``, sync it, ``put`` it in place
    (link: only if absent; replace: whatever was there), and sync the directory."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        put(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class DataDir:
    """An opened data directory; `close` releases the store and the lock."""

    path: Path
    signer: Ed25519Signer
    store: Store
    lock: int
    grant_seed: bytes = b""

    def close(self) -> None:
        self.store.close()
        os.close(self.lock)


def default_origin() -> str:
    return f"lictor.local/{secrets.token_hex(6)}"


def open_data_dir(
    path: str | Path,
    origin: str | None = None,
    database: str | None = None,
    env: Mapping[str, str] | None = None,
    held_lock: int | None = None,
) -> DataDir:
    """Open (creating on first use) the data directory at ``path``; the log in
    ``database`` (PostgreSQL) if given, else in the directory's SQLite file.

    ``held_lock``: the descriptor of the directory's lock, taken by the server
    whose worker this process is (`lictor.cli.serve`); the SQLite file is then
    shared with the other workers (`lictor.store.workers`)."""
    env = os.environ if env is None else env
    root = Path(path)
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = lock_data_dir(root) if held_lock is None else _check_held(root, held_lock)
    except OSError as e:
        raise InvalidRequestError(f"cannot use data directory {root}: {e}") from e
    try:
        signer = _load_signer(root / KEY_FILE, origin, env.get("LICTOR_LOG_KEY"))
        store = _open_store(root, database, shared=held_lock is not None)
    except BaseException:
        os.close(lock)
        raise
    try:
        _ensure_admin(root / TOKEN_FILE, store, env.get("LICTOR_ADMIN_TOKEN"))
    except BaseException:
        store.close()
        os.close(lock)
        raise
    try:
        grant_seed = _load_grant_seed(root / GRANT_KEY_FILE, env.get("LICTOR_GRANT_KEY"))
    except BaseException:
        store.close()
        os.close(lock)
        raise
    return DataDir(root, signer, store, lock, grant_seed)


def _open_store(root: Path, database: str | None, shared: bool = False) -> Store:
    if database:
        if not database.startswith(("postgresql://", "postgres://")):
            raise InvalidRequestError("--database takes a postgresql:// URL")
        from lictor.store.postgres import PostgresStore

        return PostgresStore(database)
    db = root / DB_FILE
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    if shared:
        from lictor.store.workers import WorkerStore

        return WorkerStore(db)
    return SQLiteStore(db, exclusive=True)


def _load_grant_seed(path: Path, given: str | None = None) -> bytes:
    """The Ed25519 seed that signs grants (hex: given, or in a 0600 file made on first use)."""
    if given is None and not path.exists():
        write_private(path, secrets.token_hex(32) + "\n")
    try:
        seed = bytes.fromhex(given.strip() if given is not None else path.read_text().strip())
    except ValueError as e:
        raise InvalidRequestError(f"{path} does not hold a hex Ed25519 seed") from e
    if len(seed) != 32:
        raise InvalidRequestError(f"{path} does not hold a 32-byte seed")
    return seed


def lock_data_dir(root: Path) -> int:
    """Take the directory's lock (`ConflictError` if a process holds it); the fd holds it."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConflictError(f"data directory {root} is in use by another process") from None
    return fd


def _check_held(root: Path, fd: int) -> int:
    """``fd`` if it is the lock of ``root`` that our server holds: open on the lock file,
    and locked through it (locking again through the same open file succeeds; through
    another, while a server holds the lock, it fails)."""
    held, there = os.fstat(fd), os.stat(root / LOCK_FILE)
    if (held.st_dev, held.st_ino) != (there.st_dev, there.st_ino):
        raise InvalidRequestError(f"descriptor {fd} is not the lock of {root}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConflictError(f"data directory {root} is in use by another process") from None
    return fd


def _load_signer(path: Path, origin: str | None, given: str | None = None) -> Ed25519Signer:
    if given is None and not path.exists():
        write_private(path, Ed25519Signer.generate(origin or default_origin()).skey() + "\n")
    signer = parse_signer_key(given if given is not None else path.read_text())
    if origin is not None and origin != signer.name:
        raise InvalidRequestError(
            f"this data directory's log is {signer.name!r}; --origin only names a new log"
        )
    return signer


def _ensure_admin(path: Path, store: Store, given: str | None = None) -> None:
    """Register the bootstrap admin credential of ``admin.token`` unless its hash is known.

    Rotating ``admin`` (`lictor credential rotate admin`) stores the new secret's
    hash and rewrites the file it was read from, so a restart finds it known; a
    stale copy (another replica's file) is known too but no longer works.
    """
    if given is not None:
        secret = given.strip()
    elif path.exists():
        secret = path.read_text().strip()
    else:
        secret = new_secret()
        if not write_private(path, secret + "\n"):
            secret = path.read_text().strip()
    if store.find_credential(hash_secret(secret)) is None:
        with contextlib.suppress(ConflictError):  # another starter registered it first
            store.add_credential(Credential("admin", "admin", hash_secret(secret)))
