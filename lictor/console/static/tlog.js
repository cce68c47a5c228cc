// Verifying the log in the browser: RFC 6962 Merkle proofs, C2SP signed notes,
// checkpoints and tlog-proofs, Lictor receipts and salted commitments, with
// WebCrypto's SHA-256 and Ed25519. No DOM and no network: a caller that needs
// an entry from a log passes `loadEntry`.
//
// The rules are those of lictor/log (merkle.py, note.py, checkpoint.py,
// proof.py, commitment.py) and lictor/receipt.py, so the browser accepts
// exactly what `lictor log verify` accepts. Indexes and tree sizes are BigInts:
// a tree may hold up to 2**63 - 1 leaves, beyond a double's exact integers.
// Every failure is a TlogError with a message fit to show a person.

export class TlogError extends Error {}

export const HASH_SIZE = 32;
export const MAX_TREE_SIZE = (1n << 63n) - 1n;
export const MAX_INDEX = (1n << 64n) - 1n;
export const MAX_ENTRY_SIZE = 65535;
export const MAX_PROOF_HASHES = 63;
export const MAX_SIGNATURES = 100;
export const TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1";
const ED25519 = 0x01;
const SIG_PREFIX = "\u2014 "; // an em dash and a space

// Encodings -----------------------------------------------------------------

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

// Standard padded base64 (RFC 4648 §4) to bytes, or a TlogError(message).
export function fromBase64(text, message = "not base64") {
  if (typeof text !== "string" || !BASE64.test(text)) throw new TlogError(message);
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export function toBase64(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function utf8(text) {
  return new TextEncoder().encode(text);
}

// Bytes as UTF-8 text, or a TlogError.
export function fromUtf8(bytes, what = "text") {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new TlogError(`${what} is not UTF-8`);
  }
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function equalBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// "0" or [1-9][0-9]* no larger than `maximum`, as a BigInt; else TlogError(message).
export function parseDecimal(text, maximum, message) {
  const canonical = /^(0|[1-9][0-9]*)$/.test(text);
  if (!canonical || text.length > String(maximum).length || BigInt(text) > maximum) {
    throw new TlogError(message);
  }
  return BigInt(text);
}

// A value in a message: short, whatever it is.
export function brief(value) {
  if (value === undefined || value === null) return "(missing)";
  if (Number.isSafeInteger(value) || typeof value === "bigint") return String(value);
  const text = typeof value === "string" ? JSON.stringify(value) : `(a ${typeof value})`;
  return text.length > 40 ? `${text.slice(0, 37)}…` : text;
}

// RFC 8785 (JCS): the canonical JSON text of a value parsed by JSON.parse.
// Keys sort by UTF-16 code units (JavaScript's default order); numbers and
// strings are written as JSON.stringify writes them, which is what RFC 8785
// specifies; lone surrogates are refused, as RFC 8785 requires.
export function canonicalJson(value) {
  if (value === null || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TlogError("JSON numbers must be finite");
    return JSON.stringify(value);
  }
  if (typeof value === "string") return canonicalString(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${canonicalString(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  throw new TlogError(`a ${typeof value} is not JSON`);
}

function canonicalString(text) {
  if (!text.isWellFormed()) throw new TlogError("a string holds a lone surrogate");
  return JSON.stringify(text);
}

// The canonical bytes of an entry object (lictor.log.entry.canonical_entry).
export function canonicalEntry(entry) {
  if (!isObject(entry)) throw new TlogError("an entry must be a JSON object");
  let bytes;
  try {
    bytes = utf8(canonicalJson(entry));
  } catch (e) {
    throw new TlogError(`entry cannot be canonicalized: ${e.message}`);
  }
  if (bytes.length > MAX_ENTRY_SIZE) {
    throw new TlogError(`entry is ${bytes.length} bytes; the limit is ${MAX_ENTRY_SIZE}`);
  }
  return bytes;
}

export function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// Hashes ----------------------------------------------------------------------

function subtle() {
  if (!globalThis.crypto || !globalThis.crypto.subtle) {
    throw new TlogError(
      "this browser offers WebCrypto only to secure pages (HTTPS or localhost), so nothing can be checked here",
    );
  }
  return globalThis.crypto.subtle;
}

export async function sha256(bytes) {
  return new Uint8Array(await subtle().digest("SHA-256", bytes));
}

// RFC 6962 leaf hash: SHA-256(0x00 || entry).
export async function leafHash(entry) {
  return sha256(concat(Uint8Array.of(0), entry));
}

// RFC 6962 interior node: SHA-256(0x01 || left || right).
export async function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

function checkHash(h, what = "hash") {
  if (!(h instanceof Uint8Array) || h.length !== HASH_SIZE) {
    throw new TlogError(`${what} is ${h ? h.length : 0} bytes, not ${HASH_SIZE}`);
  }
}

function checkSize(size, what = "tree size") {
  if (typeof size !== "bigint" || size < 0n || size > MAX_TREE_SIZE) {
    throw new TlogError(`${what} ${brief(size)} is out of range 0..${MAX_TREE_SIZE}`);
  }
}

function trailingZeros(n) {
  let count = 0;
  while (n > 0n && (n & 1n) === 0n) {
    n >>= 1n;
    count++;
  }
  return count;
}

// The leaves under node `n` of height `level` in a tree of `size` leaves.
function span(n, level, size) {
  const first = n << BigInt(level);
  const end = (n + 1n) << BigInt(level);
  return { first, last: (end < size ? end : size) - 1n };
}

// RFC 9162 §2.1.3.2: the root an inclusion proof leads to, and the path it took,
// one element per proof hash: {side, level, node, sibling, hash, parent,
// parentLevel}, where side says whether the sibling is the left or the right
// child, level is the height at which they meet (a right-edge node may climb
// levels alone first) and node/sibling are the leaves each covers.
export async function rootFromInclusion(index, size, leaf, proof) {
  checkSize(size);
  if (typeof index !== "bigint" || index < 0n || index >= size) {
    throw new TlogError(`index ${brief(index)} out of range for tree size ${size}`);
  }
  checkHash(leaf, "leaf hash");
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  let level = 0;
  const path = [];
  for (const p of proof) {
    checkHash(p, "proof hash");
    if (sn === 0n) throw new TlogError("inclusion proof is too long");
    let step;
    if ((fn & 1n) === 1n || fn === sn) {
      const climb = (fn & 1n) === 1n ? 0 : trailingZeros(fn);
      const at = level + climb;
      const n = fn >> BigInt(climb);
      step = { side: "left", level: at, node: span(n, at, size), sibling: span(n - 1n, at, size) };
      r = await nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
        level++;
      }
    } else {
      step = {
        side: "right",
        level,
        node: span(fn, level, size),
        sibling: span(fn + 1n, level, size),
      };
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
    level++;
    path.push({ ...step, hash: p, parent: r, parentLevel: level });
  }
  if (sn !== 0n) throw new TlogError("inclusion proof is too short");
  return { root: r, path };
}

export async function verifyInclusion(index, size, leaf, proof, root) {
  checkHash(root, "root");
  const { root: computed } = await rootFromInclusion(index, size, leaf, proof);
  if (!equalBytes(computed, root)) throw new TlogError("inclusion proof does not lead to the root");
}

// RFC 9162 §2.1.4.2, the computing half: the two roots a consistency proof
// leads to, given the first tree's root (which it needs when `first` is a power
// of two). Malformed proofs raise; comparing the roots is the caller's.
// As lictor.log.merkle: no proof from the empty tree; equal sizes take an
// empty proof (both roots are then `firstRoot`).
export async function consistencyRoots(first, second, firstRoot, proof) {
  checkSize(first, "first size");
  checkSize(second, "second size");
  checkHash(firstRoot, "first root");
  for (const p of proof) checkHash(p, "proof hash");
  if (first > second)
    throw new TlogError(`first size ${first} is larger than second size ${second}`);
  if (first === 0n) throw new TlogError("no consistency proof from the empty tree");
  if (first === second) {
    if (proof.length) throw new TlogError("proof between equal sizes must be empty");
    return { first: firstRoot, second: firstRoot };
  }
  if (!proof.length) throw new TlogError("consistency proof is empty");
  const path = (first & (first - 1n)) === 0n ? [firstRoot, ...proof] : [...proof];
  let fn = first - 1n;
  let sn = second - 1n;
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) throw new TlogError("consistency proof is too long");
    if ((fn & 1n) === 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new TlogError("consistency proof is too short");
  return { first: fr, second: sr };
}

export async function verifyConsistency(first, second, firstRoot, secondRoot, proof) {
  checkHash(secondRoot, "second root");
  const roots = await consistencyRoots(first, second, firstRoot, proof);
  if (first === second && !equalBytes(firstRoot, secondRoot)) {
    throw new TlogError("roots differ for the same tree size");
  }
  if (!equalBytes(roots.first, firstRoot)) {
    throw new TlogError("consistency proof does not lead to the first root");
  }
  if (!equalBytes(roots.second, secondRoot)) {
    throw new TlogError("consistency proof does not lead to the second root");
  }
}

// Signed notes, keys and checkpoints ------------------------------------------

const CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/;

export function isValidKeyName(name) {
  return name.length > 0 && !/[+\s\p{C}\p{Z}]/u.test(name);
}

// c2sp.org/signed-note: {text, signatures: [{name, keyId, signature}]}; nothing
// is verified. The text ends at the last blank line and keeps its newline.
export function parseNote(note) {
  if (typeof note !== "string" || !note.isWellFormed())
    throw new TlogError("note is not valid UTF-8");
  if (CONTROL.test(note)) throw new TlogError("note has a control character");
  const split = note.lastIndexOf("\n\n");
  if (split < 0) throw new TlogError("note has no signature block");
  const text = note.slice(0, split + 1);
  const block = note.slice(split + 2);
  if (!block.endsWith("\n")) throw new TlogError("signature block must end with a newline");
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) {
    throw new TlogError(`note has more than ${MAX_SIGNATURES} signatures`);
  }
  return { text, signatures: lines.map(parseSignatureLine) };
}

function parseSignatureLine(line) {
  if (!line.startsWith(SIG_PREFIX)) throw new TlogError("signature line must start with '— '");
  const rest = line.slice(SIG_PREFIX.length);
  const space = rest.indexOf(" ");
  const name = space < 0 ? rest : rest.slice(0, space);
  const b64 = space < 0 ? "" : rest.slice(space + 1);
  if (space < 0 || !isValidKeyName(name) || !b64) throw new TlogError("malformed signature line");
  const blob = fromBase64(b64, "signature is not base64");
  if (blob.length < 5) throw new TlogError("signature is too short");
  const keyId = new DataView(blob.buffer).getUint32(0);
  return { name, keyId, signature: blob.slice(4), line };
}

export function keyIdHex(keyId) {
  return keyId.toString(16).padStart(8, "0");
}

// The name-bound key id: SHA-256(name || 0x0A || type || key)[:4], big-endian.
export async function computeKeyId(name, type, publicKey) {
  const digest = await sha256(concat(utf8(name), Uint8Array.of(0x0a, type), publicKey));
  return new DataView(digest.buffer).getUint32(0);
}

// An Ed25519 verifier key, `<name>+<hex8 key id>+<base64(0x01 || key)>`:
// {vkey, name, keyId, publicKey, computedKeyId}.
export async function parseVerifierKey(vkey) {
  const text = typeof vkey === "string" ? vkey.trim() : "";
  const first = text.indexOf("+");
  const second = text.indexOf("+", first + 1);
  if (first < 0 || second < 0) {
    throw new TlogError("a verifier key has the form name+keyid+base64key");
  }
  const name = text.slice(0, first);
  const hexId = text.slice(first + 1, second);
  if (!isValidKeyName(name)) throw new TlogError(`invalid key name ${brief(name)}`);
  if (!/^[0-9a-f]{8}$/.test(hexId)) throw new TlogError("key id must be 8 lowercase hex digits");
  const blob = fromBase64(text.slice(second + 1), "key is not base64");
  if (!blob.length) throw new TlogError("empty key");
  if (blob[0] !== ED25519) {
    throw new TlogError(
      `key type 0x${blob[0].toString(16).padStart(2, "0")} is not Ed25519 (0x01), the only type this viewer checks`,
    );
  }
  const publicKey = blob.slice(1);
  if (publicKey.length !== 32) throw new TlogError("Ed25519 public key must be 32 bytes");
  const keyId = parseInt(hexId, 16);
  const computedKeyId = await computeKeyId(name, ED25519, publicKey);
  if (computedKeyId !== keyId) {
    throw new TlogError(`key id ${hexId} does not match the key (${keyIdHex(computedKeyId)})`);
  }
  return { vkey: text, name, keyId, publicKey, computedKeyId };
}

export async function verifyEd25519(publicKey, message, signature) {
  let key;
  try {
    key = await subtle().importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch (e) {
    if (e instanceof TlogError) throw e;
    throw new TlogError(`this browser cannot use the Ed25519 key (${e.message})`);
  }
  return subtle().verify("Ed25519", key, signature, message);
}

// The signature lines of `note` made by `key`, each verified, as c2sp.org
// signed-note requires: a known key's signature must verify; another key's is
// ignored; at least one must be the key's.
export async function verifyNoteSignature(note, key) {
  const mine = note.signatures.filter((s) => s.name === key.name && s.keyId === key.keyId);
  if (!mine.length) {
    const by = note.signatures.map((s) => `${s.name}+${keyIdHex(s.keyId)}`).join(", ");
    throw new TlogError(
      `the note has no signature by ${key.name}+${keyIdHex(key.keyId)} (it is signed by ${by})`,
    );
  }
  const message = utf8(note.text);
  for (const sig of mine) {
    const ok =
      sig.signature.length === 64 && (await verifyEd25519(key.publicKey, message, sig.signature));
    if (!ok) throw new TlogError(`invalid signature for key ${key.name}+${keyIdHex(key.keyId)}`);
  }
  return mine;
}

// c2sp.org/tlog-checkpoint note text (signatures split off): {origin, size, root, extensions}.
export function parseCheckpoint(text) {
  if (!text.endsWith("\n")) throw new TlogError("checkpoint must end with a newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) throw new TlogError("checkpoint needs origin, size and root lines");
  const [origin, sizeText, rootText, ...extensions] = lines;
  if (!origin || origin !== origin.trim()) {
    throw new TlogError("origin must be a non-empty line without surrounding spaces");
  }
  const size = parseDecimal(
    sizeText,
    MAX_TREE_SIZE,
    `tree size ${brief(sizeText)} is not a canonical decimal at most ${MAX_TREE_SIZE}`,
  );
  const root = fromBase64(rootText, "root hash is not base64");
  if (root.length !== HASH_SIZE)
    throw new TlogError(`root hash is ${root.length} bytes, not ${HASH_SIZE}`);
  if (extensions.some((e) => !e)) throw new TlogError("extension lines must be non-empty");
  return { origin, size, root, extensions };
}

// Parse and verify a signed checkpoint against `key`; its origin must be the key's name.
export async function openCheckpoint(noteText, key) {
  const note = parseNote(noteText);
  const checkpoint = parseCheckpoint(note.text);
  checkOrigin(checkpoint, key);
  const signatures = await verifyNoteSignature(note, key);
  return { note, checkpoint, signatures };
}

export function checkOrigin(checkpoint, key) {
  if (checkpoint.origin !== key.name) {
    throw new TlogError(
      `checkpoint origin ${brief(checkpoint.origin)} is not the key's name ${brief(key.name)}`,
    );
  }
}

// Proof files -------------------------------------------------------------------

// c2sp.org/tlog-proof text: {index, hashes, checkpoint (note text), extra}.
export function parseTlogProof(text) {
  const sep = text.indexOf("\n\n");
  const checkpoint = sep < 0 ? "" : text.slice(sep + 2);
  if (!checkpoint) throw new TlogError("tlog-proof has no checkpoint");
  const lines = text.slice(0, sep).split("\n");
  if (lines[0] !== TLOG_PROOF_HEADER)
    throw new TlogError(`missing expected header ${TLOG_PROOF_HEADER}`);
  let pos = 1;
  let extra = null;
  if (pos < lines.length && lines[pos].startsWith("extra ")) {
    extra = fromBase64(lines[pos].slice(6), "extra data not base64 encoded");
    pos++;
  }
  if (pos >= lines.length || !lines[pos].startsWith("index "))
    throw new TlogError("missing required index");
  const indexText = lines[pos].slice(6);
  const index = parseDecimal(
    indexText,
    MAX_INDEX,
    `index ${brief(indexText)} is not a valid uint64`,
  );
  const hashes = lines.slice(pos + 1).map((line) => {
    const h = fromBase64(line, "hash not base64 encoded");
    if (h.length !== HASH_SIZE)
      throw new TlogError(`proof hash is ${h.length} bytes, not ${HASH_SIZE}`);
    return h;
  });
  if (hashes.length > MAX_PROOF_HASHES) throw new TlogError("inclusion proof is too long");
  return { index, hashes, checkpoint, extra };
}

export function encodeTlogProof(index, hashes, checkpoint) {
  const lines = [TLOG_PROOF_HEADER, `index ${index}`, ...hashes.map(toBase64)];
  return `${lines.join("\n")}\n\n${checkpoint}`;
}

// Read pasted text: a Lictor receipt (JSON) or bare tlog-proof text, as
// lictor.receipt.read_proof_file does: {kind, proof, receipt, notes}. Every
// redundant receipt field that the tlog-proof alone decides must agree with it;
// leaf_hash and tree_size are checked where their values are computed.
export function readProofText(text) {
  if (typeof text !== "string" || !text.trim()) {
    throw new TlogError("nothing to verify: paste a receipt or a tlog-proof, or upload one");
  }
  const notes = [];
  if (!text.trimStart().startsWith("{")) {
    if (!text.startsWith(`${TLOG_PROOF_HEADER}\n`)) {
      throw new TlogError(
        `this is neither a Lictor receipt (JSON) nor a tlog-proof (text whose first line is ${TLOG_PROOF_HEADER})`,
      );
    }
    if (!text.endsWith("\n")) {
      text += "\n";
      notes.push("The text did not end with a newline (lost in copying?); one was added.");
    }
    return { kind: "tlog-proof", proof: parseTlogProof(text), receipt: null, notes };
  }
  let receipt;
  try {
    receipt = JSON.parse(text);
  } catch (e) {
    throw new TlogError(`receipt is not JSON: ${e.message}`);
  }
  if (!isObject(receipt) || typeof receipt.tlog_proof !== "string") {
    throw new TlogError("receipt has no tlog_proof text");
  }
  if (!isObject(receipt.entry)) throw new TlogError("receipt has no entry object");
  const proof = parseTlogProof(receipt.tlog_proof);
  checkReceiptFields(receipt, proof);
  return { kind: "receipt", proof, receipt, notes };
}

function checkReceiptFields(receipt, proof) {
  const index = receipt.index;
  if (!Number.isSafeInteger(index) || BigInt(index) !== proof.index) {
    throw new TlogError(
      `receipt index ${brief(index)} differs from the proof's index ${proof.index}`,
    );
  }
  if ("checkpoint" in receipt && receipt.checkpoint !== proof.checkpoint) {
    throw new TlogError("the receipt's checkpoint differs from the one in its tlog_proof");
  }
  if ("inclusion_proof" in receipt) {
    const stated = receipt.inclusion_proof;
    const hashes = proof.hashes.map(toBase64);
    if (
      !Array.isArray(stated) ||
      stated.length !== hashes.length ||
      stated.some((h, i) => h !== hashes[i])
    ) {
      throw new TlogError(
        "the receipt's inclusion_proof differs from the hashes in its tlog_proof",
      );
    }
  }
}

// sha256:<hex of SHA-256(salt || canonical JSON(event))> (lictor.log.commitment).
export async function commitment(event, saltB64) {
  const salt = fromBase64(saltB64, "salt is not base64");
  if (salt.length !== 32) throw new TlogError("salt must be 32 bytes");
  return `sha256:${toHex(await sha256(concat(salt, canonicalEntry(event))))}`;
}

// Checking, step by step ----------------------------------------------------------

// Runs named steps in order. Each step's function may add values to show
// (`step.value(label, text, kind)`) and a message; one that throws fails,
// and every later step is "not reached".
export class Steps {
  constructor() {
    this.list = [];
    this.failed = null;
  }

  async run(name, body) {
    const step = {
      name,
      status: "not-reached",
      message: "",
      values: [],
      value(label, text, kind = "mono") {
        this.values.push({ label, text: String(text), kind });
      },
    };
    this.list.push(step);
    if (this.failed) return undefined;
    try {
      const result = await body(step);
      step.status = "passed";
      return result;
    } catch (e) {
      step.status = "failed";
      step.message = e instanceof TlogError ? e.message : `unexpected error: ${e && e.message}`;
      this.failed = step;
      return undefined;
    }
  }

  get ok() {
    return this.failed === null && this.list.length > 0;
  }
}

// Verify one entry's inclusion in a signed checkpoint, step by step.
//
// `source` is {text, entryText} (a pasted receipt or tlog-proof; entryText is
// the entry of a bare tlog-proof, optional) or {load} (an async function that
// returns a proof already taken apart: {index, hashes, checkpoint,
// entryBytes, entry, leafHash, event, salt, description}).
// `options`: {vkey, keySource, loadEntry(index)} where loadEntry fetches the
// entry of a bare tlog-proof given without one ({entryBytes, leafHash, event,
// salt, description}).
// Returns {steps, ok, failed, path, index, checkpoint}.
export async function verifyEntry(source, options) {
  const steps = new Steps();
  const facts = {};
  const claim = await steps.run("Parse", (step) => parseStep(step, source, options));
  await steps.run("Entry", (step) => entryStep(step, claim, facts));
  await steps.run("Leaf hash", (step) => leafStep(step, claim, facts));
  const key = await steps.run("Verifier key", (step) => verifierKeyStep(step, options));
  const note = await steps.run("Checkpoint", (step) => checkpointStep(step, claim, key, facts));
  await steps.run("Inclusion path", (step) => pathStep(step, claim, facts));
  await steps.run("Root", (step) => rootStep(step, facts));
  await steps.run("Signature", (step) => signatureStep(step, note, key));
  if (claim && (claim.event != null || claim.salt != null)) {
    await steps.run("Commitment", (step) => commitmentStep(step, claim));
  }
  return {
    steps: steps.list,
    ok: steps.ok,
    failed: steps.failed,
    path: facts.path,
    index: claim ? claim.index : undefined,
    checkpoint: facts.checkpoint,
    leaf: facts.leaf,
    root: facts.root,
  };
}

async function parseStep(step, source, options) {
  if (source.load) {
    const claim = await source.load();
    step.message = claim.description;
    step.value("Index", claim.index);
    step.value("Inclusion hashes", claim.hashes.length, "text");
    step.value("tlog-proof", encodeTlogProof(claim.index, claim.hashes, claim.checkpoint), "pre");
    return claim;
  }
  const read = readProofText(source.text);
  const { proof, receipt } = read;
  const claim = { index: proof.index, hashes: proof.hashes, checkpoint: proof.checkpoint };
  step.value("Index", proof.index);
  step.value("Inclusion hashes", proof.hashes.length, "text");
  if (receipt) {
    Object.assign(claim, { entry: receipt.entry, receipt });
    if ("leaf_hash" in receipt) claim.leafHash = receipt.leaf_hash;
    if ("event" in receipt) claim.event = receipt.event;
    if ("salt" in receipt) claim.salt = receipt.salt;
    step.message =
      "A Lictor receipt: its index, inclusion_proof and checkpoint agree with its tlog_proof.";
  } else if (source.entryText) {
    claim.entryBytes = utf8(source.entryText);
    claim.entrySource = "the entry text you gave, exactly as written (UTF-8)";
    step.message = "A c2sp.org/tlog-proof, with the entry you gave.";
  } else {
    const loaded = await options.loadEntry(proof.index);
    Object.assign(claim, loaded, { entrySource: loaded.description });
    step.message =
      "A c2sp.org/tlog-proof; it carries no entry, so this log's entry at its index is used.";
  }
  if (proof.extra) step.value("Extra data", toBase64(proof.extra));
  if (read.notes.length) step.message += ` ${read.notes.join(" ")}`;
  return claim;
}

async function entryStep(step, claim, facts) {
  if (claim.receipt) {
    facts.entry = canonicalEntry(claim.entry);
    step.message = "The entry's bytes are the RFC 8785 canonical JSON of the receipt's entry.";
  } else if (claim.entry !== undefined) {
    facts.entry = claim.entryBytes;
    const canonical = canonicalEntry(claim.entry);
    if (!equalBytes(canonical, facts.entry))
      throw new TlogError("the log's entry bytes are not in RFC 8785 canonical form");
    step.message = `The exact bytes from ${claim.entrySource || "the log"}; they are RFC 8785 canonical JSON.`;
  } else {
    facts.entry = claim.entryBytes;
    step.message = `The exact bytes of ${claim.entrySource}.`;
  }
  if (facts.entry.length > MAX_ENTRY_SIZE) {
    throw new TlogError(`entry is ${facts.entry.length} bytes; the limit is ${MAX_ENTRY_SIZE}`);
  }
  let text;
  try {
    text = fromUtf8(facts.entry, "entry");
  } catch {
    text = toBase64(facts.entry);
  }
  step.value("Entry", text, "pre");
  step.value("Size", `${facts.entry.length} bytes`, "text");
}

async function leafStep(step, claim, facts) {
  facts.leaf = await leafHash(facts.entry);
  step.value("SHA-256(0x00 ‖ entry)", toBase64(facts.leaf));
  if (claim.leafHash === undefined) {
    step.message = "Computed; no leaf hash was stated to compare it with.";
    return;
  }
  step.value("Stated leaf hash", claim.leafHash);
  if (claim.leafHash !== toBase64(facts.leaf)) {
    throw new TlogError("the stated leaf hash is not the hash of the entry");
  }
  step.message = "The stated leaf hash is the hash of the entry.";
}

// The "Verifier key" step: options {vkey, keySource, keyError}; returns the key.
export async function verifierKeyStep(step, options) {
  if (!options.vkey) {
    throw new TlogError(options.keyError || "no verifier key: paste the log's key");
  }
  step.value("Key", options.vkey);
  step.value("Trusted because", options.keySource || "given", "text");
  const key = await parseVerifierKey(options.vkey);
  step.value("SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4]", keyIdHex(key.computedKeyId));
  step.message = `An Ed25519 key named ${key.name}; its key id ${keyIdHex(key.keyId)} matches the key.`;
  return key;
}

async function checkpointStep(step, claim, key, facts) {
  const note = parseNote(claim.checkpoint);
  const checkpoint = parseCheckpoint(note.text);
  facts.checkpoint = checkpoint;
  step.value("Origin", checkpoint.origin, "text");
  step.value("Tree size", checkpoint.size, "text");
  step.value("Root", toBase64(checkpoint.root));
  for (const ext of checkpoint.extensions) step.value("Extension", ext, "text");
  for (const sig of note.signatures) step.value("Signed by", `${sig.name}+${keyIdHex(sig.keyId)}`);
  checkOrigin(checkpoint, key);
  const receipt = claim.receipt;
  if (receipt && "tree_size" in receipt) {
    const size = receipt.tree_size;
    if (!Number.isSafeInteger(size) || BigInt(size) !== checkpoint.size) {
      throw new TlogError(
        `the receipt's tree_size ${brief(size)} differs from its checkpoint's size ${checkpoint.size}`,
      );
    }
  }
  step.message = "A well-formed signed note; its origin is the key's name.";
  return note;
}

async function pathStep(step, claim, facts) {
  const size = facts.checkpoint.size;
  const { root, path } = await rootFromInclusion(claim.index, size, facts.leaf, claim.hashes);
  facts.path = path;
  facts.root = root;
  step.value("Leaf", `index ${claim.index} of ${size}`, "text");
  for (const p of path) {
    const formula = p.side === "left" ? "H(sibling ‖ node)" : "H(node ‖ sibling)";
    step.value(`Level ${p.level}: sibling on the ${p.side}`, toBase64(p.hash));
    step.value(`Level ${p.parentLevel}: ${formula}`, toBase64(p.parent));
  }
  step.message = path.length
    ? `${path.length} sibling hashes lead from the leaf to a root (RFC 6962).`
    : "A tree of one leaf: the leaf hash is the root.";
}

async function rootStep(step, facts) {
  step.value("Computed root", toBase64(facts.root));
  step.value("Checkpoint root", toBase64(facts.checkpoint.root));
  if (!equalBytes(facts.root, facts.checkpoint.root)) {
    throw new TlogError("the inclusion path does not lead to the checkpoint's root");
  }
  step.message = "The path leads to the checkpoint's root.";
}

async function signatureStep(step, note, key) {
  step.value("Signed text", note.text, "pre");
  for (const sig of note.signatures) {
    if (sig.name === key.name && sig.keyId === key.keyId) step.value("Signature line", sig.line);
  }
  await verifyNoteSignature(note, key);
  step.message = `Ed25519 signature by ${key.name}+${keyIdHex(key.keyId)} over the checkpoint text is valid.`;
}

async function commitmentStep(step, claim) {
  const { event, salt } = claim;
  const stated = claim.entry ? claim.entry.commitment : undefined;
  if (!isObject(event) || typeof salt !== "string" || typeof stated !== "string") {
    throw new TlogError("the event, salt or entry commitment is malformed");
  }
  step.value("Event", JSON.stringify(event, null, 2), "pre");
  step.value("Entry's commitment", stated);
  let computed;
  try {
    computed = await commitment(event, salt);
  } catch (e) {
    throw new TlogError(`the event and salt do not open the entry's commitment (${e.message})`);
  }
  step.value("sha256(salt ‖ canonical event)", computed);
  if (computed !== stated)
    throw new TlogError("the event and salt do not open the entry's commitment");
  step.message = "The private event and its salt open the entry's public commitment.";
}
