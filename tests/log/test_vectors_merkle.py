"""transparency-dev/merkle vectors: the inclusion and consistency probes (with all
their failing mutations) and the RFC 6962 reference tree of `rfc6962_reference.json`.

The `subtree*` probe folders are for the Merkle Tree Certificates draft and
are not collected (see conftest.py).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from naive_rfc6962 import MemoryTree

from lictor.errors import ProofError
from lictor.log import merkle


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _proof(probe: dict[str, Any]) -> list[bytes]:
    return [_b64(h) for h in probe["proof"] or []]


def _all_32(*hashes: bytes) -> bool:
    return all(len(h) == 32 for h in hashes)


def test_inclusion_probe(inclusion_probe: dict[str, Any]) -> None:
    p = inclusion_probe
    leaf, root, proof = _b64(p["leafHash"]), _b64(p["root"]), _proof(p)
    # Every hash in a passing probe is 32 bytes, so no probe depends on our
    # stricter length policy.
    assert p["wantErr"] or _all_32(leaf, root, *proof)
    if p["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(p["leafIdx"], p["treeSize"], leaf, proof, root)
    else:
        merkle.verify_inclusion(p["leafIdx"], p["treeSize"], leaf, proof, root)
        assert merkle.root_from_inclusion(p["leafIdx"], p["treeSize"], leaf, proof) == root


def test_consistency_probe(consistency_probe: dict[str, Any]) -> None:
    p = consistency_probe
    root1, root2, proof = _b64(p["root1"]), _b64(p["root2"]), _proof(p)
    # Deliberately stricter than transparency-dev/merkle: every hash, the
    # roots included, must be 32 bytes (FORMATS.md §2.1). The one passing probe
    # with short placeholder roots ("don't care 2", equal sizes 1) is therefore
    # rejected by us; test_equal_sizes_with_real_roots checks its intent.
    want_err = p["wantErr"] or not _all_32(root1, root2, *proof)
    if want_err:
        with pytest.raises(ProofError):
            merkle.verify_consistency(p["size1"], p["size2"], root1, root2, proof)
    else:
        merkle.verify_consistency(p["size1"], p["size2"], root1, root2, proof)


def test_only_the_placeholder_probe_depends_on_the_length_policy(vectors: Path) -> None:
    probes = vectors / "transparency-dev-merkle" / "testdata" / "consistency"
    differs = []
    for f in sorted(probes.rglob("*.json")):
        p = json.loads(f.read_text())
        hashes = [_b64(p["root1"]), _b64(p["root2"]), *_proof(p)]
        if not p["wantErr"] and not _all_32(*hashes):
            differs.append(f.name)
    assert differs == ["sizes-are-equal-one-and-proof-is-empty.json"]


def test_equal_sizes_with_real_roots() -> None:
    root = merkle.leaf_hash(b"")
    merkle.verify_consistency(1, 1, root, root, [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(1, 1, root, merkle.EMPTY_ROOT, [])
    # Policy shared with transparency-dev/merkle: nothing is proven from size
    # 0, not even to size 0 with equal, correct roots and an empty proof.
    with pytest.raises(ProofError):
        merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(0, 1, merkle.EMPTY_ROOT, root, [])


@pytest.fixture(scope="module")
def reference(vectors: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (vectors / "transparency-dev-merkle-go" / "rfc6962_reference.json").read_text()
    )
    return data


@pytest.fixture(scope="module")
def reference_tree(reference: dict[str, Any]) -> MemoryTree:
    return MemoryTree.of_entries([bytes.fromhex(x) for x in reference["leaf_inputs_hex"]])


def test_hasher_vectors(reference: dict[str, Any]) -> None:
    v = reference["hasher_vectors"]
    assert merkle.EMPTY_ROOT.hex() == v["empty_tree_root"]
    assert merkle.leaf_hash(b"").hex() == v["leaf_hash_of_empty_string"]
    assert merkle.leaf_hash(b"L123456").hex() == v["leaf_hash_of_'L123456'"]
    node = merkle.node_hash(b"N123", b"N456")
    assert node.hex() == v["node_hash_of_children_'N123'_'N456'_(raw_bytes_not_hashes)"]


def test_reference_roots(reference: dict[str, Any], reference_tree: MemoryTree) -> None:
    roots = [bytes.fromhex(r) for r in reference["root_hashes_by_size_0_to_8"]]
    assert len(roots) == 9
    for size, root in enumerate(roots):
        assert merkle.tree_hash(size, reference_tree) == root
        assert merkle.merkle_root(reference_tree.leaves[:size]) == root


def test_reference_node_hashes_are_the_stored_hashes(
    reference: dict[str, Any], reference_tree: MemoryTree
) -> None:
    levels = reference["node_hashes_by_level"]
    for level, hashes in enumerate(levels):
        for n, h in enumerate(hashes):
            index = merkle.stored_hash_index(level, n)
            assert reference_tree.read_hashes([index]) == [bytes.fromhex(h)]
            assert merkle.split_stored_hash_index(index) == (level, n)
    assert merkle.stored_hash_count(8) == sum(len(hashes) for hashes in levels) == 15


def test_reference_inclusion_proofs(reference: dict[str, Any], reference_tree: MemoryTree) -> None:
    cases = reference["reference_inclusion_proofs"]
    assert cases
    for case in cases:
        want = [bytes.fromhex(h) for h in case["proof"]]
        index, size = case["index"], case["size"]
        assert merkle.prove_inclusion(index, size, reference_tree) == want
        root = merkle.tree_hash(size, reference_tree)
        merkle.verify_inclusion(index, size, reference_tree.leaves[index], want, root)


def test_reference_consistency_proofs(
    reference: dict[str, Any], reference_tree: MemoryTree
) -> None:
    cases = reference["reference_consistency_proofs"]
    assert cases
    for case in cases:
        want = [bytes.fromhex(h) for h in case["proof"]]
        first, second = case["size1"], case["size2"]
        assert merkle.prove_consistency(first, second, reference_tree) == want
        root1 = merkle.tree_hash(first, reference_tree)
        root2 = merkle.tree_hash(second, reference_tree)
        merkle.verify_consistency(first, second, root1, root2, want)
