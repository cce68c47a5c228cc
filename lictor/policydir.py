"""Reading a policy directory (DESIGN.md §5) into a `PolicySource`.

A policy directory holds ``*.cedar`` policy files and exactly one schema,
``*.cedarschema`` (Cedar's human-readable format) or ``*.cedarschema.json``.
Only regular files directly in the directory count; other files (a README)
and subdirectories are ignored. Files are read as strict UTF-8, at most
`MAX_FILE_BYTES` each. Every problem raises `InvalidRequestError` naming the
path, so ``lictor policy validate DIR`` can print it as it is.
"""

from __future__ import annotations

from pathlib import Path

from lictor.core.policy_compile import POLICY_SUFFIX, SCHEMA_SUFFIXES, PolicySource
from lictor.errors import InvalidRequestError

MAX_FILE_BYTES = 1 << 20


def load_policy_dir(path: str | Path) -> PolicySource:
    """The policy source in directory ``path``."""
    directory = Path(path)
    if not directory.is_dir():
        raise InvalidRequestError(f"{directory}: not a directory")
    try:
        files = sorted(p for p in directory.iterdir() if p.is_file())
    except OSError as e:
        raise InvalidRequestError(f"{directory}: cannot list: {e.strerror or e}") from None
    schema = _schema_file(directory, [p for p in files if p.name.endswith(SCHEMA_SUFFIXES)])
    policies = {p.name: _read(p) for p in files if p.name.endswith(POLICY_SUFFIX)}
    return PolicySource.of(policies, schema.name, _read(schema))


def _schema_file(directory: Path, candidates: list[Path]) -> Path:
    if len(candidates) == 1:
        return candidates[0]
    wanted = " or ".join(f"*{suffix}" for suffix in SCHEMA_SUFFIXES)
    if not candidates:
        raise InvalidRequestError(f"{directory}: no schema file ({wanted})")
    names = ", ".join(p.name for p in candidates)
    raise InvalidRequestError(f"{directory}: more than one schema file ({names}); keep one")


def _read(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise InvalidRequestError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise InvalidRequestError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequestError(f"{path}: not UTF-8 (byte {e.start})") from None
