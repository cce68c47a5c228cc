"""The MCP gateway: every tool call, resource read and prompt an AI agent makes
through the Model Context Protocol, governed like any other execution.

`lictor mcp` sits between an MCP client and one MCP server (wrapping a
stdio server, or fronting a Streamable HTTP one) and speaks MCP to both,
through the official ``mcp`` SDK (over stdio, tool calls take a lane of
their own beside it: `lictor.mcp.express`). What it guarantees:

- Nothing reaches the server ungoverned. Each ``tools/call``,
  ``resources/read`` and ``prompts/get`` is first requested from the control
  plane as a child of the gateway's session execution, with the call's
  arguments in the context (so policies can test them) and, for a tool, the
  hash of the definition the client was shown. A deny, no decision, or no
  session answers the client with why (reason code, reasons, log index)
  and the server never sees the request: fail closed.
- A granted request holds its lease while it runs. Revoking it, or the
  session, cancels it at the server with MCP's own cancellation and
  answers the client with the revocation; one events stream per gateway
  carries revocations to every request in flight, renewals are the
  backstop.
- Every request ends in the log: completed with its outcome and the hash of
  its result, after the client has its answer but before the gateway exits.
- Tools are pinned: the control plane records each tool's definition hash
  the first time the gateway reports it, logs a change, and denies calls to
  a changed tool (``definition_changed``) until an admin approves it;
  meanwhile clients are shown the approved definition, never the new one.
- Lists are filtered by what the principal could be allowed (a hint,
  never a permission), refused with why when the control plane cannot
  filter them, and only the capabilities the server has are served.

Modules, from the wire inwards: `front` (stdio and HTTP serving), `stdio`
(the client's pipes), `express` (tool calls over stdio served beside the
SDK), `lifecycle` (start and stop in order), `gateway` (the MCP handlers),
`catalog` (tool definitions and pins), `calls` (one governed request),
`session` (the session execution), `follower` (the events stream),
`completions` (completing off the request's path), `upstream` (the MCP
server fronted), `pipe` (a wrapped stdio server's pipes), `answers` (what
a refused client is told; result hashes).
"""
