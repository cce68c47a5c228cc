// Execution lineage: the trees executions form, as a graph coloured by state
// with the delegation on each edge, live as the log grows.
//
// A search (execution id, principal or root, kept in the URL hash so other
// pages can link here) picks the roots; each root's whole tree is drawn.
// Cytoscape draws on a canvas, which a keyboard cannot reach, so a list of
// buttons beside it holds the same executions and selects them just as a tap
// does. Log entries about a drawn execution, or a new child of one, reload
// the trees at most once per RELOAD_MS: a cascade shows as it commits,
// without polling. `window.lictorLineage.cy` is the graph, for tests.

import {
  announce,
  api,
  formatTime,
  h,
  logSize,
  needSignIn,
  ref,
  shell,
  stateBadge,
  watchEvents,
} from "./common.js";

const RELOAD_MS = 250;
const MAX_ROOTS = 20;
const MAX_LISTED = 500;
// Time-ordered (Crockford base32) or, made before those, random (RFC 4648 base32).
const EXECUTION_ID = /^ex_(?:[0-7][0-9a-hjkmnp-tv-z]{25}|[a-z2-7]{25}[aeimquy4])$/;
const KINDS = {
  execution: ["Execution id", "ex_…"],
  principal: ["Principal", 'Agent::"planner-7"'],
  root: ["Root execution id", "ex_…"],
};
const COLOURS = {
  active: "#1d7a3a",
  completed: "#1f5fbf",
  revoked: "#b42318",
  denied: "#b42318",
  expired: "#b07800",
  pending: "#6b4fa0",
};
const COLUMNS = ["State", "Log index", "At", "Reason", "Proof"];
const LEGEND = [
  ["active", "active"],
  ["completed", "completed"],
  ["revoked", "revoked or denied"],
  ["expired", "expired"],
  ["pending", "pending"],
];

// What is drawn: the roots searched for, every execution view by id, which
// ones the search matched, and the one selected.
const view = { roots: [], nodes: new Map(), matches: new Set(), selected: null };
// Reloads: one timer, one load at a time, a newer search wins.
const load = { timer: 0, busy: false, stale: false, fresh: false, generation: 0, following: false };
let ui;
let cy;

const me = await shell();
const content = document.getElementById("content");
if (me) {
  start();
} else {
  needSignIn(content, "execution lineage");
}

function start() {
  ui = page();
  content.replaceChildren(ui.root);
  cy = graph(ui.graph);
  window.lictorLineage = { cy };
  window.addEventListener("hashchange", () => show(fromHash()));
  show(fromHash());
}

// -- the page ------------------------------------------------------------------

function page() {
  const form = searchForm();
  const graphBox = h("div", { id: "lineage-graph", role: "img", "aria-label": "Lineage graph" });
  const nodes = h("ul", { id: "lineage-nodes", "aria-labelledby": "nodes-title" });
  const details = h("section", { class: "panel", id: "lineage-details" }, noDetails());
  const summary = h("span", { class: "what" }, "Search for an execution, a principal or a root.");
  const live = h("span", { class: "live off", id: "lineage-live", hidden: true });
  const error = h("p", { class: "error-text", id: "lineage-error", role: "alert" });
  const empty = h("p", { class: "muted graph-empty" }, "Nothing drawn yet.");
  const root = h(
    "div",
    {},
    form.node,
    h("p", { id: "lineage-summary" }, summary, live),
    error,
    h(
      "div",
      { class: "lineage-layout" },
      h(
        "section",
        { class: "panel", "aria-labelledby": "graph-title" },
        h("div", { class: "graph-head" }, h("h2", { id: "graph-title" }, "Graph"), tools()),
        empty,
        graphBox,
        legend(),
      ),
      h(
        "div",
        {},
        h(
          "section",
          { class: "panel" },
          h("h2", { id: "nodes-title" }, "Executions"),
          h("p", { class: "muted" }, "The graph's executions, root first; select one for details."),
          nodes,
        ),
        details,
      ),
    ),
  );
  return { root, ...form, graph: graphBox, nodes, details, summary, live, error, empty };
}

function searchForm() {
  const kind = h(
    "select",
    { id: "lineage-kind", name: "kind" },
    Object.entries(KINDS).map(([value, [label]]) => h("option", { value }, label)),
  );
  const label = h("label", { for: "lineage-query" }, KINDS.execution[0]);
  const query = h("input", {
    id: "lineage-query",
    name: "query",
    type: "search",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    placeholder: KINDS.execution[1],
  });
  kind.addEventListener("change", () => {
    [label.textContent, query.placeholder] = KINDS[kind.value];
  });
  const node = h(
    "form",
    {
      id: "lineage-search",
      class: "filters panel",
      role: "search",
      "aria-label": "Find a lineage",
    },
    h("div", {}, h("label", { for: "lineage-kind" }, "Search by"), kind),
    h("div", { class: "grow" }, label, query),
    h("div", {}, h("button", { type: "submit", class: "primary" }, "Show lineage")),
  );
  node.addEventListener("submit", (event) => {
    event.preventDefault();
    search({ kind: kind.value, value: query.value.trim() });
  });
  return { node, kind, label, query };
}

function tools() {
  const zoom = (factor) => () => {
    const centre = { x: cy.width() / 2, y: cy.height() / 2 };
    cy.zoom({ level: cy.zoom() * factor, renderedPosition: centre });
  };
  return h(
    "div",
    { class: "graph-tools", role: "group", "aria-label": "Graph view" },
    h("button", { type: "button", onclick: fit }, "Fit"),
    h("button", { type: "button", onclick: zoom(1.25) }, "Zoom in"),
    h("button", { type: "button", onclick: zoom(0.8) }, "Zoom out"),
  );
}

function legend() {
  return h(
    "ul",
    { class: "legend", "aria-label": "Legend" },
    LEGEND.map(([state, text]) =>
      h("li", {}, h("span", { class: `swatch swatch-${state}`, "aria-hidden": "true" }), text),
    ),
    h(
      "li",
      {},
      h("span", { class: "cascade-line", "aria-hidden": "true" }),
      "revoked by a cascade",
    ),
  );
}

// -- searching -----------------------------------------------------------------

function fromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const kind of Object.keys(KINDS)) {
    if (params.get(kind)) return { kind, value: params.get(kind).trim() };
  }
  return null;
}

function search(wanted) {
  if (wanted.kind === "principal") {
    try {
      wanted = { kind: wanted.kind, value: principal(wanted.value) };
    } catch (e) {
      ui.error.textContent = e.message;
      return;
    }
  }
  const hash = `#${new URLSearchParams({ [wanted.kind]: wanted.value })}`;
  if (location.hash === hash) {
    show(wanted);
  } else {
    location.hash = hash; // hashchange shows it
  }
}

// Draw what `wanted` names, replacing whatever was drawn.
async function show(wanted) {
  if (!wanted) return;
  ui.kind.value = wanted.kind;
  [ui.label.textContent, ui.query.placeholder] = KINDS[wanted.kind];
  ui.query.value = wanted.value;
  ui.error.textContent = "";
  const generation = ++load.generation;
  clearTimeout(load.timer);
  load.timer = 0;
  load.busy = true;
  load.fresh = true; // a new search: any entry may concern the tree it draws
  try {
    await follow();
    const found = await roots(wanted);
    const nodes = await trees(found.roots);
    if (generation !== load.generation) return;
    Object.assign(view, { roots: found.roots, matches: found.matches, selected: null });
    draw(nodes, true);
    select(found.select);
    ui.summary.textContent = found.summary;
    announce(`${found.summary}: ${nodes.size} executions drawn.`);
  } catch (e) {
    if (generation !== load.generation) return;
    Object.assign(view, { roots: [], matches: new Set(), selected: null });
    draw(new Map(), true);
    ui.summary.textContent = "";
    ui.error.textContent = e.message;
  } finally {
    if (generation === load.generation) settle();
  }
}

// The roots whose trees answer a search, what to select, and what to call it.
async function roots({ kind, value }) {
  if (kind === "principal") return principalRoots(principal(value));
  if (!EXECUTION_ID.test(value)) {
    const shape = "ex_ and 26 lowercase letters and digits";
    throw new Error(`"${value}" is not an execution id (${shape}).`);
  }
  const found = await api(`/v1/executions/${value}`);
  const e = found.execution;
  const matches = new Set([value]);
  if (kind === "root") {
    const note = e.parent_id ? ` (not a root: it descends from ${e.root_id})` : "";
    return { roots: [value], matches, select: value, summary: `Tree under ${value}${note}` };
  }
  return { roots: [e.root_id], matches, select: value, summary: `Tree of ${e.root_id}` };
}

async function principalRoots(who) {
  const query = new URLSearchParams({ principal: who, limit: String(MAX_LISTED) });
  const listed = (await api(`/v1/executions?${query}`)).executions.map((v) => v.execution);
  if (!listed.length) throw new Error(`No executions of ${who}.`);
  const all = [...new Set(listed.map((e) => e.root_id))];
  const drawn = all.slice(0, MAX_ROOTS);
  const more = all.length > drawn.length ? `, the first ${drawn.length} of ${all.length}` : "";
  return {
    roots: drawn,
    matches: new Set(listed.map((e) => e.id)),
    select: listed[0].id,
    summary: `Trees of ${who}'s executions (${drawn.length} roots${more})`,
  };
}

// `Agent::"x"` as typed, or `Agent::x` quoted as the API expects.
function principal(text) {
  if (/::"(?:[^"\\]|\\.)*"$/.test(text)) return text;
  const cut = text.lastIndexOf("::");
  if (cut <= 0 || cut + 2 >= text.length) {
    throw new Error(`Write a principal as Type::"id", for example Agent::"planner-7".`);
  }
  const id = text.slice(cut + 2).replace(/\\/g, "\\\\").replace(/"/g, '\\"');
  return `${text.slice(0, cut)}::"${id}"`;
}

// Every execution of the trees under `ids`, root first, by id.
async function trees(ids) {
  const each = await Promise.all(ids.map(tree));
  return new Map(each.flat().map((v) => [v.execution.id, v]));
}

async function tree(id) {
  const [root, lineage] = await Promise.all([
    api(`/v1/executions/${id}`),
    api(`/v1/executions/${id}/lineage`),
  ]);
  return [root, ...lineage.descendants];
}

// -- following the log ---------------------------------------------------------

// Start following the log (once, when something is first drawn), from its
// size now: entries after that reach onEntry.
async function follow() {
  if (load.following) return;
  load.following = true;
  const onState = (state, detail) => {
    ui.live.hidden = false;
    ui.live.className = `live ${state === "live" ? "on" : "off"}`;
    ui.live.textContent =
      state === "live" ? "Live" : state === "closed" ? `Not live: ${detail}` : "Connecting…";
  };
  onState("reconnecting");
  try {
    watchEvents({}, (await logSize()) - 1, onEntry, onState);
  } catch (e) {
    onState("closed", e.message);
  }
}

function onEntry({ entry }) {
  if (entry.kind !== "execution") return;
  const drawn = view.nodes.has(entry.execution) || view.nodes.has(entry.parent);
  if (load.busy) {
    // the load in flight may have read before this entry: only one that may
    // concern its trees sends it back (else a busy log would reload forever)
    if (load.fresh || drawn) load.stale = true;
  } else if (drawn) {
    schedule();
  }
}

function schedule() {
  if (load.timer || !view.roots.length) return;
  load.timer = setTimeout(reload, RELOAD_MS);
}

// Read the drawn trees again and update the graph in place.
async function reload() {
  load.timer = 0;
  if (load.busy) {
    load.stale = true;
    return;
  }
  const generation = load.generation;
  load.busy = true;
  load.fresh = false;
  try {
    const nodes = await trees(view.roots);
    if (generation === load.generation) draw(nodes, false);
  } catch (e) {
    if (generation === load.generation) ui.error.textContent = `Could not refresh: ${e.message}`;
  } finally {
    if (generation === load.generation) settle();
  }
}

function settle() {
  load.busy = false;
  if (load.stale) {
    load.stale = false;
    schedule();
  }
}

// -- drawing -------------------------------------------------------------------

function graph(container) {
  return window.cytoscape({
    container,
    style: graphStyle(),
    minZoom: 0.1,
    maxZoom: 4,
    boxSelectionEnabled: false,
    autounselectify: false,
  }).on("tap", "node", (event) => select(event.target.id()));
}

function graphStyle() {
  const label = { "text-background-color": "#ffffff", "text-background-opacity": 0.85 };
  return [
    {
      selector: "node",
      style: {
        ...label,
        label: "data(label)",
        "text-wrap": "wrap",
        "text-valign": "bottom",
        "text-margin-y": 4,
        "text-background-padding": 2,
        "font-size": 11,
        color: "#1b1f24",
        width: 26,
        height: 26,
        "background-color": "#8a94a3",
        "border-width": 2,
        "border-color": "#ffffff",
      },
    },
    ...Object.entries(COLOURS).map(([state, colour]) => ({
      selector: `node[state = "${state}"]`,
      style: { "background-color": colour },
    })),
    { selector: "node.match", style: { width: 34, height: 34, "border-color": "#16202e" } },
    { selector: "node:selected", style: { "border-width": 5, "border-color": "#ffbf47" } },
    {
      selector: "node.changed",
      style: {
        "underlay-color": "#ffbf47",
        "underlay-opacity": 0.7,
        "underlay-padding": 9,
        "underlay-shape": "ellipse",
      },
    },
    {
      selector: "edge",
      style: {
        ...label,
        label: "data(label)",
        "font-size": 9,
        color: "#5b6470",
        width: 2,
        "curve-style": "bezier",
        "line-color": "#9aa4b1",
        "target-arrow-shape": "triangle",
        "target-arrow-color": "#9aa4b1",
      },
    },
    {
      selector: "edge[?cascade]",
      style: { "line-color": "#b42318", "target-arrow-color": "#b42318", "line-style": "dashed" },
    },
  ];
}

// Show `nodes` (id → execution view): new ones laid out, changed ones flashed.
function draw(nodes, fresh) {
  const old = view.nodes;
  view.nodes = nodes;
  const added = sync(elements(nodes));
  if (fresh || added) layout();
  const changed = [...nodes.keys()].filter(
    (id) => old.has(id) && changedView(old.get(id), nodes.get(id)),
  );
  if (!fresh && changed.length) {
    cy.collection(changed.map((id) => cy.getElementById(id))).flashClass("changed", 1500);
    announce(news(changed));
  }
  if (fresh || added || changed.length || old.size !== nodes.size) list();
  if (fresh || changed.includes(view.selected)) details();
  ui.empty.hidden = nodes.size > 0;
  ui.graph.setAttribute("aria-label", graphLabel());
}

function changedView(before, after) {
  return before.execution.version !== after.execution.version;
}

function news(changed) {
  const said = changed.slice(0, 3).map((id) => `${id} is ${view.nodes.get(id).execution.state}`);
  const more = changed.length > said.length ? ` and ${changed.length - said.length} more` : "";
  return `${said.join("; ")}${more}.`;
}

function elements(nodes) {
  const out = [];
  for (const { execution: e } of nodes.values()) {
    const label = `${short(e.id)} · ${e.state}\n${e.principal.id}`;
    const classes = view.matches.has(e.id) ? "match" : "";
    out.push({ group: "nodes", data: { id: e.id, state: e.state, label }, classes });
    if (e.parent_id && nodes.has(e.parent_id)) {
      const cascade = e.state === "revoked" && (e.reason || "").startsWith("ancestor_revoked:");
      const id = `${e.parent_id}>${e.id}`;
      const label = `delegates to ${ref(e.principal)}`;
      out.push({ group: "edges", data: { id, source: e.parent_id, target: e.id, cascade, label } });
    }
  }
  return out;
}

// Make the graph hold exactly `wanted`; true if any element was new.
function sync(wanted) {
  const ids = new Set(wanted.map((el) => el.data.id));
  let added = false;
  cy.batch(() => {
    cy.elements().filter((el) => !ids.has(el.id())).remove();
    for (const el of wanted) {
      const there = cy.getElementById(el.data.id);
      if (there.empty()) {
        cy.add(el);
        added = true;
      } else {
        there.data(el.data);
        there.classes(el.classes || "");
      }
    }
  });
  return added;
}

function layout() {
  const roots = cy.collection(view.roots.map((id) => cy.getElementById(id)));
  cy.layout({
    name: "breadthfirst",
    directed: true,
    roots,
    padding: 24,
    spacingFactor: 1.05,
    nodeDimensionsIncludeLabels: true,
    animate: false,
    fit: false,
  }).run();
  fit();
}

// Everything in view, but a small tree no larger than life.
function fit() {
  cy.fit(undefined, 24);
  if (cy.zoom() > 1.25) {
    cy.zoom(1.25);
    cy.center();
  }
}

function graphLabel() {
  const count = view.nodes.size;
  const edges = cy.edges().length;
  const also = "the list of executions holds the same";
  return `Lineage graph: ${count} executions, ${edges} delegations; ${also}.`;
}

function short(id) {
  return `${id.slice(0, 9)}…`;
}

// -- the list and the details --------------------------------------------------

// The executions as a tree of buttons; the focused one keeps focus.
function list() {
  const focused = document.activeElement?.closest?.("#lineage-nodes li")?.dataset.id;
  ui.nodes.replaceChildren(...ordered().map(([v, level]) => item(v, level)));
  if (focused) ui.nodes.querySelector(`li[data-id="${focused}"] button`)?.focus();
}

// [view, level] for every drawn execution, each root followed by its tree.
function ordered() {
  const children = new Map();
  for (const v of view.nodes.values()) {
    const parent = v.execution.parent_id;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(v);
  }
  const out = [];
  const visit = (v, level) => {
    out.push([v, level]);
    for (const child of children.get(v.execution.id) || []) visit(child, level + 1);
  };
  for (const id of view.roots) if (view.nodes.has(id)) visit(view.nodes.get(id), 0);
  return out;
}

function item({ execution: e }, level) {
  const li = h(
    "li",
    { "data-id": e.id, "data-state": e.state, class: view.matches.has(e.id) ? "match" : undefined },
    h(
      "button",
      {
        type: "button",
        "aria-current": e.id === view.selected ? "true" : undefined,
        onclick: () => select(e.id, true),
      },
      h("span", { class: "id mono" }, e.id),
      h("span", { class: "state" }, `— ${e.state}`),
      h("span", { class: "who" }, `${ref(e.principal)} ${e.action.id} ${e.resource.id}`),
    ),
  );
  li.style.setProperty("--depth", String(level));
  return li;
}

function select(id, centre = false) {
  if (!id || !view.nodes.has(id)) return;
  view.selected = id;
  const node = cy.getElementById(id);
  cy.nodes(":selected").unselect();
  node.select();
  if (centre) cy.animate({ center: { eles: node }, duration: 200 });
  for (const button of ui.nodes.querySelectorAll("button")) {
    const current = button.closest("li").dataset.id === id;
    if (current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  details();
}

function noDetails() {
  return [
    h("h2", {}, "Details"),
    h("p", { class: "muted" }, "Select an execution in the graph or the list."),
  ];
}

function details() {
  const v = view.nodes.get(view.selected);
  if (!v) {
    ui.details.replaceChildren(...noDetails());
    return;
  }
  const e = v.execution;
  const active = document.activeElement;
  const focused = ui.details.contains(active) && active.getAttribute("href");
  ui.details.replaceChildren(
    h("h2", {}, "Execution ", h("span", { class: "mono" }, e.id)),
    facts(e),
    h(
      "p",
      {},
      h(
        "a",
        { href: `/console/proof#execution=${e.id}`, id: "execution-proofs" },
        "Proofs of this execution",
      ),
    ),
    h("h3", {}, "Transitions"),
    transitions(v.transitions),
  );
  if (focused) ui.details.querySelector(`a[href="${focused}"]`)?.focus();
}

function facts(e) {
  const rows = [
    ["State", stateBadge(e.state)],
    ["Principal", h("code", {}, ref(e.principal))],
    ["Action", h("code", {}, ref(e.action))],
    ["Resource", h("code", {}, ref(e.resource))],
    ["Runtime", e.runtime_id || "none"],
    ["Parent", e.parent_id ? goTo(e.parent_id) : "none: a root"],
    ["Root", goTo(e.root_id)],
    ["Delegation", e.delegation.map(ref).join(" → ")],
    ["Created", formatTime(e.created_at_ms)],
    ["Ended", e.ended_at_ms ? formatTime(e.ended_at_ms) : "not yet"],
    ["Outcome", outcome(e)],
    ["Reason", e.reason || "—"],
    ["Policy version", h("code", {}, (e.policy_version || "").slice(0, 12))],
  ];
  const pairs = rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]);
  return h("dl", { class: "facts" }, pairs);
}

function outcome(e) {
  if (!e.outcome) return "—";
  return e.exit_code === null ? e.outcome : `${e.outcome} (exit ${e.exit_code})`;
}

// A button selecting a drawn execution; plain text for one not drawn.
function goTo(id) {
  if (!view.nodes.has(id)) return h("span", { class: "mono" }, id);
  return h("button", { type: "button", class: "link mono", onclick: () => select(id, true) }, id);
}

// A time that wraps between its date and its time of day, not inside them.
function when(ms) {
  const [day, time] = formatTime(ms).split(" ");
  return [h("span", {}, day), " ", h("span", {}, time)];
}

function transitions(steps) {
  const row = (t) =>
    h(
      "tr",
      {},
      h("td", {}, stateBadge(t.state)),
      h("td", {}, String(t.log_index)),
      h("td", { class: "when" }, when(t.at_ms)),
      h("td", {}, t.reason || "—"),
      h(
        "td",
        {},
        h(
          "a",
          {
            href: `/console/proof#index=${t.log_index}`,
            "aria-label": `proof of log entry ${t.log_index}`,
          },
          "proof",
        ),
      ),
    );
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "transitions" },
      h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, steps.map(row)),
    ),
  );
}
