// Proof viewer: verify a receipt, a tlog-proof, a log entry or an execution's
// transitions, and the consistency of two checkpoints, in the browser.
//
// The checking is tlog.js's (WebCrypto only); this module fetches public log
// data, draws the steps and the inclusion path, and never trusts the server's
// word for a result. It works signed out; signed in, it can list an
// execution's transitions. Links: #index=N and #execution=<id>.
import { ApiError, announce, api, h, shell } from "./common.js";
import {
  MAX_TREE_SIZE,
  Steps,
  TlogError,
  consistencyRoots,
  equalBytes,
  fromBase64,
  leafHash,
  openCheckpoint,
  parseDecimal,
  rootFromInclusion,
  toBase64,
  verifierKeyStep,
  verifyEntry,
} from "./tlog.js";

const SVG = "http://www.w3.org/2000/svg";
const MAX_FILE = 1 << 20;
const $ = (id) => document.getElementById(id);

let serverKey = null; // {vkey, origin} or {error}
let keyLoaded;
let run = 0; // the latest check; an older one that finishes later is dropped

// The key to check against: the one pasted, else the server's.
async function keyOptions() {
  const pasted = $("vkey").value.trim();
  if (pasted) return { vkey: pasted, pasted: true, keySource: "you gave it (Verifier key field)" };
  await keyLoaded;
  if (serverKey && serverKey.vkey) {
    return { vkey: serverKey.vkey, keySource: "this server publishes it (GET /v1/log/key)" };
  }
  const why = serverKey ? serverKey.error : "it was not fetched";
  return {
    vkey: null,
    keyError: `no verifier key: this server's key is unknown (${why}); paste the log's key`,
  };
}

async function loadServerKey() {
  try {
    const key = await api("/v1/log/key", { anonymous: true });
    serverKey = { vkey: key.vkey, origin: key.origin };
    $("server-key").textContent = key.vkey;
    $("server-origin").textContent = key.origin;
  } catch (e) {
    serverKey = { error: e.message };
    $("server-key").textContent = "(unavailable)";
    $("server-origin").textContent = `(${e.message})`;
  }
}

// Fetch from the API; a failure becomes a TlogError that says what was wanted.
async function fetchLog(path, what, options = {}) {
  try {
    return await api(path, options);
  } catch (e) {
    if (e instanceof ApiError) throw new TlogError(`could not fetch ${what}: ${e.message}`);
    throw e;
  }
}

function parseNumber(text, what, maximum = MAX_TREE_SIZE) {
  return parseDecimal(
    text.trim(),
    maximum,
    `${what} must be a whole number from 0 to ${maximum}, not ${JSON.stringify(text.trim().slice(0, 30))}`,
  );
}

async function latestCheckpoint() {
  return fetchLog("/v1/log/checkpoint", "the latest checkpoint", { anonymous: true });
}

// GET /v1/log/entries/{index}: the exact entry bytes, what the server says
// their leaf hash is and, for an admin or auditor, the private event and salt.
async function logEntry(index) {
  const entry = await fetchLog(`/v1/log/entries/${index}`, `entry ${index}`);
  return {
    entry: entry.entry,
    entryBytes: fromBase64(entry.data, "the log's entry data is not base64"),
    leafHash: entry.leaf_hash,
    event: entry.event,
    salt: entry.salt,
  };
}

// The entry at `index` from this log, for a tlog-proof that came without one.
async function loadLogEntry(index) {
  const latest = await latestCheckpoint();
  if (index >= BigInt(latest.size)) {
    throw new TlogError(
      `this log has ${latest.size} entries, so none at index ${index}: ` +
        "if the proof is from another log, give its entry",
    );
  }
  const description = `this log's entry ${index} (GET /v1/log/entries/${index})`;
  return { ...(await logEntry(index)), description };
}

// A log entry's proof, built from the public API.
async function loadByIndex(text) {
  const index = parseNumber(text, "A log index", MAX_TREE_SIZE - 1n);
  const latest = await latestCheckpoint();
  if (index >= BigInt(latest.size)) {
    throw new TlogError(
      `the log has ${latest.size} entries (indexes 0 to ${latest.size - 1}); there is no entry ${index}`,
    );
  }
  const entry = await logEntry(index);
  const proof = await fetchLog(
    `/v1/log/proof/inclusion?index=${index}&tree_size=${latest.size}`,
    `the inclusion proof of entry ${index}`,
    { anonymous: true },
  );
  return {
    ...entry,
    index,
    hashes: proof.hashes.map((b) => fromBase64(b, "the server's proof hash is not base64")),
    checkpoint: latest.checkpoint,
    entrySource: `GET /v1/log/entries/${index}`,
    description:
      `Entry ${index} from the public API: GET /v1/log/entries/${index}, the latest signed ` +
      `checkpoint (size ${latest.size}) and GET /v1/log/proof/inclusion to it.`,
  };
}

function resetVerdict() {
  const verdict = $("verdict");
  verdict.textContent = "Checking…";
  verdict.className = "verdict";
  delete verdict.dataset.ok;
}

// Verify and show the result; `what` names the input in the summary.
async function verify(source, what) {
  const mine = ++run;
  resetVerdict();
  const options = { ...(await keyOptions()), loadEntry: loadLogEntry };
  const result = await verifyEntry(source, options);
  if (mine !== run) return;
  showResult(result, what, options);
}

function failInput(message, what) {
  const load = async () => {
    throw new TlogError(message);
  };
  return verify({ load }, what);
}

function showResult(result, what, options) {
  const verdict = $("verdict");
  verdict.className = `verdict ${result.ok ? "pass" : "fail"}`;
  verdict.dataset.ok = String(result.ok);
  verdict.textContent = result.ok ? "Verified" : `Failed at step: ${result.failed.name}`;
  const hint = $("result-hint");
  if (result.ok) {
    const cp = result.checkpoint;
    hint.textContent =
      `${what}: entry ${result.index} is in the tree of ${cp.size} entries of ${cp.origin}, ` +
      `whose checkpoint is signed by the key ${options.pasted ? "you gave" : "this server publishes"}.`;
  } else {
    hint.textContent = `${what}: ${result.failed.message}`;
  }
  $("steps").replaceChildren(...result.steps.map(stepItem));
  drawTree($("tree"), result);
  announce(verdict.textContent);
  const box = $("result").getBoundingClientRect();
  if (box.top < 0 || box.top > window.innerHeight) $("result").scrollIntoView();
}

const STATUS = { passed: "passed", failed: "failed", "not-reached": "not reached" };

function stepItem(step) {
  return h(
    "li",
    { class: `proof-step ${step.status}`, "data-step": step.name, "data-status": step.status },
    h(
      "div",
      { class: "proof-step-head" },
      h("span", { class: "proof-step-name" }, step.name),
      h("span", { class: `badge proof-${step.status}` }, STATUS[step.status]),
    ),
    step.message
      ? h(
          "p",
          { class: `proof-step-message ${step.status === "failed" ? "fail" : ""}` },
          step.message,
        )
      : null,
    step.values.length
      ? h(
          "dl",
          {},
          step.values.map((v) => [
            h("dt", {}, v.label),
            h(
              "dd",
              {},
              v.kind === "pre"
                ? h("pre", {}, v.text)
                : h("span", { class: v.kind === "mono" ? "hash" : "" }, v.text),
            ),
          ]),
        )
      : null,
  );
}

// The inclusion path -------------------------------------------------------------

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children)
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function leaves({ first, last }) {
  return first === last ? `leaf ${first}` : `leaves ${first}–${last}`;
}

function short(hash) {
  return `${toBase64(hash).slice(0, 12)}…`;
}

const W = 520;
const ROW = 68;
const BOX = { w: 132, h: 40 };
const X = { left: 150, node: 305, right: 452 };

function node(x, y, kind, title, label, hash) {
  return svg(
    "g",
    { class: `node ${kind}` },
    svg("title", {}, `${title}: ${toBase64(hash)}`),
    svg("rect", { x: x - BOX.w / 2, y: y - BOX.h / 2, width: BOX.w, height: BOX.h, rx: 5 }),
    svg("text", { x, y: y - 4, "text-anchor": "middle", class: "range" }, label),
    svg("text", { x, y: y + 12, "text-anchor": "middle", class: "short" }, short(hash)),
  );
}

function edge(x1, y1, x2, y2) {
  return svg("line", { x1, y1: y1 - BOX.h / 2, x2, y2: y2 + BOX.h / 2, class: "edge" });
}

// Draw the leaf, each sibling on its side and each node computed from them, up
// to the root, one row per level: only the path, however big the tree. A node
// on the tree's right edge may climb levels with no sibling (RFC 6962's
// unbalanced right side): its edge then spans those levels.
function drawTree(figure, result) {
  const old = figure.querySelector("svg");
  if (old) old.remove();
  if (!result.path || !result.checkpoint) {
    figure.hidden = true;
    return;
  }
  const { path, checkpoint, index } = result;
  const rootOk = equalBytes(result.root, checkpoint.root);
  const top = path.length ? path[path.length - 1].parentLevel : 0;
  const y = (level) => 18 + BOX.h / 2 + (top - level) * ROW;
  const parts = [];
  for (let level = 0; level <= top; level++) {
    parts.push(svg("text", { x: 6, y: y(level) + 4, class: "level" }, `level ${level}`));
  }
  let at = 0;
  let covers = { first: index, last: index };
  let hash = result.leaf;
  const nodes = [];
  for (const p of path) {
    const sx = p.side === "left" ? X.left : X.right;
    parts.push(
      edge(X.node, y(at), X.node, y(p.parentLevel)),
      edge(sx, y(p.level), X.node, y(p.parentLevel)),
    );
    const [kind, title] = at === 0 ? ["leaf", `leaf ${index}`] : ["path", `level ${at} node`];
    const sibling = `sibling from the proof (${p.side})`;
    nodes.push(
      node(X.node, y(at), kind, title, leaves(covers), hash),
      node(sx, y(p.level), "sibling", sibling, leaves(p.sibling), p.hash),
    );
    covers = {
      first: p.node.first < p.sibling.first ? p.node.first : p.sibling.first,
      last: p.node.last > p.sibling.last ? p.node.last : p.sibling.last,
    };
    hash = p.parent;
    at = p.parentLevel;
  }
  const rootLabel = rootOk ? "root ✓" : "root ≠ checkpoint";
  nodes.push(
    node(X.node, y(top), rootOk ? "root ok" : "root bad", "computed root", rootLabel, result.root),
  );
  $("tree-caption").textContent =
    `Inclusion path of leaf ${index} in a tree of ${checkpoint.size} leaves, one row per level: ` +
    `only the path (blue) and the sibling hashes from the proof (grey) are drawn. A node on the ` +
    `tree's right edge climbs levels without a sibling.`;
  const height = 18 * 2 + BOX.h + top * ROW;
  const picture = svg(
    "svg",
    {
      viewBox: `0 0 ${W} ${height}`,
      role: "img",
      "aria-labelledby": "tree-caption",
      class: "tree-svg",
    },
    ...parts,
    ...nodes,
  );
  figure.prepend(picture);
  figure.hidden = false;
}

// Inputs ------------------------------------------------------------------------------

async function verifyPasted() {
  const text = $("receipt-text").value;
  await verify({ text, entryText: $("entry-text").value }, "The pasted proof");
}

async function verifyFile() {
  const file = $("receipt-file").files[0];
  if (!file) return;
  resetVerdict();
  if (file.size > MAX_FILE) {
    await failInput(
      `${file.name} is ${file.size} bytes; a receipt is far smaller (at most ${MAX_FILE})`,
      file.name,
    );
    return;
  }
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(await file.arrayBuffer());
  } catch {
    await failInput(`${file.name} is not UTF-8 text`, file.name);
    return;
  }
  $("receipt-text").value = text;
  await verify({ text, entryText: $("entry-text").value }, file.name);
}

async function verifyIndex(text) {
  $("log-index").value = text;
  const trimmed = text.trim();
  if (/^[0-9]+$/.test(trimmed)) history.replaceState(null, "", `#index=${trimmed}`);
  await verify({ load: () => loadByIndex(text) }, `Log entry ${trimmed}`);
}

async function loadExecution(id) {
  const list = $("transitions");
  $("execution-id").value = id;
  history.replaceState(null, "", `#execution=${encodeURIComponent(id)}`);
  list.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  let view;
  try {
    view = await api(`/v1/executions/${encodeURIComponent(id)}`);
  } catch (e) {
    list.replaceChildren(
      h(
        "p",
        { class: "error-text", role: "alert" },
        `Could not load execution ${id}: ${e.message}`,
      ),
    );
    return;
  }
  const rows = (view.transitions || []).map((t) =>
    h(
      "tr",
      {},
      h("td", {}, h("span", { class: `badge state-${t.state}` }, t.state)),
      h("td", {}, t.reason || ""),
      h("td", { class: "mono" }, t.log_index),
      h(
        "td",
        {},
        h(
          "button",
          {
            type: "button",
            class: "verify-transition",
            onclick: guarded(() => verifyIndex(String(t.log_index))),
          },
          `Verify entry ${t.log_index}`,
        ),
      ),
    ),
  );
  list.replaceChildren(
    h(
      "p",
      {},
      `Execution `,
      h("code", { class: "hash" }, id),
      ` has ${rows.length} transitions, each an entry in the log:`,
    ),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", {}, "State"),
            h("th", {}, "Reason"),
            h("th", {}, "Log index"),
            h("th", {}, h("span", { class: "visually-hidden" }, "Verify")),
          ),
        ),
        h("tbody", {}, rows),
      ),
    ),
  );
}

// Consistency ---------------------------------------------------------------------------

function withNewline(text) {
  return text.endsWith("\n") ? text : `${text}\n`;
}

// The root of the first `size` leaves, computed from the log's data: entry size-1
// and its inclusion proof in the tree of that size. Nothing signs it.
async function computedTree(size) {
  const last = size - 1n;
  const entry = await fetchLog(`/v1/log/entries/${last}`, `entry ${last}`, { anonymous: true });
  const proof = await fetchLog(
    `/v1/log/proof/inclusion?index=${last}&tree_size=${size}`,
    `the inclusion proof of entry ${last} in a tree of ${size}`,
    { anonymous: true },
  );
  const leaf = await leafHash(fromBase64(entry.data, "the log's entry data is not base64"));
  const hashes = proof.hashes.map((b) => fromBase64(b, "the server's proof hash is not base64"));
  const { root } = await rootFromInclusion(last, size, leaf, hashes);
  return {
    size,
    root,
    signed: false,
    source: `computed from entry ${last} and its inclusion proof in a tree of ${size}; not signed`,
  };
}

async function signedTree(note, key, source) {
  const { checkpoint } = await openCheckpoint(withNewline(note), key);
  return { size: checkpoint.size, root: checkpoint.root, signed: true, source };
}

function describeTree(step, tree) {
  step.value("Tree size", tree.size, "text");
  step.value("Root", toBase64(tree.root));
  step.value("Source", tree.source, "text");
}

async function newerTree(step, key) {
  const pasted = $("newer-checkpoint").value;
  let tree;
  if (pasted.trim()) {
    tree = await signedTree(pasted, key, "the checkpoint you pasted, signature verified");
  } else {
    const latest = await latestCheckpoint();
    const latestTree = await signedTree(
      latest.checkpoint,
      key,
      "the latest checkpoint, signature verified",
    );
    const typed = $("newer-size").value.trim();
    const size = typed ? parseNumber(typed, "The newer tree size") : latestTree.size;
    if (size > latestTree.size)
      throw new TlogError(`the log has only ${latestTree.size} entries, fewer than ${size}`);
    if (size === 0n) throw new TlogError("the newer tree cannot be empty");
    tree = size === latestTree.size ? latestTree : await computedTree(size);
  }
  describeTree(step, tree);
  step.message = tree.signed
    ? "A signed checkpoint."
    : "Not signed: no signed checkpoint of this size is at hand.";
  return tree;
}

function checkOlderSize(size, newer) {
  if (size === 0n) {
    throw new TlogError("the empty tree is a prefix of every tree: there is no proof to check");
  }
  if (size > newer.size) {
    throw new TlogError(`the older tree (${size}) is larger than the newer one (${newer.size})`);
  }
}

async function olderTree(step, key, newer) {
  const pasted = $("older-checkpoint").value;
  let tree;
  if (pasted.trim()) {
    tree = await signedTree(pasted, key, "the checkpoint you pasted, signature verified");
    checkOlderSize(tree.size, newer);
  } else {
    const typed = $("older-size").value.trim();
    if (!typed) throw new TlogError("give the older tree size, or paste its checkpoint");
    const size = parseNumber(typed, "The older tree size");
    checkOlderSize(size, newer);
    tree = await computedTree(size);
  }
  describeTree(step, tree);
  step.message = tree.signed
    ? "A signed checkpoint."
    : "Not signed: the API signs checkpoints of the latest size only; " +
      "paste an older signed checkpoint to check one.";
  return tree;
}

async function consistencyStep(step, older, newer) {
  let hashes = [];
  if (older.size !== newer.size) {
    const reply = await fetchLog(
      `/v1/log/proof/consistency?first=${older.size}&second=${newer.size}`,
      "the consistency proof",
      { anonymous: true },
    );
    hashes = reply.hashes.map((b) => fromBase64(b, "the server's proof hash is not base64"));
  }
  hashes.forEach((hash, i) => step.value(`Proof hash ${i + 1}`, toBase64(hash)));
  const roots = await consistencyRoots(older.size, newer.size, older.root, hashes);
  step.value("Older root, from the proof", toBase64(roots.first));
  step.value("Newer root, from the proof", toBase64(roots.second));
  step.message = `RFC 6962 consistency proof from size ${older.size} to size ${newer.size}: ${hashes.length} hashes.`;
  return roots;
}

function sameRoot(step, computed, tree, which) {
  step.value("From the proof", toBase64(computed));
  step.value(`The ${which} tree's root`, toBase64(tree.root));
  if (!equalBytes(computed, tree.root))
    throw new TlogError(`the proof does not reproduce the ${which} root`);
  step.message = `The proof reproduces the ${which} root.`;
}

async function checkConsistency() {
  const verdict = $("consistency-verdict");
  verdict.className = "verdict";
  delete verdict.dataset.ok;
  verdict.textContent = "Checking…";
  $("consistency-hint").textContent = "";
  const steps = new Steps();
  const options = await keyOptions();
  const key = await steps.run("Verifier key", (step) => verifierKeyStep(step, options));
  const newer = await steps.run("Newer tree", (step) => newerTree(step, key));
  const older = await steps.run("Older tree", (step) => olderTree(step, key, newer));
  const roots = await steps.run("Consistency proof", (step) => consistencyStep(step, older, newer));
  await steps.run("Older root", (step) => sameRoot(step, roots.first, older, "older"));
  await steps.run("Newer root", (step) => sameRoot(step, roots.second, newer, "newer"));
  verdict.className = `verdict ${steps.ok ? "pass" : "fail"}`;
  verdict.dataset.ok = String(steps.ok);
  verdict.textContent = steps.ok ? "Consistent" : `Failed at step: ${steps.failed.name}`;
  const hint = $("consistency-hint");
  if (steps.ok) {
    const unsigned = [older, newer].filter((t) => !t.signed).map((t) => `size ${t.size}`);
    hint.textContent =
      `The tree of ${older.size} entries is a prefix of the tree of ${newer.size}.` +
      (unsigned.length
        ? ` Not signed: the root of ${unsigned.join(" and ")}, computed from the log's own data.`
        : " Both checkpoints are signed.");
  } else {
    hint.textContent = steps.failed.message;
  }
  $("consistency-steps").replaceChildren(...steps.list.map(stepItem));
  announce(verdict.textContent);
}

// Wiring ----------------------------------------------------------------------------------

// Run an input's handler; anything unexpected is shown, never thrown.
function guarded(handler, verdictId = "verdict") {
  return async (event) => {
    if (event) event.preventDefault();
    try {
      await handler();
    } catch (e) {
      const verdict = $(verdictId);
      verdict.className = "verdict fail";
      verdict.dataset.ok = "false";
      verdict.textContent = `Could not check: ${e.message}`;
    }
  };
}

function followHash(me) {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.has("index")) {
    guarded(() => verifyIndex(params.get("index")))();
  } else if (params.has("execution")) {
    const id = params.get("execution");
    if (me) {
      guarded(() => loadExecution(id), "transitions")();
    } else {
      $("transitions").replaceChildren(
        h("p", { class: "notice" }, `Sign in to see the transitions of execution ${id}.`),
      );
    }
  }
}

async function main() {
  const me = await shell();
  if (!globalThis.crypto || !globalThis.crypto.subtle) {
    const warning = $("crypto-warning");
    warning.textContent =
      "This browser offers WebCrypto only to secure pages (HTTPS or localhost): open the console over HTTPS to check proofs here.";
    warning.hidden = false;
  }
  keyLoaded = loadServerKey();
  $("receipt-form").addEventListener("submit", guarded(verifyPasted));
  $("receipt-file").addEventListener("change", guarded(verifyFile));
  $("index-form").addEventListener(
    "submit",
    guarded(() => verifyIndex($("log-index").value)),
  );
  $("consistency-form").addEventListener(
    "submit",
    guarded(checkConsistency, "consistency-verdict"),
  );
  if (me) {
    $("execution-signed-out").hidden = true;
    $("execution-form").hidden = false;
    $("execution-form").addEventListener(
      "submit",
      guarded(() => loadExecution($("execution-id").value.trim()), "transitions"),
    );
  }
  window.addEventListener("hashchange", () => followHash(me));
  followHash(me);
}

main().catch((e) => {
  $("verdict").className = "verdict fail";
  $("verdict").textContent = `The proof viewer could not start: ${e.message}`;
});
