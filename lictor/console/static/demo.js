// Runtime governance demo: play and stop the built-in scenario, watch each
// step with the promise it shows, and the log entries it writes as they commit.
import { announce, api, formatTime, h, logSize, needSignIn, shell, watchEvents } from "./common.js";

const FOLLOW_MS = 1000;
const FEED_SIZE = 60;
const STATUS_TEXT = {
  pending: "waiting",
  running: "running…",
  ok: "held",
  failed: "FAILED",
  stopped: "stopped",
};

const content = document.getElementById("content");

function build(me) {
  const admin = me.role === "admin";
  const play = h("button", { type: "button", class: "primary", id: "demo-start", disabled: !admin }, "Play the scenario");
  const stop = h("button", { type: "button", id: "demo-stop", disabled: true }, "Stop");
  const state = h("p", { id: "demo-state", "aria-live": "polite" }, "Loading…");
  const steps = h("ol", { id: "demo-steps", class: "steps" });
  const feed = h("ol", { id: "demo-feed", class: "feed", reversed: true });
  const live = h("span", { class: "live off", id: "live" }, "connecting");
  content.replaceChildren(
    h(
      "section",
      { class: "panel", "aria-labelledby": "scenario-title" },
      h("h2", { id: "scenario-title" }, "The scenario"),
      h(
        "p",
        {},
        "Three runtimes in three regions run agents that spawn sub-agents, doing short, harmless " +
          "subprocess work through lictor run and the SDK. Each step shows one promise of the " +
          "control plane, checked against what really happened and then against the log.",
      ),
      h("div", { class: "actions-row" }, play, " ", stop),
      admin ? null : h("p", { class: "muted", id: "read-only" }, "Read-only: only an admin may play or stop it."),
      state,
    ),
    h(
      "div",
      { class: "layout" },
      h("section", { class: "panel", "aria-labelledby": "steps-title" }, h("h2", { id: "steps-title" }, "Steps"), steps),
      h(
        "section",
        { class: "panel", "aria-labelledby": "feed-title" },
        h("h2", { id: "feed-title" }, "The log, as it commits ", live),
        feed,
      ),
    ),
  );
  const view = { play, stop, state, steps, admin, timer: null };
  play.addEventListener("click", () => command(view, "start"));
  stop.addEventListener("click", () => command(view, "stop"));
  refresh(view);
  follow(feed, live);
}

async function command(view, what) {
  view.play.disabled = view.stop.disabled = true;
  try {
    show(view, await api(`/v1/demo/${what}`, { method: "POST" }));
    announce(what === "start" ? "The scenario started." : "The scenario stopped.");
  } catch (e) {
    view.state.textContent = `${e.code || "error"}: ${e.message}`;
  }
  schedule(view);
}

async function refresh(view) {
  try {
    const status = await api("/v1/demo");
    if (!status.enabled) {
      view.state.replaceChildren(
        "This control plane has no demo scenario: it was not started by ",
        h("code", {}, "lictor demo"),
        ". Run ",
        h("code", {}, "lictor demo"),
        " to play it here.",
      );
      view.play.disabled = view.stop.disabled = true;
      return;
    }
    show(view, status);
  } catch (e) {
    view.state.textContent = `Could not read the scenario: ${e.message}`;
  }
  schedule(view);
}

function schedule(view) {
  clearTimeout(view.timer);
  if (view.running) view.timer = setTimeout(() => refresh(view), FOLLOW_MS);
}

function show(view, status) {
  const wasRunning = view.running;
  view.running = status.state === "running";
  view.play.disabled = !view.admin || view.running;
  view.stop.disabled = !view.admin || !view.running;
  const when = status.started_at_ms ? ` (run ${status.runs}, started ${formatTime(status.started_at_ms)})` : "";
  const verdict =
    status.held === true ? "every promise held" : status.held === false ? "a promise FAILED" : "";
  view.state.dataset.state = status.state;
  view.state.textContent =
    {
      idle: "Not played yet.",
      running: `Playing${when}.`,
      finished: `Finished${when}: ${verdict}.`,
      stopped: `Stopped${when}.`,
      failed: `The scenario failed to run${when}.`,
    }[status.state] || status.state;
  view.steps.replaceChildren(...status.steps.map(stepItem));
  if (wasRunning && !view.running) announce(view.state.textContent);
}

function stepItem(step) {
  return h(
    "li",
    { class: `step step-${step.status}`, "data-step": step.name, "data-status": step.status },
    h("div", { class: "step-head" }, h("strong", {}, step.name), " ", h("span", { class: `badge status-${step.status}` }, STATUS_TEXT[step.status] || step.status)),
    h("div", { class: "promise" }, "Promise: ", step.promise),
    step.detail ? h("div", { class: "detail" }, step.detail) : null,
    step.cited && step.cited.length
      ? h(
          "div",
          { class: "cited" },
          "Log entries: ",
          step.cited.map((index, i) => [i ? ", " : "", h("a", { href: `/console/proof#index=${index}` }, String(index))]),
        )
      : null,
  );
}

async function follow(feed, live) {
  let after;
  try {
    after = Math.max(-1, (await logSize()) - FEED_SIZE - 1);
  } catch (e) {
    live.textContent = `not live: ${e.message}`;
    return;
  }
  watchEvents(
    {},
    after,
    ({ index, entry }) => {
      feed.prepend(feedItem(index, entry));
      while (feed.children.length > FEED_SIZE) feed.lastChild.remove();
    },
    (state, detail) => {
      live.className = `live ${state === "live" ? "on" : "off"}`;
      live.textContent = state === "live" ? "live" : `${state}${detail ? `: ${detail}` : ""}`;
    },
  );
}

function feedItem(index, entry) {
  const what =
    entry.kind === "execution"
      ? [
          h("a", { href: `/console/lineage#execution=${encodeURIComponent(entry.execution)}` }, entry.execution),
          " ",
          h("span", { class: `badge state-${entry.state}` }, entry.state),
          entry.runtime ? ` on ${entry.runtime}` : "",
        ]
      : [entry.kind, entry.state ? ` ${entry.state}` : ""];
  return h(
    "li",
    { value: String(index), "data-index": String(index) },
    h("a", { href: `/console/proof#index=${index}`, class: "mono" }, `#${index}`),
    " ",
    h("span", { class: "muted" }, (entry.time || "").slice(11, 23)),
    " ",
    what,
  );
}

const me = await shell();
if (me) build(me);
else needSignIn(content, "the demo scenario");
