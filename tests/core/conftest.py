"""Fixtures for the policy tests: the example policy set in examples/, compiled once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lictor.core.policy import (
    CompiledEntities,
    CompiledPolicy,
    PolicySource,
    compile_entities,
    compile_policies,
)
from lictor.policydir import load_policy_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def example_source() -> PolicySource:
    return load_policy_dir(EXAMPLES / "policies")


@pytest.fixture(scope="session")
def example_entity_list() -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = json.loads((EXAMPLES / "entities.json").read_text())
    return entities


@pytest.fixture(scope="session")
def example_policy(example_source: PolicySource) -> CompiledPolicy:
    return compile_policies(example_source)


@pytest.fixture(scope="session")
def example_entities(
    example_policy: CompiledPolicy, example_entity_list: list[dict[str, Any]]
) -> CompiledEntities:
    return compile_entities(example_entity_list, example_policy)
