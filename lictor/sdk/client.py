"""`Client`: the runtime API of a Lictor control plane over HTTP; the bodies and
replies it shares with `AsyncClient` (`lictor.sdk.async_client`).

Both have the same methods and raise the same `LictorError` classes the
server raised (`lictor.wire.error_for`), so a caller catches one tree.
`request` fails closed: a deny raises `DeniedError` with the decision and its
receipt, and so does a control plane that cannot be reached or cannot decide
(reason code ``unreachable``, or the server's error code for a 5xx), since no
grant means the work must not start. Other calls raise `UnavailableError`
when the control plane cannot be reached.

``client.execution(...)`` governs a block (`lictor.sdk.scope`): it requests
the execution, keeps its lease renewed and (unless ``events=False``) follows
its events while the block runs, and completes it after.

A client made without a credential acts through grants, the way a command
started by ``lictor run`` must (it is given its execution's grant, never the
runtime's credential): each call about an execution is authenticated by that
execution's grant, and a request by its parent's, so such a client can create
children of the executions whose grants it holds, renew, complete and follow
those, and nothing else: ``Client(os.environ["LICTOR_URL"])`` inside such a
command, then ``with client.execution(...)``, starts a child of the command's
execution.

`Client` speaks through `lictor.sdk.connections` (HTTP/1.1 read by
`lictor.sdk.http11` over a socket, TLS by `ssl` for ``https://``), so a
process that governs work with it (`lictor run`) loads neither httpx nor
asyncio nor `http.client`; `AsyncClient` keeps httpx. With a runtime's
credential, its keepers renew together (`lictor.sdk.heartbeat`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from lictor.errors import DeniedError, InvalidRequestError, LictorError, UnavailableError
from lictor.sdk.connections import Connections, TransportError
from lictor.sdk.enforce import ExecutionHandle
from lictor.sdk.events import EventWatcher, NoWatcher
from lictor.sdk.heartbeat import Heartbeat
from lictor.sdk.scope import ExecutionScope, Spec
from lictor.wire_errors import error_for

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any

DEFAULT_TIMEOUT = 10.0
UNREACHABLE = "unreachable"
JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
Ref = str | Mapping[str, str]


def bearer(credential: str | None) -> dict[str, str]:
    """The ``Authorization`` header of ``credential``; none without one."""
    return {"Authorization": f"Bearer {credential}"} if credential else {}


def grant_headers(credential: str | None, grant: str | None) -> dict[str, str] | None:
    """Headers for a call about the execution holding ``grant``: None when the client's
    own credential authenticates it, else the grant as the bearer."""
    if credential:
        return None
    if not grant:
        raise InvalidRequestError(
            "no credential, and no grant for this call: a client without a credential"
            " acts only through the grants of its executions (LICTOR_GRANT)"
        )
    return bearer(grant)


def request_body(
    principal: Ref,
    action: Ref,
    resource: Ref,
    context: Mapping[str, Any] | None,
    parent_grant: str | None,
    ttl: int | None,
    definition: str | None = None,
) -> dict[str, Any]:
    """The body of ``POST /v1/executions``; entity refs as ``Type::"id"`` or ``{type, id}``."""
    body: dict[str, Any] = {
        "principal": _ref(principal),
        "action": _ref(action),
        "resource": _ref(resource),
        "context": dict(context or {}),
    }
    if parent_grant is not None:
        body["parent_grant"] = parent_grant
    if ttl is not None:
        body["ttl"] = ttl
    if definition is not None:
        body["definition"] = definition
    return body


def _ref(value: Ref) -> str | dict[str, str]:
    return value if isinstance(value, str) else dict(value)


def ttl_body(ttl: int | None) -> dict[str, Any]:
    return {} if ttl is None else {"ttl": ttl}


def complete_body(
    outcome: str, exit_code: int | None, summary: str | None, result_hash: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"outcome": outcome}
    if result_hash is not None:
        body["result_hash"] = result_hash
    if exit_code is not None:
        body["exit_code"] = exit_code
    if summary is not None:
        body["summary"] = summary
    return body


def completions_body(
    completions: Sequence[Mapping[str, Any]], brief: bool = False
) -> dict[str, Any]:
    items = []
    for c in completions:
        body = complete_body(
            c["outcome"], c.get("exit_code"), c.get("summary"), c.get("result_hash")
        )
        items.append({"execution": c["execution"], **body})
    return {"completions": items, "brief": True} if brief else {"completions": items}


def answered(
    reply: dict[str, Any], count: int, what: str = "completions"
) -> list[dict[str, Any] | LictorError]:
    """Each of ``count`` items' answer (completions or renewals), or its error rebuilt."""
    items = reply.get("results")
    if not isinstance(items, list) or len(items) != count:
        raise LictorError(f"the reply does not answer each of {count} {what}")
    results: list[dict[str, Any] | LictorError] = []
    for item in items:
        if not isinstance(item, dict):
            raise LictorError(f"an answer among the {what} is not a JSON object")
        results.append(error_for(item, 200) if "error" in item else item)
    return results


def observe_body(server: str, tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    keys = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
    return {"server": server, "tools": [{k: t[k] for k in keys if k in t} for t in tools]}


def preview_body(principal: Ref, action: Ref, resources: Sequence[Ref]) -> dict[str, Any]:
    return {
        "principal": _ref(principal),
        "action": _ref(action),
        "resources": [_ref(r) for r in resources],
    }


def possible(reply: dict[str, Any]) -> list[bool]:
    return [bool(r["possible"]) for r in reply["results"]]


def json_bytes(body: Any) -> bytes:
    """``body`` as httpx sends ``json=``: compact, UTF-8, no NaN."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def parsed(data: bytes) -> Any:
    """A reply's JSON, or None if it is not JSON. (`json`: the sync client is on
    `lictor run`'s way to its command, where importing orjson would cost more than it
    saves; the async client reads with orjson.)"""
    try:
        return json.loads(data)
    except ValueError:
        return None


def _code(reply: Any) -> str | None:
    detail = reply.get("error") if isinstance(reply, dict) else None
    return str(detail.get("code")) if isinstance(detail, dict) else None


def read_reply(status: int, reply: Any) -> dict[str, Any]:
    """The JSON object of a successful reply (``reply``, parsed), or the server's error raised."""
    if status >= 400:
        raise error_for(reply, status)
    if not isinstance(reply, dict):
        raise LictorError(f"HTTP {status} without a JSON object")
    return reply


def read_grant(status: int, reply: Any) -> dict[str, Any]:
    """`read_reply` for a request: a deny, or no decision (5xx), is a `DeniedError`."""
    if status == 403 and _code(reply) == DeniedError.code:
        raise DeniedError.from_reply(reply)
    if status >= 500:
        error = error_for(reply, status)
        raise DeniedError(f"no decision: {error.message}", error.code) from error
    return read_reply(status, reply)


def unreachable(url: str, error: Exception) -> DeniedError:
    return DeniedError(f"cannot reach {url}: {error}", UNREACHABLE)


def unavailable(url: str, error: Exception) -> UnavailableError:
    return UnavailableError(f"cannot reach {url}: {error}")


class Client:
    """A runtime's synchronous client; one per process, safe to share between threads.

    Without a ``credential`` it acts through grants (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        credential: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        events: bool = True,
    ) -> None:
        self.url, self._timeout, self.events = url.rstrip("/"), timeout, events
        self._credential = credential
        self._headers = bearer(credential)
        self._connections = Connections(self.url)
        # a runtime's keepers renew together (ADR 22); a grant renews its execution alone
        self.heartbeat = Heartbeat(self.renew_many, self._renew_alone) if credential else None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._connections.close()

    def request(
        self,
        principal: Ref,
        action: Ref,
        resource: Ref,
        context: Mapping[str, Any] | None = None,
        parent_grant: str | None = None,
        ttl: int | None = None,
        *,
        definition: str | None = None,
    ) -> dict[str, Any]:
        """Ask for a new execution: the 201 reply (execution, grant, lease, receipt).

        ``definition`` is the hash (`lictor.core.tools.definition_hash`) of the
        resource's definition as this runtime sees it; the control plane denies
        it (``definition_changed``) unless it is the approved pin."""
        body = request_body(principal, action, resource, context, parent_grant, ttl, definition)
        headers = grant_headers(self._credential, parent_grant)
        try:
            status, reply = self._send("POST", "/v1/executions", body, self._timeout, headers)
        except TransportError as e:
            raise unreachable(self.url, e) from e
        return read_grant(status, reply)

    def renew(
        self,
        execution_id: str,
        ttl: int | None = None,
        *,
        timeout: float | None = None,
        grant: str | None = None,
    ) -> dict[str, Any]:
        """Re-verify an execution: a new lease and grant, or the execution revoked."""
        path = f"/v1/executions/{execution_id}/renew"
        return self._call("POST", path, ttl_body(ttl), timeout, grant)

    def _renew_alone(self, execution_id: str, ttl: int | None, timeout: float) -> dict[str, Any]:
        return self.renew(execution_id, ttl, timeout=timeout)

    def renew_many(
        self, renewals: Sequence[Mapping[str, Any]], timeout: float | None = None
    ) -> list[dict[str, Any] | LictorError]:
        """Renew several executions in one call and one commit (at most 256), each
        re-verified as `renew` does: a runtime's heartbeat. Each item holds
        ``execution``, and may hold ``ttl`` and ``grant`` (true to get a new grant);
        each is answered alone: the execution, its lease (and grant), or its error."""
        body = {"renewals": [dict(r) for r in renewals]}
        reply = self._call("POST", "/v1/executions/renewals", body, timeout)
        return answered(reply, len(renewals), "renewals")

    def complete(
        self,
        execution_id: str,
        outcome: str,
        exit_code: int | None = None,
        summary: str | None = None,
        *,
        result_hash: str | None = None,
        grant: str | None = None,
    ) -> dict[str, Any]:
        """End an execution with ``outcome``: succeeded, failed or cancelled; ``result_hash``
        (``sha256:<hex>``) commits to what the work returned."""
        body = complete_body(outcome, exit_code, summary, result_hash)
        path = f"/v1/executions/{execution_id}/complete"
        return self._call("POST", path, body, grant=grant)

    def complete_many(
        self, completions: Sequence[Mapping[str, Any]], *, brief: bool = False
    ) -> list[dict[str, Any] | LictorError]:
        """End several executions in one call and one commit (at most 256). Each item
        holds ``execution`` and ``outcome``, and may hold ``exit_code``, ``summary`` and
        ``result_hash``; each is answered alone: `complete`'s reply (with ``brief``, only
        the execution's id, state and outcome and the entry's ``log_index``), or its
        error."""
        body = completions_body(completions, brief)
        reply = self._call("POST", "/v1/executions/completions", body)
        return answered(reply, len(completions))

    def get(self, execution_id: str, *, grant: str | None = None) -> dict[str, Any]:
        """An execution with its decision and every transition."""
        return self._call("GET", f"/v1/executions/{execution_id}", grant=grant)

    def observe_tools(self, server: str, tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Report the tools ``server`` offers (their members `lictor.core.tools.MEMBERS`):
        the control plane pins new ones and flags changed ones; each answer carries
        the approved ``definition``."""
        return self._call("POST", "/v1/tools/observe", observe_body(server, tools))

    def preview(self, principal: Ref, action: Ref, resources: Sequence[Ref]) -> list[bool]:
        """For each resource, whether the active policy could allow ``action`` on it for
        ``principal`` under some context: a hint for what to show, never a permission."""
        body = preview_body(principal, action, resources)
        return possible(self._call("POST", "/v1/executions/preview", body))

    def watch(self, handle: ExecutionHandle, after: int) -> EventWatcher | NoWatcher:
        """A watcher losing ``handle`` when the log shows it ended (not yet started);
        one that does nothing if this client follows no events."""
        if not self.events:
            return NoWatcher()
        headers = grant_headers(self._credential, handle.grant) or self._headers
        return EventWatcher(self._connections, headers, handle, after)

    def execution(
        self,
        principal: Ref,
        action: Ref,
        resource: Ref,
        context: Mapping[str, Any] | None = None,
        ttl: int | None = None,
        parent_grant: str | None = None,
        root: bool = False,
        stop_ahead: float = 0.0,
    ) -> ExecutionScope:
        """Govern a ``with`` block: see `lictor.sdk.scope.ExecutionScope`; ``stop_ahead``
        seconds is the notice the block needs to stop (`lictor.sdk.enforce`)."""
        spec = Spec(principal, action, resource, context, ttl, parent_grant, root, stop_ahead)
        return ExecutionScope(self, spec)

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float | None = None,
        grant: str | None = None,
    ) -> dict[str, Any]:
        headers = grant_headers(self._credential, grant)
        try:
            status, reply = self._send(method, path, body, timeout or self._timeout, headers)
        except TransportError as e:
            raise unavailable(self.url, e) from e
        return read_reply(status, reply)

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """The status and parsed JSON (None if none) of one call; ``headers`` stand for
        the client's own authorization."""
        content = None if body is None else json_bytes(body)
        auth = headers if headers is not None else self._headers
        target = self._connections.target(path)
        status, data = self._connections.exchange(
            method, target, content, {**JSON_HEADERS, **auth}, timeout
        )
        return status, parsed(data)
