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
