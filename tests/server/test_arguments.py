"""Sealing arguments: the keyed hash of their canonical JSON, remembered by value."""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lictor.log.entry import canonical_json
from lictor.service.arguments import PREFIX, ArgumentSeal

from ..strategies import json_values

KEY = b"k" * 32


def _sealed(value: Any) -> str:
    try:
        data = canonical_json(value)
    except ValueError as e:  # beyond what canonical JSON holds (an integer over 2**53)
        return f"refused: {type(e).__name__}"
    return PREFIX + hmac.new(KEY, data, hashlib.sha256).hexdigest()


def _hash(seal: ArgumentSeal, value: Any) -> str:
    try:
        return seal.hash(value)
    except ValueError as e:
        return f"refused: {type(e).__name__}"


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values(), min_size=1, max_size=6))
def test_a_remembered_hash_is_the_hash_of_that_very_value(values: list[Any]) -> None:
    seal = ArgumentSeal(KEY)
    for value in [*values, *values]:  # the second time from memory where it can be
        assert _hash(seal, value) == _sealed(value)


def test_values_that_print_alike_are_not_confused() -> None:
    seal = ArgumentSeal(KEY)
    for value in [{"a": 1}, {"a": 1.0}, {"a": True}, [None], [None], {"a": "1"}]:
        assert seal.hash(value) == _sealed(value)
    assert seal.hash({"a": 1}) != seal.hash({"a": "1"})
    for value in [{"x": math.nan}, {"x": None}, {"x": math.nan}, {"x": math.inf}]:
        assert _hash(seal, value) == _sealed(value)  # orjson writes a NaN as null
    assert _sealed({"x": math.nan}).startswith("refused")


def test_large_arguments_are_hashed_each_time_not_held() -> None:
    seal = ArgumentSeal(KEY)
    large = {"content": "x" * 10_000}
    assert seal.hash(large) == seal.hash(large) == _sealed(large)
    small = {"path": "/etc/hosts"}
    assert seal.hash(small) == _sealed(small)
    assert len(seal._known) == 1  # the small one only
