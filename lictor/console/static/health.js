// Infrastructure health: control-plane replicas, database, log, runtimes, and the
// last hour in charts. One GET /v1/health every 10 s while the tab is visible
// (paused while hidden or when the user pauses); the charts are uPlot's.
import { ApiError, ago, announce, api, formatTime, h, needSignIn, shell } from "./common.js";

const REFRESH_MS = 10_000;
const CHART_HEIGHT = 180;
const COLORS = { ok: "#1d7a3a", bad: "#b42318", accent: "#1f5fbf", warn: "#9a6700" };

// Each chart: its caption, unit, drawing ("bars": counts per minute side by side;
// "lines": values sampled per minute, dots where a minute stands alone) and series
// (label, key in history, color, dashed?).
const CHARTS = [
  {
    id: "decisions",
    title: "Decisions per minute",
    unit: "decisions",
    draw: "bars",
    series: [
      ["Allowed", "decisions_allowed", COLORS.ok, false],
      ["Denied", "decisions_denied", COLORS.bad, false],
    ],
    note: "Counted from the log: allows (new executions and renewals that re-verified), denies.",
  },
  {
    id: "latency",
    title: "Decision latency",
    unit: "ms",
    draw: "lines",
    series: [
      ["p50", "latency_p50_ms", COLORS.accent, false],
      ["p99", "latency_p99_ms", COLORS.warn, true],
    ],
    note: "Request to durable decision, estimated from histogram buckets over all replicas.",
  },
  {
    id: "active",
    title: "Active executions",
    unit: "executions",
    draw: "lines",
    series: [["Active", "active", COLORS.accent, false]],
    note: "Sampled by the replicas every few seconds; the newest sample of each minute.",
  },
  {
    id: "revocations",
    title: "Revocations per minute",
    unit: "revocations",
    draw: "bars",
    series: [["Revoked", "revocations", COLORS.bad, false]],
    note: "Executions revoked, cascades included, counted from the log.",
  },
];

const content = document.getElementById("content");
const me = await shell();
if (!me) {
  needSignIn(content, "the health of the control plane");
} else {
  start();
}

function start() {
  const view = skeleton();
  const charts = new Map();
  let timer = null;
  let busy = false;
  let paused = false;
  let refreshes = 0;

  const visible = () => document.visibilityState !== "hidden";
  const schedule = () => {
    clearTimeout(timer);
    timer = !paused && visible() ? setTimeout(refresh, REFRESH_MS) : null;
  };
  async function refresh() {
    clearTimeout(timer);
    if (busy || paused || !visible()) return;
    busy = true;
    try {
      const data = await api("/v1/health");
      view.error.hidden = true;
      render(view, charts, data);
      view.updated.dataset.refreshes = String(++refreshes);
    } catch (e) {
      showError(view, e);
    } finally {
      busy = false;
      schedule();
    }
  }

  view.pause.addEventListener("click", () => {
    paused = !paused;
    view.pause.textContent = paused ? "Resume updates" : "Pause updates";
    announce(paused ? "Updates paused." : "Updates resumed.");
    if (paused) clearTimeout(timer);
    else refresh();
  });
  document.addEventListener("visibilitychange", () =>
    visible() ? refresh() : clearTimeout(timer),
  );
  const resize = () => {
    for (const chart of charts.values()) chart.fit();
  };
  window.addEventListener("resize", resize);
  refresh();
}

// The page's fixed parts, filled on every refresh.
function skeleton() {
  const view = {
    updated: h("span", { class: "updated", id: "health-updated" }, "Loading…"),
    pause: h("button", { type: "button", id: "health-pause" }, "Pause updates"),
    error: h("p", { class: "notice error-text", id: "health-error", role: "alert", hidden: true }),
    tiles: h("ul", { class: "tiles", id: "health-tiles", "aria-label": "Status" }),
    replicas: h("tbody"),
    runtimesNote: h("p", { class: "muted", id: "health-runtimes-note" }),
    runtimes: h("table", {
      class: "health",
      id: "health-runtimes",
      "aria-describedby": "health-runtimes-note",
    }),
    scan: h("p", { class: "chart-note", id: "health-scan" }),
    charts: h("div", { class: "charts" }),
  };
  const replicaTable = h(
    "table",
    { class: "health", id: "health-replicas", "aria-describedby": "health-replicas-note" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Replica", "State", "Version", "Up since", "Last report"].map((t) =>
          h("th", { scope: "col" }, t),
        ),
        ["Decisions, last min", "p50", "p99", "HTTP requests"].map((t) =>
          h("th", { scope: "col", class: "num" }, t),
        ),
      ),
    ),
    view.replicas,
  );
  content.replaceChildren(
    h("div", { class: "health-bar" }, view.updated, view.pause),
    view.error,
    view.tiles,
    h(
      "section",
      { class: "panel", "aria-labelledby": "h-replicas" },
      h("h2", { id: "h-replicas" }, "Control plane"),
      h(
        "p",
        { class: "muted", id: "health-replicas-note" },
        "The processes sharing this database, each as it last reported (every 5 s).",
      ),
      scrollable(replicaTable, "Replicas table"),
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "h-runtimes" },
      h("h2", { id: "h-runtimes" }, "Runtimes by region and cluster"),
      view.runtimesNote,
      scrollable(view.runtimes, "Runtimes table"),
    ),
    h(
      "section",
      { "aria-labelledby": "h-history" },
      h("h2", { id: "h-history" }, "The last hour"),
      view.charts,
      view.scan,
    ),
  );
  return view;
}

// A table that scrolls sideways inside its panel (never the page), by keyboard too.
function scrollable(table, label) {
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": label },
    table,
  );
}

function showError(view, e) {
  const what = e instanceof ApiError ? e : new ApiError(0, "error", String(e.message || e));
  const text =
    what.status === 403
      ? `This credential may not see the health of the control plane (${what.message}).`
      : `Could not refresh (${what.code}): ${what.message}. Showing the last figures received.`;
  view.error.textContent = text;
  view.error.hidden = false;
}

function render(view, charts, data) {
  const now = data.now_ms;
  const at = formatTime(now).slice(11, 19);
  view.updated.textContent = `Updated ${at} UTC from ${data.replica}; refreshes every 10 s.`;
  view.tiles.replaceChildren(...tiles(data));
  view.replicas.replaceChildren(...data.replicas.map((r) => replicaRow(r, now)));
  renderRuntimes(view, data, now);
  renderCharts(view.charts, charts, data.history);
  const scan = data.history.log_scan;
  const most = fmt(scan.max_entries);
  view.scan.textContent =
    scan.complete_since_ms === null
      ? "Decisions and revocations are counted from every entry of the last hour " +
        `(at most the ${most} newest entries are read at a time).`
      : `Decisions and revocations are complete since ${formatTime(scan.complete_since_ms)} UTC: ` +
        `this replica read only the ${most} newest entries then.`;
}

function tile(label, value, detail, tone) {
  return h(
    "li",
    { class: tone },
    h("span", { class: "tile-label" }, label),
    h("span", { class: "tile-value" }, value),
    h("span", { class: "tile-detail" }, detail),
  );
}

function tiles(data) {
  const count = (state) => data.replicas.filter((r) => r.state === state).length;
  const up = count("up");
  const stale = count("stale");
  const db = data.database;
  const log = data.log;
  const policy = data.policy.active_version;
  const attested = data.runtimes.filter((r) => r.attestation_state === "verified").length;
  return [
    tile(
      "Replicas",
      `${up} up`,
      [stale && `${stale} stale`, count("stopped") && `${count("stopped")} stopped`]
        .filter(Boolean)
        .join(", ") || "none stale",
      stale ? "warn" : "good",
    ),
    tile(
      "Database",
      db.status,
      `${engineName(db.engine)} · ${db.round_trip_ms} ms round trip`,
      db.status === "ok" ? "good" : "bad",
    ),
    tile(
      "Log",
      `${fmt(log.size)} entries`,
      log.checkpoint_age_s === null
        ? "no checkpoint with entries yet"
        : `checkpoint ${duration(log.checkpoint_age_s)} old`,
      "",
    ),
    tile("Active executions", fmt(data.executions.active), "holding a lease now", ""),
    tile(
      "Policy version",
      policy ? h("code", {}, policy.slice(0, 12)) : "none",
      policy
        ? `activated ${ago(data.policy.activated_at_ms, data.now_ms)}`
        : "no policy is active: every request is denied",
      policy ? "good" : "warn",
    ),
    tile(
      "Runtimes",
      fmt(data.runtimes.length),
      `${attested} attested verified`,
      attested === data.runtimes.length ? "good" : "warn",
    ),
  ];
}

function replicaRow(r, now) {
  const last = r.last_minute || {};
  const counters = r.counters || {};
  return h(
    "tr",
    {},
    h(
      "th",
      { scope: "row" },
      h("code", {}, r.id),
      r.self ? h("span", { class: "muted" }, " (this one)") : null,
    ),
    h("td", {}, h("span", { class: `badge health-${r.state}` }, r.state)),
    h("td", {}, r.version),
    h("td", { title: formatTime(r.started_at_ms) }, ago(r.started_at_ms, now)),
    h("td", { title: formatTime(r.seen_at_ms) }, ago(r.seen_at_ms, now)),
    h("td", { class: "num" }, fmt(last.decisions)),
    h("td", { class: "num" }, millis(last.latency_p50_ms)),
    h("td", { class: "num" }, millis(last.latency_p99_ms)),
    h("td", { class: "num" }, fmt(counters.http_requests)),
  );
}

// One tbody per region and cluster, headed by a row naming them.
function renderRuntimes(view, data, now) {
  const active = data.policy.active_version;
  const head = h(
    "thead",
    {},
    h(
      "tr",
      {},
      ["Runtime", "State", "Attestation", "Last heartbeat", "Policy of last decision"].map((t) =>
        h("th", { scope: "col" }, t),
      ),
      h("th", { scope: "col", class: "num" }, "Decisions, last hour"),
    ),
  );
  const groups = new Map(); // the server sorts by region, cluster, id
  for (const r of data.runtimes) {
    const key = JSON.stringify([r.region, r.cluster]);
    if (!groups.has(key)) groups.set(key, { region: r.region, cluster: r.cluster, runtimes: [] });
    groups.get(key).runtimes.push(r);
  }
  const bodies = [...groups.values()].map((group) =>
    h(
      "tbody",
      {},
      h(
        "tr",
        {},
        h(
          "th",
          { scope: "rowgroup", colspan: "6" },
          `Region ${group.region}, cluster ${group.cluster}`,
        ),
      ),
      group.runtimes.map((r) => runtimeRow(r, active, now)),
    ),
  );
  const count = data.runtimes.length;
  view.runtimesNote.textContent = count
    ? `${plural(count, "runtime")}${data.runtimes_truncated ? " (the first ones only)" : ""}; ` +
      "the policy column is the version under which each one's newest decision was made."
    : "No runtime has been added yet.";
  view.runtimes.replaceChildren(head, ...bodies);
}

function runtimeRow(r, active, now) {
  const verified = r.attestation_state === "verified";
  const decided = r.last_decision;
  let policy = "no decision in the scanned log";
  if (decided) {
    const version = decided.policy_version;
    policy = version
      ? `${version.slice(0, 12)}${version === active ? " (active)" : " (not the active one)"}`
      : "none (denied without a policy)";
  }
  return h(
    "tr",
    { "data-runtime": r.id },
    h("th", { scope: "row" }, h("code", {}, r.id)),
    h(
      "td",
      {},
      h(
        "span",
        { class: `badge ${r.state === "active" ? "state-active" : "runtime-revoked"}` },
        r.state,
      ),
    ),
    h(
      "td",
      {},
      h(
        "span",
        { class: `badge ${verified ? "attest-verified" : "attest-other"}` },
        r.attestation_state,
      ),
      r.attestation_digests
        ? h("span", { class: "muted" }, ` ${r.attestation_digests} digests`)
        : null,
    ),
    h(
      "td",
      { title: r.last_heartbeat_ms ? formatTime(r.last_heartbeat_ms) : undefined },
      ago(r.last_heartbeat_ms, now),
    ),
    h("td", {}, policy),
    h("td", { class: "num" }, fmt(r.decisions_last_hour)),
  );
}

function renderCharts(holder, charts, history) {
  const xs = history.minutes.map((m) => m / 1000);
  for (const spec of CHARTS) {
    const data = [xs, ...spec.series.map(([, key]) => history[key])];
    let chart = charts.get(spec.id);
    if (!chart) {
      chart = makeChart(spec, data);
      holder.append(chart.figure);
      charts.set(spec.id, chart);
      chart.fit();
    } else {
      chart.plot.setData(data);
    }
    chart.summary.textContent = summary(spec, history);
  }
}

function makeChart(spec, data) {
  const plotId = `chart-${spec.id}`;
  const summaryId = `chart-${spec.id}-summary`;
  const box = h("div", {
    class: "chart-plot",
    id: plotId,
    role: "img",
    "aria-label": `${spec.title} over the last hour, per minute`,
    "aria-describedby": summaryId,
  });
  const summaryText = h("p", { class: "visually-hidden", id: summaryId });
  const figure = h(
    "figure",
    { class: "chart" },
    h("figcaption", {}, spec.title),
    box,
    summaryText,
    h("p", { class: "chart-note" }, spec.note),
  );
  const options = {
    width: 300,
    height: CHART_HEIGHT,
    scales: {
      x: { time: true, range: (u, min, max) => [min - 30, max + 30] }, // half a minute aside
      y: { range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.1)] },
    },
    series: [
      {
        label: "Time (UTC)",
        value: (u, v) => (v === null ? "–" : formatTime(v * 1000).slice(11, 16)),
      },
      ...spec.series.map(([label, , color, dashed], i) => ({
        label,
        stroke: color,
        width: 2,
        dash: dashed ? [6, 4] : undefined,
        ...drawing(spec, i, color),
        value: (u, v) => (v === null || v === undefined ? "–" : `${round(v)} ${spec.unit}`),
      })),
    ],
    axes: [
      { values: (u, ticks) => ticks.map((t) => formatTime(t * 1000).slice(11, 16)) },
      { size: 50, values: (u, ticks) => ticks.map((t) => round(t)) },
    ],
    cursor: { drag: { x: false, y: false } },
  };
  const plot = new window.uPlot(options, data, box);
  const fit = () => {
    const width = Math.max(200, Math.floor(box.clientWidth));
    if (width !== plot.width) plot.setSize({ width, height: CHART_HEIGHT });
  };
  return { figure, plot, summary: summaryText, fit };
}

// Bars for counts (several series side by side within their minute), lines otherwise.
function drawing(spec, index, color) {
  if (spec.draw === "lines") return { points: { show: true, size: 5, fill: color } };
  const count = spec.series.length;
  const align = count === 1 ? 0 : index === 0 ? -1 : 1;
  return {
    paths: window.uPlot.paths.bars({ size: [count === 1 ? 0.7 : 0.4, 24], align }),
    fill: color,
    width: 0, // no outline: a minute with none draws nothing
    points: { show: false },
  };
}

// What a screen reader hears instead of the picture: totals and the newest minute.
function summary(spec, history) {
  const parts = spec.series.map(([label, key]) => {
    const values = history[key];
    const latest = [...values].reverse().find((v) => v !== null && v !== undefined);
    const known = values.filter((v) => v !== null && v !== undefined);
    if (spec.unit === "ms" || spec.id === "active") {
      const shown = (v) => (v === undefined || v === null ? "none" : round(v));
      const peak = known.length ? Math.max(...known) : null;
      return `${label}: latest ${shown(latest)}, highest ${shown(peak)} ${spec.unit}`;
    }
    const total = known.reduce((a, b) => a + b, 0);
    return `${label}: ${total} in the hour, ${values.at(-1) ?? "unknown"} this minute`;
  });
  return `${spec.title}, last hour. ${parts.join("; ")}.`;
}

function plural(n, noun) {
  return `${fmt(n)} ${noun}${n === 1 ? "" : "s"}`;
}

function round(v) {
  return Math.abs(v) >= 10 ? Math.round(v) : Math.round(v * 100) / 100;
}

function fmt(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en");
}

function millis(v) {
  return v === null || v === undefined ? "–" : `${round(v)} ms`;
}

function duration(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h`;
}

function engineName(engine) {
  return engine === "postgresql" ? "PostgreSQL" : engine === "sqlite" ? "SQLite" : engine;
}
