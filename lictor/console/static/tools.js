// MCP tools: every pinned tool definition, changed ones first; a changed
// tool's pending definition as a diff against the approved one; approval of
// exactly the reviewed hash (admins). Live from the log's tool_* entries.
//
// A tool's description is text the model reads, so the page shows it as it
// is: characters a reader cannot see (zero-width, bidirectional controls,
// unusual spaces) are drawn as their code points.
import { ApiError, announce, api, followLog, formatTime, h, logSize, needSignIn, shell } from "./common.js";

const KINDS = new Set(["tool_pinned", "tool_changed", "tool_approved"]);
const MEMBERS = ["name", "title", "description", "inputSchema", "outputSchema", "annotations"];
const TEXT_MEMBERS = ["title", "description"];
const FLUSH_MS = 250;
const HIDDEN = /(?![\n\t ])[\p{C}\p{Z}]/gu; // control, format, unassigned, and spaces but the plain one

const content = document.getElementById("content");
let canAct = false;

// ---- text ---------------------------------------------------------------

// Pretty JSON with the definition's members in a fixed order and every
// nested object's keys sorted, so the diff shows changes, not reorderings.
function sorted(value) {
  if (Array.isArray(value)) return value.map(sorted);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((key) => [key, sorted(value[key])]),
  );
}

function pretty(definition) {
  const known = MEMBERS.filter((m) => m in definition);
  const rest = Object.keys(definition).filter((k) => !MEMBERS.includes(k)).sort();
  const ordered = Object.fromEntries([...known, ...rest].map((k) => [k, sorted(definition[k])]));
  return JSON.stringify(ordered, null, 2);
}

function codePoint(c) {
  return `U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`;
}

// Text as nodes, with each invisible character drawn as ⟨U+XXXX⟩.
function reveal(text) {
  const parts = [];
  let at = 0;
  for (const match of text.matchAll(HIDDEN)) {
    if (match.index > at) parts.push(text.slice(at, match.index));
    const name = codePoint(match[0]);
    parts.push(h("span", { class: "hidden-char", title: `invisible character ${name}` }, `⟨${name}⟩`));
    at = match.index + match[0].length;
  }
  if (at < text.length) parts.push(text.slice(at));
  return parts;
}

function hiddenCount(text) {
  return [...text.matchAll(HIDDEN)].length;
}

function diffBlock(parts, attrs) {
  return h(
    "pre",
    { class: "diff", tabindex: "0", ...attrs },
    parts.map((p) => (p.added ? h("ins", {}, reveal(p.value)) : p.removed ? h("del", {}, reveal(p.value)) : reveal(p.value))),
  );
}

function short(hash) {
  return hash ? hash.replace(/^sha256:/, "").slice(0, 12) : "";
}

function hashCode(hash) {
  return hash ? h("code", { title: hash, "data-hash": hash }, short(hash)) : "";
}

function badge(status) {
  return h("span", { class: `badge pin-${status}` }, status);
}

// ---- layout -------------------------------------------------------------

function build() {
  const live = h("span", { class: "live off", id: "live" }, "connecting");
  const filter = h(
    "select",
    { id: "f-status", name: "status" },
    [
      ["", "any"],
      ["changed", "changed"],
      ["approved", "approved"],
    ].map(([value, label]) => h("option", { value }, label)),
  );
  const rows = h("tbody", { id: "tools-body" });
  const list = h(
    "section",
    { class: "panel", "aria-labelledby": "tools-title" },
    h("h2", { id: "tools-title" }, "Pinned tools ", live),
    h(
      "p",
      { class: "muted" },
      "A gateway pins each tool the first time it sees it. A tool described differently later is ",
      "shown to clients as approved and its calls are denied until an admin approves the change.",
    ),
    h("div", { class: "filters" }, h("div", {}, h("label", { for: "f-status" }, "Status"), filter)),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "tools" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Tool", "Status", "Approved", "Pending", "Pinned", "Changed"].map((t) => h("th", { scope: "col" }, t)),
          ),
        ),
        rows,
      ),
    ),
    h("p", { class: "muted", id: "tools-count" }),
  );
  const detail = h(
    "section",
    { class: "panel", id: "detail", "aria-labelledby": "detail-title", tabindex: "-1" },
    h("h2", { id: "detail-title" }, "Tool"),
    h("p", { class: "muted" }, "Select a tool to see its definition and, if it changed, what changed."),
  );
  content.replaceChildren(h("div", { class: "layout" }, list, detail));
  const table = new PinTable(rows, filter, detail);
  filter.addEventListener("change", () => table.reload());
  const size = logSize().catch(() => null); // before listing: nothing committed meanwhile is missed
  table.reload().then(() => table.follow(live, size));
}

// ---- the table ----------------------------------------------------------

class PinTable {
  constructor(body, filter, detail) {
    this.body = body;
    this.filter = filter;
    this.detail = detail;
    this.pins = new Map(); // tool id -> pin, as last listed
    this.selected = null;
    this.timer = null;
  }

  async reload() {
    const status = this.filter.value;
    let redraw = false;
    try {
      const found = await api(`/v1/tools${status ? `?status=${status}` : ""}`);
      const pins = found.tools.sort(
        (a, b) => (a.status === "changed" ? 0 : 1) - (b.status === "changed" ? 0 : 1) || a.tool.localeCompare(b.tool),
      );
      const before = this.pins;
      this.pins = new Map(pins.map((pin) => [pin.tool, pin]));
      redraw = JSON.stringify(before.get(this.selected)) !== JSON.stringify(this.pins.get(this.selected));
      this.body.replaceChildren(...(pins.length ? pins.map((pin) => this.row(pin)) : [this.empty(status)]));
      this.count();
    } catch (e) {
      this.body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "error-text" }, `Could not list: ${e.message}`)));
      return;
    }
    if (this.selected && redraw) this.show(this.selected, false); // unchanged: leave the reader's place
  }

  empty(status) {
    const text = status ? `No ${status} tool.` : "No tool has been reported yet: a gateway (lictor mcp) reports the tools it sees.";
    return h("tr", {}, h("td", { colspan: 6, class: "muted" }, text));
  }

  count() {
    const all = [...this.pins.values()];
    const changed = all.filter((p) => p.status === "changed").length;
    document.getElementById("tools-count").textContent =
      `${all.length} tool${all.length === 1 ? "" : "s"} shown` + (changed ? `, ${changed} waiting for approval` : "");
  }

  row(pin) {
    const classes = [pin.status === "changed" ? "tool-changed" : "", pin.tool === this.selected ? "selected" : ""];
    return h(
      "tr",
      { "data-tool": pin.tool, "data-status": pin.status, class: classes.join(" ").trim() || undefined },
      h(
        "td",
        {},
        h("button", { type: "button", class: "link mono", "data-select": pin.tool, onclick: () => this.show(pin.tool) }, pin.tool),
      ),
      h("td", {}, badge(pin.status)),
      h("td", { class: "approved-hash" }, hashCode(pin.approved)),
      h("td", { class: "pending-hash" }, hashCode(pin.pending)),
      h("td", {}, formatTime(pin.pinned_at_ms)),
      h("td", {}, formatTime(pin.changed_at_ms)),
    );
  }

  show(tool, focus = true) {
    this.selected = tool;
    for (const tr of this.body.querySelectorAll("tr[data-tool]")) tr.classList.toggle("selected", tr.dataset.tool === tool);
    const pin = this.pins.get(tool);
    if (!pin) {
      this.detail.replaceChildren(
        h("h2", { id: "detail-title" }, "Tool ", h("code", {}, tool)),
        h("p", { class: "muted" }, "Not in the list as it is filtered now."),
      );
      return;
    }
    showPin(this.detail, pin, () => confirmApprove(pin, this));
    if (focus) this.detail.focus();
  }

  // Follow the log: any tool entry reloads the list (a few hundred rows at most).
  follow(live, size) {
    return followLog(live, size, ({ entry }) => {
      if (!KINDS.has(entry.kind)) return;
      this.timer ??= setTimeout(() => {
        this.timer = null;
        this.reload();
      }, FLUSH_MS);
    });
  }
}

// ---- one tool -----------------------------------------------------------

function showPin(panel, pin, approve) {
  const field = (name, value) => [h("dt", {}, name), h("dd", {}, value)];
  const changed = pin.status === "changed" && pin.pending_definition;
  const facts = h(
    "dl",
    { class: "facts" },
    field("Status", badge(pin.status)),
    field("Approved", h("code", { id: "approved-full" }, pin.approved)),
    field("Pinned", formatTime(pin.pinned_at_ms)),
    changed ? field("Pending", h("code", { id: "pending-full" }, pin.pending)) : [],
    changed ? field("Changed", formatTime(pin.changed_at_ms)) : [],
  );
  const actions = h("div", { class: "actions-row" });
  if (changed) {
    if (canAct) {
      actions.append(h("button", { type: "button", class: "primary", id: "approve", onclick: approve }, "Approve…"));
    } else {
      actions.append(h("p", { class: "muted", id: "read-only" }, "Read-only: only an admin may approve a changed definition."));
    }
  }
  const approvedText = pretty(pin.definition);
  panel.replaceChildren(
    h("h2", { id: "detail-title" }, "Tool ", h("code", {}, pin.tool)),
    facts,
    actions,
    changed ? changes(pin.definition, pin.pending_definition) : [],
    h("h3", {}, "Approved definition"),
    hiddenWarning(approvedText),
    h("pre", { class: "diff", id: "tool-definition", tabindex: "0", "aria-label": "Approved definition" }, reveal(approvedText)),
  );
}

function hiddenWarning(text) {
  const n = hiddenCount(text);
  return n
    ? h("p", { class: "error-text hidden-warning" }, `${n} invisible character${n === 1 ? "" : "s"}, shown as ⟨U+…⟩.`)
    : [];
}

// What an approval would change: the members that differ, each text member
// word by word (as the model will read it), and the whole definition by line.
function changes(approved, pending) {
  const keys = [...new Set([...Object.keys(approved), ...Object.keys(pending)])];
  const differ = keys.filter((k) => JSON.stringify(sorted(approved[k])) !== JSON.stringify(sorted(pending[k])));
  const texts = TEXT_MEMBERS.filter((k) => differ.includes(k)).map((k) => {
    const before = typeof approved[k] === "string" ? approved[k] : "";
    const after = typeof pending[k] === "string" ? pending[k] : "";
    return [
      h("h4", {}, `${k[0].toUpperCase()}${k.slice(1)}, word by word`),
      hiddenWarning(after),
      diffBlock(window.Diff.diffWordsWithSpace(before, after), { id: `text-diff-${k}`, "aria-label": `${k} diff` }),
    ];
  });
  const lines = window.Diff.diffLines(pretty(approved), pretty(pending));
  const added = lines.filter((p) => p.added).reduce((n, p) => n + p.count, 0);
  const removed = lines.filter((p) => p.removed).reduce((n, p) => n + p.count, 0);
  return h(
    "div",
    { id: "tool-changes" },
    h("h3", {}, "What changed"),
    h(
      "p",
      { id: "changed-members" },
      differ.length ? `Changed: ${differ.join(", ")}. ` : "",
      `Pending against approved: ${added} line(s) added, ${removed} removed.`,
    ),
    texts,
    h("h4", {}, "Definition, line by line"),
    diffBlock(lines, { id: "tool-diff", "aria-label": "Definition diff, approved against pending" }),
  );
}

function confirmApprove(pin, table) {
  const error = h("p", { class: "error-text", role: "alert", id: "approve-error" });
  const confirm = h("button", { type: "submit", class: "primary", id: "approve-confirm" }, "Approve");
  const dialog = h(
    "dialog",
    { id: "approve-dialog", "aria-labelledby": "approve-title", "aria-describedby": "approve-what" },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: "approve-title" }, "Approve the new definition of ", h("code", {}, pin.tool), "?"),
      h(
        "p",
        { id: "approve-what" },
        "Clients will be shown the definition you reviewed, with this hash, and its calls decided by policy again:",
      ),
      h("p", {}, h("code", { class: "full-hash", id: "approve-hash" }, pin.pending)),
      h("p", { class: "muted" }, "The approval is recorded in the log with your credential's name."),
      error,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
        confirm,
      ),
    ),
  );
  dialog.querySelector("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    confirm.disabled = true;
    try {
      await api("/v1/tools/approve", { method: "POST", body: { tool: pin.tool, hash: pin.pending } });
      announce(`Approved ${pin.tool} at ${short(pin.pending)}.`);
      dialog.close();
      await table.reload();
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) {
        error.textContent =
          "Not approved: the pending definition changed since you reviewed it (or was already approved). " +
          "Close this, review the diff again and approve what it shows now.";
        table.reload();
      } else {
        error.textContent = e instanceof ApiError ? `${e.code}: ${e.message}` : e.message;
        confirm.disabled = false;
      }
    }
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  confirm.focus();
}

// ---- start --------------------------------------------------------------

const me = await shell();
if (!me) {
  needSignIn(content, "MCP tool pins");
} else {
  canAct = me.role === "admin";
  build();
}
