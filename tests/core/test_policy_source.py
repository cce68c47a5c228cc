"""Policy sources: versions named by content, and reading a policy directory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lictor.core.policy import PolicySource
from lictor.errors import InvalidRequestError
from lictor.policydir import MAX_FILE_BYTES, load_policy_dir

SCHEMA = "entity User;\naction view appliesTo { principal: User, resource: User };\n"
FILES = {
    "a.cedar": "permit(principal, action, resource);\n",
    "b.cedar": 'forbid(principal == User::"x", action, resource);\n',
}


def source(files: dict[str, str] = FILES, schema: str = SCHEMA) -> PolicySource:
    return PolicySource.of(files, "app.cedarschema", schema)


def test_version_is_sha256_of_rfc8785_json() -> None:
    s = source()
    expected = json.dumps(
        {"policies": FILES, "schema": {"name": "app.cedarschema", "text": SCHEMA}},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert s.canonical_bytes() == expected
    assert s.version == hashlib.sha256(expected).hexdigest()


def test_version_does_not_depend_on_file_order() -> None:
    reordered = dict(reversed(list(FILES.items())))
    assert source(reordered).version == source().version
    assert source(reordered).policies == source().policies


@given(
    st.sampled_from(["a.cedar", "b.cedar", "schema"]),
    st.text(min_size=1, max_size=5),
    st.booleans(),
)
@settings(max_examples=50)
def test_any_content_change_changes_the_version(target: str, extra: str, prepend: bool) -> None:
    def edit(text: str) -> str:
        return extra + text if prepend else text + extra

    files = dict(FILES)
    schema = SCHEMA
    if target == "schema":
        schema = edit(schema)
    else:
        files[target] = edit(files[target])
    assert source(files, schema).version != source().version


def test_renaming_a_file_changes_the_version() -> None:
    renamed = {"c.cedar" if k == "a.cedar" else k: v for k, v in FILES.items()}
    assert source(renamed).version != source().version
    json_schema = PolicySource.of(FILES, "app.cedarschema.json", SCHEMA)
    assert json_schema.version != source().version


@pytest.mark.parametrize(
    "files, schema_name",
    [
        ({"a.txt": ""}, "s.cedarschema"),
        ({"../a.cedar": ""}, "s.cedarschema"),
        ({"a\n.cedar": ""}, "s.cedarschema"),
        ({".cedar": ""}, "s.cedarschema"),
        ({"a.cedar": ""}, "s.json"),
        ({"a.cedar": ""}, "dir/s.cedarschema"),
    ],
)
def test_bad_file_names_are_refused(files: dict[str, str], schema_name: str) -> None:
    with pytest.raises(InvalidRequestError):
        PolicySource.of(files, schema_name, SCHEMA)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(InvalidRequestError):
        PolicySource((("a.cedar", b"bytes"),), "s.cedarschema", SCHEMA)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        PolicySource(FILES, "s.cedarschema", SCHEMA)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        PolicySource((("a.cedar", ""), ("a.cedar", "x")), "s.cedarschema", SCHEMA)


# --- policy directories --------------------------------------------------------------------


def write(directory: Path, files: dict[str, str | bytes]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, content in files.items():
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return directory


def test_load_reads_policies_and_the_schema(tmp_path: Path) -> None:
    d = write(tmp_path / "p", {**FILES, "app.cedarschema": SCHEMA, "README.md": "# hi"})
    (d / "nested").mkdir()
    (d / "nested" / "c.cedar").write_text("garbage")
    loaded = load_policy_dir(d)
    assert loaded == source()
    assert loaded.version == source().version


def test_load_accepts_a_json_schema(tmp_path: Path) -> None:
    d = write(tmp_path / "p", {"a.cedar": FILES["a.cedar"], "app.cedarschema.json": "{}"})
    loaded = load_policy_dir(d)
    assert loaded.schema_name == "app.cedarschema.json"
    assert loaded.schema_is_json


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.cedar": ""}, "no schema file"),
        ({"a.cedarschema": "", "b.cedarschema.json": "{}"}, "more than one schema file"),
        ({"a.cedar": b"\xff\xfe", "s.cedarschema": ""}, "not UTF-8"),
        ({"a.cedar": b"x" * (MAX_FILE_BYTES + 1), "s.cedarschema": ""}, "larger than"),
    ],
)
def test_load_errors_name_the_problem(
    tmp_path: Path, files: dict[str, str | bytes], message: str
) -> None:
    d = write(tmp_path / "p", files)
    with pytest.raises(InvalidRequestError, match=message):
        load_policy_dir(d)


def test_load_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="not a directory"):
        load_policy_dir(tmp_path / "nope")
