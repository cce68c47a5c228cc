// What every console page shares: the header and sign-in, API calls with the
// signed-in credential, the live events stream, and a safe DOM builder.
//
// The credential lives in sessionStorage (this tab only, gone when it closes)
// and travels as a bearer token, exactly as any API client sends it. The
// console has no powers of its own: the server checks every call's role.

const KEY = "lictor.credential";
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;
const NAV = [
  ["", "Governance"],
  ["tools", "Tools"],
  ["lineage", "Lineage"],
  ["proof", "Proof viewer"],
  ["health", "Health"],
  ["demo", "Demo"],
];

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function credential() {
  return sessionStorage.getItem(KEY);
}

export function authHeaders() {
  const secret = credential();
  return secret ? { Authorization: `Bearer ${secret}` } : {};
}

// Call the API: the parsed JSON reply, or an ApiError with the server's code.
export async function api(path, { method = "GET", body, signal, anonymous = false } = {}) {
  const headers = anonymous ? {} : authHeaders();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let reply;
  try {
    reply = await fetch(path, {
      method,
      headers,
      signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "unavailable", `the control plane cannot be reached (${e.message})`);
  }
  const text = await reply.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!reply.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(reply.status, error.code || "http_error", error.message || reply.statusText);
  }
  return data;
}

// Build an element: h("a", {href: "#", class: "x"}, "text", child). Strings
// become text nodes, never markup, so data from the log cannot inject HTML.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Say something to screen readers (and show it in the status line).
export function announce(message) {
  const status = document.getElementById("status");
  if (status) status.textContent = message;
}

export function formatTime(ms) {
  if (ms === null || ms === undefined) return "";
  return new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

export function ago(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

export function ref(entity) {
  if (!entity) return "";
  return typeof entity === "string" ? entity : `${entity.type}::"${entity.id}"`;
}

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}` }, state);
}

// The signed-in credential's name and role, or null (signed out or refused).
let who;
export async function whoAmI() {
  if (who !== undefined) return who;
  if (!credential()) return (who = null);
  try {
    who = await api("/v1/session");
  } catch (e) {
    if (e.status === 401) sessionStorage.removeItem(KEY);
    who = null;
  }
  return who;
}

// Draw the header (navigation, sign-in) and resolve to who is signed in.
export async function shell() {
  const page = document.body.dataset.page;
  const top = document.getElementById("top");
  const nav = h(
    "nav",
    { "aria-label": "Console pages" },
    h(
      "ul",
      {},
      NAV.map(([path, label]) =>
        h(
          "li",
          {},
          h(
            "a",
            { href: `/console/${path}`, "aria-current": path === page ? "page" : undefined },
            label,
          ),
        ),
      ),
    ),
  );
  const account = h("div", { class: "account" });
  top.replaceChildren(h("a", { class: "brand", href: "/console/" }, "Lictor"), nav, account);
  const me = await whoAmI();
  if (me) {
    account.append(
      h("span", { class: "who", id: "who" }, `${me.name} (${me.role})`),
      h("button", { type: "button", id: "sign-out", onclick: signOut }, "Sign out"),
    );
  } else {
    account.append(signInForm());
  }
  document.body.dataset.role = me ? me.role : "anonymous";
  return me;
}

function signInForm() {
  const input = h("input", {
    id: "credential",
    name: "credential",
    type: "password",
    autocomplete: "off",
    required: true,
    spellcheck: "false",
  });
  const error = h("span", { class: "error", id: "sign-in-error", role: "alert" });
  const form = h(
    "form",
    { class: "sign-in", id: "sign-in" },
    h("label", { for: "credential" }, "Credential"),
    input,
    h("button", { type: "submit" }, "Sign in"),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    who = undefined;
    if (await whoAmI()) {
      location.reload();
    } else {
      sessionStorage.removeItem(KEY);
      error.textContent = "That credential was not accepted.";
      input.focus();
    }
  });
  return form;
}

function signOut() {
  sessionStorage.removeItem(KEY);
  location.reload();
}

// Ask to sign in, in place of a page's content that needs a credential.
export function needSignIn(container, what) {
  container.replaceChildren(
    h(
      "p",
      { class: "notice", id: "need-sign-in" },
      `Sign in with a credential to see ${what}. `,
      "The ",
      h("a", { href: "/console/proof" }, "proof viewer"),
      " works without one.",
    ),
  );
}

// The log's size now: subscribe after its last entry to see only what is new.
export async function logSize() {
  const checkpoint = await api("/v1/log/checkpoint", { anonymous: true });
  return checkpoint.size;
}

// Follow every log entry after the log size a page read before listing
// (`size`, a promise of it or null: read it now), showing the stream's state
// in the element `live`. onEvent as for watchEvents.
export async function followLog(live, size, onEvent) {
  let after;
  try {
    after = ((await size) ?? (await logSize())) - 1;
  } catch (e) {
    live.textContent = `not live: ${e.message}`;
    return;
  }
  watchEvents({}, after, onEvent, (state, detail) => {
    live.className = `live ${state === "live" ? "on" : "off"}`;
    live.textContent = state === "live" ? "live" : `${state}${detail ? `: ${detail}` : ""}`;
  });
}

// Follow /v1/events: onEvent({index, kind, entry}) for each entry after
// `after` (a log index; -1 for all). Reconnects with the last index seen, so
// nothing is missed, after 1 s, doubling to 30 s while it keeps failing. onState("live" | "reconnecting" | "closed", detail).
// Returns a function that stops it.
export function watchEvents(filters, after, onEvent, onState = () => {}) {
  const control = new AbortController();
  let last = after;
  const read = async () => {
    const query = new URLSearchParams(
      Object.entries(filters).filter(([, value]) => value !== undefined && value !== ""),
    );
    if (last >= 0) query.set("after", String(last)); // -1: from the first entry
    const reply = await fetch(`/v1/events?${query}`, {
      headers: authHeaders(),
      signal: control.signal,
    });
    if (reply.status === 401 || reply.status === 403) {
      onState("closed", `the events stream refused this credential (${reply.status})`);
      return false;
    }
    if (!reply.ok) throw new Error(`events stream answered ${reply.status}`);
    onState("live");
    const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return true;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const fields = {};
        for (const line of block.split("\n")) {
          const colon = line.indexOf(":");
          if (colon <= 0) continue;
          fields[line.slice(0, colon)] = line.slice(colon + 1).replace(/^ /, "");
        }
        if (fields.data === undefined || fields.id === undefined) continue;
        last = Number(fields.id);
        onEvent({ index: last, kind: fields.event, entry: JSON.parse(fields.data) });
      }
    }
  };
  (async () => {
    let pause = RETRY_FIRST_MS;
    while (!control.signal.aborted) {
      const began = Date.now();
      try {
        if (!(await read())) return;
      } catch (e) {
        if (control.signal.aborted) return;
        onState("reconnecting", e.message);
      }
      // a stream that stayed up starts over; failing ones back off, with jitter
      pause = Date.now() - began > RETRY_MAX_MS ? RETRY_FIRST_MS : Math.min(pause * 2, RETRY_MAX_MS);
      await new Promise((resolve) => setTimeout(resolve, pause / 2 + Math.random() * (pause / 2)));
    }
  })();
  return () => control.abort();
}
