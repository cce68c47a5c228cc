"""A control plane's data directory: signing key, admin credential, database.

First start creates, each with mode 0600 and never overwritten:
``log.key`` (the log's Ed25519 signer key, ``PRIVATE+KEY+...``),
``admin.token`` (the admin credential; only its SHA-256 goes into the
database) and ``lictor.db`` (SQLite). Later starts load them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from lictor.errors import ConflictError
from lictor.log.note import Ed25519Signer, parse_signer_key
from lictor.store.base import Credential, Store
from lictor.store.sqlite import SQLiteStore

KEY_FILE = "log.key"
TOKEN_FILE = "admin.token"
DB_FILE = "lictor.db"
TOKEN_PREFIX = "lictor_"


def hash_secret(secret: str) -> bytes:
    """How credentials are stored: SHA-256 of a high-entropy random secret."""
    return hashlib.sha256(secret.encode()).digest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def write_private(path: Path, text: str) -> bool:
    """Create ``path`` with mode 0600 holding ``text``; False if it already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return True


@dataclass
class DataDir:
    """An opened data directory."""

    path: Path
    signer: Ed25519Signer
    store: Store


def default_origin() -> str:
    return f"lictor.local/{secrets.token_hex(6)}"


def open_data_dir(path: str | Path, origin: str | None = None) -> DataDir:
    """Open (creating on first use) the data directory at ``path``."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    signer = _load_signer(root / KEY_FILE, origin)
    db = root / DB_FILE
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    store = SQLiteStore(db)
    _ensure_admin(root / TOKEN_FILE, store)
    return DataDir(root, signer, store)


def _load_signer(path: Path, origin: str | None) -> Ed25519Signer:
    if not path.exists():
        write_private(path, Ed25519Signer.generate(origin or default_origin()).skey() + "\n")
    return parse_signer_key(path.read_text())


def _ensure_admin(path: Path, store: Store) -> None:
    if path.exists():
        secret = path.read_text().strip()
    else:
        secret = new_secret()
        if not write_private(path, secret + "\n"):
            secret = path.read_text().strip()
    if store.find_credential(hash_secret(secret)) is None:
        with contextlib.suppress(ConflictError):  # another starter registered it first
            store.add_credential(Credential("admin", "admin", hash_secret(secret)))
