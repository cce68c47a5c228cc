"""Fixtures for the `lictor.log` suite: where the external vectors live.

The vectors are kept in ``tests/vectors`` (their sources and licenses are in its
README). A missing folder or an empty vector set is a collection error, not a
skip.

The test modules share `naive_rfc6962` (the in-memory tree and the naive
RFC 6962 reference); pyproject.toml puts this folder on pytest's path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
MERKLE_PROBES = VECTORS / "transparency-dev-merkle" / "testdata"


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _probe_files(kind: str) -> list[Path]:
    # Only `inclusion/` and `consistency/`: the `subtree*` probes are for the
    # Merkle Tree Certificates draft, which lictor does not implement.
    files = sorted((MERKLE_PROBES / kind).rglob("*.json"))
    if not files:
        raise pytest.UsageError(f"no {kind} probes under {MERKLE_PROBES}")
    return files


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``inclusion_probe``/``consistency_probe`` with every probe file."""
    for name, kind in (("inclusion_probe", "inclusion"), ("consistency_probe", "consistency")):
        if name in metafunc.fixturenames:
            files = _probe_files(kind)
            ids = [str(f.relative_to(MERKLE_PROBES / kind)) for f in files]
            metafunc.parametrize(name, [load_json(f) for f in files], ids=ids)


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The vectors folder; fails (never skips) when it is missing."""
    assert VECTORS.is_dir(), f"external vectors not found at {VECTORS}"
    return VECTORS
