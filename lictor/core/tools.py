"""Tools as Lictor governs them: their ids and the hash a tool's definition is pinned by.

Pure: no I/O. A tool is named ``<server>/<name>`` (the resource
``Tool::"<server>/<name>"``), where ``server`` is the name the gateway gives
the MCP server it fronts. A tool's *definition* is what a client is told about
it and decides on: its name, title, description, input and output schemas
and annotations (``readOnlyHint`` and the like, which clients use to decide
what to run without asking). Its hash is ``sha256:<hex>`` of the RFC 8785
canonical JSON of exactly those members, so two gateways (or a gateway and
an auditor) that see the same definition compute the same hash whatever
order the server wrote its keys in.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import rfc8785

from lictor.errors import InvalidRequestError

MAX_SERVER_LENGTH = 128
MAX_NAME_LENGTH = 256
SERVER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
HASH = re.compile(r"sha256:[0-9a-f]{64}")
OPTIONAL = ("title", "outputSchema", "annotations")
MEMBERS = ("name", "description", "inputSchema", *OPTIONAL)


def check_server(server: str) -> str:
    """``server`` if it is a valid server name (letters, digits, ``._-``), else raise."""
    if not isinstance(server, str) or SERVER.fullmatch(server) is None:
        raise InvalidRequestError(
            "a server name is 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return server


def tool_id(server: str, name: str) -> str:
    """The id of tool ``name`` of ``server``: ``<server>/<name>``."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise InvalidRequestError(f"a tool name is 1-{MAX_NAME_LENGTH} characters")
    return f"{check_server(server)}/{name}"


def definition(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The members of a tool (as MCP's ``tools/list`` spells it) that its hash covers:
    `MEMBERS`. A missing description is ``""``, a missing input schema ``{}``; the
    other optional members are left out when absent, so adding one changes the hash."""
    covered = {k: tool[k] for k in OPTIONAL if tool.get(k) is not None}
    schema = tool.get("inputSchema")
    return {
        **covered,
        "name": tool.get("name"),
        "description": tool.get("description") or "",
        "inputSchema": schema if schema is not None else {},
    }


def definition_hash(tool: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of a tool's `definition` (other members are ignored)."""
    try:
        data = rfc8785.dumps(definition(tool))
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as e:
        raise InvalidRequestError(f"a tool definition is not canonical JSON: {e}") from None
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_hash(value: str) -> str:
    """``value`` if it is ``sha256:`` and 64 lowercase hex digits, else raise."""
    if not isinstance(value, str) or HASH.fullmatch(value) is None:
        raise InvalidRequestError("a hash is 'sha256:' and 64 lowercase hex digits")
    return value
