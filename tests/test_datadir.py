"""The data directory: private files written whole, one process at a time."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lictor.datadir import hash_secret, open_data_dir, write_private
from lictor.errors import ConflictError, InvalidRequestError


def test_write_private_is_exclusive_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    assert write_private(target, "one\n")
    assert not write_private(target, "two\n")
    assert target.read_text() == "one\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_a_data_dir_is_open_in_one_place_at_a_time(tmp_path: Path) -> None:
    first = open_data_dir(tmp_path / "d", "example.org/log")
    with pytest.raises(ConflictError, match="in use"):
        open_data_dir(tmp_path / "d")
    first.close()
    again = open_data_dir(tmp_path / "d")
    assert again.signer.name == "example.org/log"
    again.close()


def test_origin_only_names_a_new_log(tmp_path: Path) -> None:
    open_data_dir(tmp_path / "d", "example.org/log").close()
    with pytest.raises(InvalidRequestError, match=r"example\.org/log"):
        open_data_dir(tmp_path / "d", "example.org/other")
    open_data_dir(tmp_path / "d", "example.org/log").close()


def test_the_admin_credential_is_stored_hashed(tmp_path: Path) -> None:
    data = open_data_dir(tmp_path / "d")
    token = (tmp_path / "d" / "admin.token").read_text().strip()
    credential = data.store.find_credential(hash_secret(token))
    assert credential is not None and credential.role == "admin"
    data.close()


def test_an_unusable_directory_is_a_clean_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InvalidRequestError, match="cannot use data directory"):
        open_data_dir(blocker / "d")


def test_keys_and_admin_credential_can_come_from_the_environment(tmp_path: Path) -> None:
    from lictor.log.note import Ed25519Signer

    signer = Ed25519Signer.generate("example.org/replicated")
    env = {
        "LICTOR_LOG_KEY": signer.skey(),
        "LICTOR_GRANT_KEY": "ab" * 32,
        "LICTOR_ADMIN_TOKEN": "lictor_from-the-environment",
    }
    data = open_data_dir(tmp_path / "d", env=env)
    try:
        assert data.signer.name == "example.org/replicated"
        assert data.grant_seed == bytes.fromhex("ab" * 32)
        found = data.store.find_credential(hash_secret("lictor_from-the-environment"))
        assert found is not None and found.role == "admin"
    finally:
        data.close()
    written = {p.name for p in (tmp_path / "d").iterdir()}
    assert not written & {"log.key", "grant.key", "admin.token"}  # never written to disk
    with pytest.raises(InvalidRequestError):
        open_data_dir(tmp_path / "e", env={**env, "LICTOR_GRANT_KEY": "not hex"})
    with pytest.raises(InvalidRequestError):
        open_data_dir(tmp_path / "f", database="mysql://nope")


def test_db_migrate_and_a_newer_postgres_schema_is_refused(postgres: object) -> None:
    import subprocess
    import sys

    import psycopg

    from lictor.errors import SchemaError
    from lictor.store.postgres import SCHEMA_VERSION, PostgresStore

    url = postgres.database()  # type: ignore[attr-defined]
    done = subprocess.run(
        [sys.executable, "-m", "lictor.cli.main", "db", "migrate", "--database", url],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and f"schema version {SCHEMA_VERSION}" in done.stdout, done.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SchemaError, match="newer"):
        PostgresStore(url)
