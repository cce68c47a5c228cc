"""The Lictor SDK: govern work from Python against a Lictor control plane.

    from lictor.sdk import Client, governed

    client = Client("http://127.0.0.1:7300", runtime_credential)
    with client.execution(principal='Agent::"planner-7"', action='Action::"deploy"',
                          resource='Service::"payments-api-staging"') as execution:
        ...                      # call execution.check() between steps

Nothing runs without a grant: a deny, or a control plane that cannot be
reached, raises `DeniedError` before the block starts. While it runs, the
lease is renewed; a revocation or a lease that could not be renewed before
the local deadline marks the execution lost (`ExecutionRevokedError`,
`LeaseLostError`), runs its cancel callbacks, and in ``async with`` cancels
the block. Receipts verify offline with `verify_receipt`.

Modules: `client` (HTTP), `async_client` (its asyncio twin), `connections`
(the synchronous client's HTTP), `scope` (governed blocks), `enforce` (lease rules),
`keeper` (renewal drivers), `governed` (the decorator), `verify` (receipts),
and the errors it raises come from `lictor.errors`.
"""

from __future__ import annotations

from lictor.errors import DeniedError, ExecutionRevokedError, LeaseLostError
from lictor.sdk.client import Client
from lictor.sdk.enforce import ExecutionHandle, Lease
from lictor.sdk.governed import current_execution, governed

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any

    from lictor.sdk.async_client import AsyncClient
    from lictor.sdk.verify import VerifiedReceipt, verify_receipt

__all__ = [
    "AsyncClient",
    "Client",
    "DeniedError",
    "ExecutionHandle",
    "ExecutionRevokedError",
    "Lease",
    "LeaseLostError",
    "VerifiedReceipt",
    "current_execution",
    "governed",
    "verify_receipt",
]


def __getattr__(name: str) -> Any:
    """The asynchronous client and the receipt verifier, loaded when first asked for:
    `lictor run` loads neither httpx nor asyncio, and a runtime that only governs work
    (`lictor run`, the MCP gateway) does not load the log's formats."""
    if name == "AsyncClient":
        from lictor.sdk.async_client import AsyncClient

        return AsyncClient
    if name in ("VerifiedReceipt", "verify_receipt"):
        from lictor.sdk import verify

        return getattr(verify, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
