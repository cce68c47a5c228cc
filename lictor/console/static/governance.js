// Governance console: executions live from the events stream, an execution's
// transitions, revocation with a reason (admins), policy versions with a diff,
// and activation after a backtest preview (admins).
import {
  ApiError,
  announce,
  api,
  followLog,
  formatTime,
  h,
  logSize,
  needSignIn,
  ref,
  shell,
  stateBadge,
} from "./common.js";

const STATES = ["", "active", "completed", "denied", "revoked", "expired"];
const FILTERS = ["state", "principal", "action", "runtime", "region"];
const FLUSH_MS = 250;
const RELOAD_OVER = 40; // more changed rows than this at once: reload the list instead
const LIMIT = 200;

const content = document.getElementById("content");
let canAct = false;

// ---- layout -------------------------------------------------------------

function build() {
  const filters = h(
    "form",
    { class: "filters", id: "filters", "aria-label": "Filter executions" },
    h(
      "div",
      {},
      h("label", { for: "f-state" }, "State"),
      h(
        "select",
        { id: "f-state", name: "state" },
        STATES.map((s) => h("option", { value: s }, s || "any")),
      ),
    ),
    ["principal", "action", "runtime", "region"].map((name) =>
      h(
        "div",
        {},
        h("label", { for: `f-${name}` }, name[0].toUpperCase() + name.slice(1)),
        h("input", {
          id: `f-${name}`,
          name,
          placeholder: { principal: 'Agent::"planner-7"', action: 'Action::"deploy"' }[name] || "",
          spellcheck: "false",
        }),
      ),
    ),
    h("div", {}, h("button", { type: "submit", class: "primary" }, "Apply")),
  );
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    table.reload();
  });
  const live = h("span", { class: "live off", id: "live" }, "connecting");
  const rows = h("tbody", { id: "executions-body" });
  const list = h(
    "section",
    { class: "panel", "aria-labelledby": "executions-title" },
    h("h2", { id: "executions-title" }, "Executions ", live),
    filters,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "executions" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Execution", "Principal", "Action", "Resource", "Runtime", "State", "Started"].map(
              (t) => h("th", { scope: "col" }, t),
            ),
          ),
        ),
        rows,
      ),
    ),
    h("p", { class: "muted", id: "executions-count" }),
  );
  const detail = h(
    "section",
    { class: "panel", id: "detail", "aria-labelledby": "detail-title", tabindex: "-1" },
    h("h2", { id: "detail-title" }, "Execution"),
    h("p", { class: "muted" }, "Select an execution to see every transition."),
  );
  const policies = h(
    "section",
    { class: "panel", id: "policies", "aria-labelledby": "policies-title" },
    h("h2", { id: "policies-title" }, "Policy versions"),
  );
  content.replaceChildren(h("div", { class: "layout" }, list, detail), policies);
  const table = new ExecutionTable(rows, filters, detail);
  const size = logSize().catch(() => null); // before listing: nothing committed meanwhile is missed
  table.reload().then(() => table.follow(live, size));
  showPolicies(policies);
}

// ---- executions ---------------------------------------------------------

function matches(view, filters) {
  const e = view.execution;
  const runtime = view.transitions.find((t) => t.runtime)?.runtime || {};
  const region = runtime.region;
  return FILTERS.every((name) => {
    const want = filters[name];
    if (!want) return true;
    if (name === "state") return e.state === want;
    if (name === "principal") return ref(e.principal) === want || e.principal.id === want;
    if (name === "action") return ref(e.action) === want || e.action.id === want;
    if (name === "runtime") return e.runtime_id === want;
    return region === undefined || region === want;
  });
}

class ExecutionTable {
  constructor(body, form, detail) {
    this.body = body;
    this.form = form;
    this.detail = detail;
    this.rows = new Map(); // execution id -> <tr>
    this.pending = new Set();
    this.timer = null;
    this.selected = null;
  }

  filters() {
    const data = new FormData(this.form);
    return Object.fromEntries(FILTERS.map((name) => [name, (data.get(name) || "").trim()]));
  }

  async reload() {
    const filters = this.filters();
    const query = new URLSearchParams({ limit: String(LIMIT) });
    for (const [name, value] of Object.entries(filters)) if (value) query.set(name, value);
    try {
      const found = await api(`/v1/executions?${query}`);
      const views = found.executions.sort(
        (a, b) => b.execution.created_at_ms - a.execution.created_at_ms,
      );
      this.rows.clear();
      this.body.replaceChildren(...views.map((view) => this.row(view)));
      this.count(found.next !== null);
    } catch (e) {
      this.body.replaceChildren(
        h("tr", {}, h("td", { colspan: 7, class: "error-text" }, `Could not list: ${e.message}`)),
      );
    }
  }

  count(more) {
    const n = this.rows.size;
    document.getElementById("executions-count").textContent =
      `${n} execution${n === 1 ? "" : "s"} shown` + (more ? ` (the newest ${LIMIT})` : "");
  }

  row(view) {
    const e = view.execution;
    const open = h(
      "button",
      { type: "button", class: "link mono", "data-execution": e.id, onclick: () => this.select(e.id) },
      e.id,
    );
    const tr = h(
      "tr",
      { "data-id": e.id, "data-state": e.state, class: e.id === this.selected ? "selected" : undefined },
      h("td", {}, open),
      h("td", {}, ref(e.principal)),
      h("td", {}, e.action.id),
      h("td", {}, ref(e.resource)),
      h("td", {}, e.runtime_id),
      h("td", {}, stateBadge(e.state)),
      h("td", {}, formatTime(e.created_at_ms)),
    );
    this.rows.set(e.id, tr);
    return tr;
  }

  // Follow the log: each execution entry marks its execution for a refresh.
  follow(live, size) {
    return followLog(live, size, ({ entry }) => {
      if (entry.kind !== "execution" || !entry.execution) return;
      this.pending.add(entry.execution);
      this.timer ??= setTimeout(() => this.flush(), FLUSH_MS);
    });
  }

  async flush() {
    const ids = [...this.pending];
    this.pending.clear();
    this.timer = null;
    if (ids.length > RELOAD_OVER) {
      await this.reload();
    } else {
      const filters = this.filters();
      await Promise.all(ids.map((id) => this.refresh(id, filters)));
      this.count(false);
    }
    if (this.selected && ids.includes(this.selected)) this.select(this.selected, false);
  }

  async refresh(id, filters) {
    let view;
    try {
      view = await api(`/v1/executions/${encodeURIComponent(id)}`);
    } catch {
      return; // gone or not visible to this credential: leave the table as it is
    }
    const old = this.rows.get(id);
    if (!matches(view, filters)) {
      if (old) {
        old.remove();
        this.rows.delete(id);
      }
      return;
    }
    const tr = this.row(view);
    tr.classList.add("changed");
    if (old) old.replaceWith(tr);
    else this.body.prepend(tr);
    while (this.rows.size > LIMIT) {
      const oldest = this.body.lastElementChild;
      this.rows.delete(oldest.dataset.id);
      oldest.remove();
    }
  }

  async select(id, focus = true) {
    this.selected = id;
    for (const [rowId, tr] of this.rows) tr.classList.toggle("selected", rowId === id);
    try {
      const view = await api(`/v1/executions/${encodeURIComponent(id)}`);
      showExecution(this.detail, view);
      if (focus) this.detail.focus();
    } catch (e) {
      this.detail.replaceChildren(
        h("h2", { id: "detail-title" }, "Execution"),
        h("p", { class: "error-text" }, e.message),
      );
    }
  }
}

function showExecution(panel, view) {
  const e = view.execution;
  const d = view.decision || {};
  const field = (name, value) => [h("dt", {}, name), h("dd", {}, value)];
  const facts = h(
    "dl",
    { class: "facts" },
    field("State", [stateBadge(e.state), view.effective_state && view.effective_state !== e.state ? ` (effectively ${view.effective_state})` : ""]),
    field("Principal", ref(e.principal)),
    field("Action", ref(e.action)),
    field("Resource", ref(e.resource)),
    field("Runtime", e.runtime_id),
    field("Delegation", (e.delegation || []).map(ref).join(" → ")),
    field(
      "Lineage",
      h(
        "a",
        { href: `/console/lineage#execution=${encodeURIComponent(e.id)}` },
        e.parent_id ? `child of ${e.parent_id}, depth ${e.depth}` : "root",
      ),
    ),
    field("Policy version", h("code", {}, (e.policy_version || "").slice(0, 12))),
    field(
      "Decision",
      d.allowed === undefined
        ? ""
        : `${d.allowed ? "allowed" : "denied"}${d.reason_code ? ` (${d.reason_code})` : ""}` +
            `${d.reasons && d.reasons.length ? ` by ${d.reasons.join(", ")}` : ""}`,
    ),
    e.reason ? field("Reason", e.reason) : [],
    e.outcome ? field("Outcome", `${e.outcome}${e.exit_code !== null ? `, exit ${e.exit_code}` : ""}`) : [],
  );
  const transitions = h(
    "table",
    { id: "transitions" },
    h("caption", {}, "Every transition, in log order"),
    h(
      "thead",
      {},
      h("tr", {}, ["State", "At", "Reason", "Log index"].map((t) => h("th", { scope: "col" }, t))),
    ),
    h(
      "tbody",
      {},
      view.transitions.map((t) =>
        h(
          "tr",
          { "data-state": t.state },
          h("td", {}, stateBadge(t.state)),
          h("td", {}, formatTime(t.at_ms)),
          h("td", {}, t.reason || ""),
          h(
            "td",
            {},
            h("a", { href: `/console/proof#index=${t.log_index}`, title: "verify this entry" }, String(t.log_index)),
          ),
        ),
      ),
    ),
  );
  const actions = h("div", { class: "actions-row" });
  if (e.state === "active") {
    if (canAct) {
      actions.append(
        h("button", { type: "button", class: "danger", id: "revoke", onclick: () => confirmRevoke(e) }, "Revoke…"),
      );
    } else {
      actions.append(h("p", { class: "muted", id: "read-only" }, "Read-only: only an admin may revoke."));
    }
  }
  panel.replaceChildren(
    h("h2", { id: "detail-title" }, "Execution ", h("code", {}, e.id)),
    facts,
    actions,
    h("div", { class: "table-wrap" }, transitions),
  );
}

async function confirmRevoke(execution) {
  let live = [];
  try {
    const lineage = await api(`/v1/executions/${encodeURIComponent(execution.id)}/lineage`);
    live = lineage.descendants.filter((v) => v.execution.state === "active");
  } catch {
    live = [];
  }
  const reason = h("textarea", { id: "revoke-reason", name: "reason", required: true, maxlength: 256, rows: 2 });
  const error = h("p", { class: "error-text", role: "alert" });
  const dialog = h(
    "dialog",
    { id: "revoke-dialog", "aria-labelledby": "revoke-title" },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: "revoke-title" }, "Revoke ", h("code", {}, execution.id), "?"),
      h(
        "p",
        {},
        live.length
          ? `This also revokes ${live.length} active descendant${live.length === 1 ? "" : "s"}: their processes are terminated.`
          : "Its processes are terminated. It has no active descendants.",
      ),
      h("label", { for: "revoke-reason" }, "Reason (recorded in the log)"),
      reason,
      error,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", value: "cancel", onclick: () => dialog.close() }, "Cancel"),
        h("button", { type: "submit", class: "danger", id: "revoke-confirm" }, "Revoke"),
      ),
    ),
  );
  dialog.querySelector("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const reply = await api(`/v1/executions/${encodeURIComponent(execution.id)}/revoke`, {
        method: "POST",
        body: { reason: reason.value.trim() },
      });
      const n = (reply.revoked || []).length;
      announce(`Revoked ${n} execution${n === 1 ? "" : "s"}.`);
      dialog.close();
    } catch (e) {
      error.textContent = e instanceof ApiError ? `${e.code}: ${e.message}` : e.message;
    }
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  reason.focus();
}

// ---- policies -----------------------------------------------------------

async function showPolicies(panel) {
  let listing;
  try {
    listing = await api("/v1/policies");
  } catch (e) {
    panel.append(h("p", { class: "error-text" }, `Could not list policy versions: ${e.message}`));
    return;
  }
  const view = h("div", { id: "policy-view" });
  const versions = listing.versions.slice().sort((a, b) => b.pushed_at_ms - a.pushed_at_ms);
  const body = h(
    "tbody",
    {},
    versions.map((v) =>
      h(
        "tr",
        { "data-version": v.version },
        h("td", {}, h("code", {}, v.version.slice(0, 12))),
        h("td", {}, formatTime(v.pushed_at_ms)),
        h("td", {}, v.version === listing.active ? h("span", { class: "badge state-active" }, "active") : ""),
        h(
          "td",
          {},
          h(
            "button",
            { type: "button", onclick: () => showVersion(view, v.version, listing.active) },
            v.version === listing.active ? "Show" : "Show diff",
          ),
        ),
      ),
    ),
  );
  panel.append(
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "policy-versions" },
        h("thead", {}, h("tr", {}, ["Version", "Pushed", "", ""].map((t) => h("th", { scope: "col" }, t)))),
        body,
      ),
    ),
    view,
  );
}

function joined(source) {
  return Object.keys(source.policies)
    .sort()
    .map((name) => `// ---- ${name}\n${source.policies[name]}`)
    .join("\n");
}

async function showVersion(view, version, active) {
  let shown;
  let current;
  try {
    shown = await api(`/v1/policies/${version}`);
    current = active && active !== version ? await api(`/v1/policies/${active}`) : null;
  } catch (e) {
    view.replaceChildren(h("p", { class: "error-text" }, e.message));
    return;
  }
  const text = joined(shown.source);
  let listing;
  if (current) {
    const parts = window.Diff.diffLines(joined(current.source), text);
    const added = parts.filter((p) => p.added).reduce((n, p) => n + p.count, 0);
    const removed = parts.filter((p) => p.removed).reduce((n, p) => n + p.count, 0);
    listing = [
      h("p", {}, `Against the active version ${active.slice(0, 12)}: ${added} line(s) added, ${removed} removed.`),
      h(
        "pre",
        { class: "diff", id: "policy-diff", tabindex: "0", "aria-label": "Policy diff" },
        parts.map((p) => (p.added ? h("ins", {}, p.value) : p.removed ? h("del", {}, p.value) : p.value)),
      ),
    ];
  } else {
    listing = [h("pre", { class: "diff", tabindex: "0", "aria-label": "Policy source" }, text)];
  }
  const activate =
    canAct && version !== active
      ? h("button", { type: "button", class: "primary", id: "activate", onclick: () => previewActivation(shown) }, "Activate…")
      : null;
  view.replaceChildren(h("h3", {}, "Version ", h("code", {}, version.slice(0, 12))), ...(activate ? [activate] : []), ...listing);
}

async function previewActivation(policy) {
  const summary = h("div", { id: "backtest" }, h("p", {}, "Running the backtest over recorded decisions…"));
  const confirm = h("button", { type: "submit", class: "danger", id: "activate-confirm", disabled: true }, "Activate");
  const error = h("p", { class: "error-text", role: "alert" });
  const dialog = h(
    "dialog",
    { id: "activate-dialog", "aria-labelledby": "activate-title" },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: "activate-title" }, "Activate ", h("code", {}, policy.version.slice(0, 12)), "?"),
      h("p", {}, "Every active execution is re-verified under it; those it denies are revoked."),
      summary,
      error,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
        confirm,
      ),
    ),
  );
  dialog.addEventListener("close", () => dialog.remove());
  dialog.querySelector("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const reply = await api(`/v1/policies/${policy.version}/activate`, { method: "POST" });
      const n = reply.revoked.length;
      announce(`Activated; ${n} execution${n === 1 ? "" : "s"} revoked (log ${reply.log_index}).`);
      dialog.close();
      const panel = document.getElementById("policies");
      panel.replaceChildren(h("h2", { id: "policies-title" }, "Policy versions"));
      showPolicies(panel);
    } catch (e) {
      error.textContent = e instanceof ApiError ? `${e.code}: ${e.message}` : e.message;
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  try {
    const result = await api("/v1/policies/backtest", { method: "POST", body: { source: policy.source } });
    summary.replaceChildren(...backtestTable(result.changed));
    confirm.disabled = false;
    confirm.focus();
  } catch (e) {
    summary.replaceChildren(h("p", { class: "error-text" }, `Backtest failed, not activating: ${e.message}`));
  }
}

function backtestTable(changed) {
  if (!changed.length) {
    return [h("p", { id: "backtest-result" }, "Backtest: no recorded decision would change.")];
  }
  const verdict = (d) => (d.allowed ? "allow" : "deny");
  return [
    h(
      "p",
      { id: "backtest-result" },
      `Backtest: ${changed.length} recorded decision${changed.length === 1 ? "" : "s"} would change.`,
    ),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "backtest-changes" },
        h("thead", {}, h("tr", {}, ["Execution", "Log index", "Recorded", "Would be"].map((t) => h("th", { scope: "col" }, t)))),
        h(
          "tbody",
          {},
          changed.map((c) =>
            h(
              "tr",
              {},
              h("td", {}, h("code", {}, c.execution)),
              h("td", {}, String(c.log_index)),
              h("td", {}, verdict(c.recorded)),
              h("td", {}, `${verdict(c.replayed)}${c.replayed.reasons?.length ? ` (${c.replayed.reasons.join(", ")})` : ""}`),
            ),
          ),
        ),
      ),
    ),
  ];
}

// ---- start --------------------------------------------------------------

const me = await shell();
if (!me) {
  needSignIn(content, "executions and policies");
} else {
  canAct = me.role === "admin";
  build();
}
