"""How client commands reach a control plane: URL, credential, errors.

The server is found with ``--url`` (env ``LICTOR_URL``, default
``http://127.0.0.1:7300``); the credential with ``--credential-file FILE``,
or env ``LICTOR_CREDENTIAL`` holding the credential itself, else
``./lictor-data/admin.token`` when readable. Server errors come back as the
same `LictorError` classes the server raised (`lictor.wire_errors.error_for`).
Calls go through the SDK's connections (`lictor.sdk.connections`), not
httpx, whose import alone took longer than most commands.
"""

from __future__ import annotations

import argparse
import os

from lictor.errors import InvalidRequestError, UnavailableError
from lictor.wire_errors import error_for

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any

DEFAULT_URL = "http://127.0.0.1:7300"
DEFAULT_CREDENTIAL_FILE = os.path.join("lictor-data", "admin.token")
TIMEOUT_S = 30.0


def add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help=f"control plane URL (env LICTOR_URL, default {DEFAULT_URL})")
    p.add_argument("--credential-file", help="file holding the credential")
    p.add_argument("--json", action="store_true", help="print JSON")


def explicit_credential(args: argparse.Namespace) -> bool:
    """Whether a credential was given (flag or environment), not only found on disk."""
    return bool(getattr(args, "credential_file", None) or os.environ.get("LICTOR_CREDENTIAL"))


def credential(args: argparse.Namespace) -> str | None:
    if args.credential_file:
        try:
            return _read(args.credential_file)
        except OSError as e:
            raise InvalidRequestError(f"cannot read {args.credential_file}: {e}") from e
    if os.environ.get("LICTOR_CREDENTIAL"):
        return os.environ["LICTOR_CREDENTIAL"].strip()
    try:
        return _read(DEFAULT_CREDENTIAL_FILE)
    except OSError:
        return None


def _read(path: str) -> str:
    """A credential file's text, stripped (with `open`: `pathlib` costs `lictor run`
    about 8 ms of imports)."""
    with open(path) as f:
        return f.read().strip()


def call(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: Any = None,
    params: dict[str, str] | None = None,
) -> Any:
    """One API call; returns the JSON reply or raises the server's error."""
    # here, not above: `lictor run` reads the rest of this module before its command's
    # shell is started, and the SDK's imports then overlap that shell's start
    from urllib.parse import urlencode

    from lictor.sdk.client import JSON_HEADERS, bearer, json_bytes, parsed
    from lictor.sdk.connections import Connections, TransportError

    url = args.url or os.environ.get("LICTOR_URL") or DEFAULT_URL
    headers = {**JSON_HEADERS, **bearer(credential(args))}
    content = None if body is None else json_bytes(body)
    connections = Connections(url)
    try:
        target = connections.target(path, urlencode(params or {}))
        status, data = connections.exchange(method, target, content, headers, TIMEOUT_S)
    except TransportError as e:
        raise UnavailableError(f"cannot reach {url}: {e}") from e
    finally:
        connections.close()
    reply = parsed(data)
    if status >= 400:
        raise error_for(reply, status)
    return reply
