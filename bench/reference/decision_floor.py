"""The floor of Lictor's own decision (not Lictor, not a design to copy): `reference.py`,
plus what Lictor must do on a decision's path that the reference leaves out, each in as
little Python as this file could manage, so that a benchmark can say how far Lictor is
from the cheapest program doing all of its work, and what each obligation costs.

The reference decides and logs; it leaves out (its README says so) what Lictor's
invariants and standards put on the same path. Each obligation is one switch, named in
FLOOR_EXTRAS (comma-separated; "all", the default, or "none" for the reference's work
in this file's code):

- strict: the body is read as strict JSON (a key named twice in one object is refused),
  as Lictor's parsers of untrusted input must (orjson, then the keys written counted
  against the members read; the reference uses json.loads, where the last key wins).
- checks: the body's fields are checked with a clear error each (entity references,
  context an object nested at most 32 deep without the reserved key, ttl a positive
  integer), as bad input must get a stable error code.
- standing: the credential is checked for revocation, expiry and role (every endpoint
  checks its caller's role); the reference checks only that the token is known.
- revoked: a revoked principal or a runtime that is not active is denied, on the loop
  and again by the committer for each entry of its batch (a revocation committed
  between the decision and its commit wins: revocation stays exact).
- record: the execution record Lictor keeps for renewals, completion, revocation and
  lineage (lineage fields, lease, state, version, transitions with the decision and the
  runtime's facts), inserted as a new key (a conflict fails the batch), with a pending
  row for its query index; the head moved by compare-and-swap in the same transaction
  (replicas share the store). A thread of its own builds the index from the pending rows
  (tag, value, key), off the acknowledgement path, as Lictor's indexer does.
- answer: Lictor's answer (execution, decision, transitions, lease, grant, and a receipt
  with the entry, leaf hash, tree size, inclusion proof, checkpoint, C2SP tlog-proof,
  event and salt, so that a receipt verifies alone), the grant with Lictor's claims.
- metrics: responses by status class, decisions by result and reason, decision time in
  a histogram (plain counters; a scrape would read them).
- guard: connection bounds (a deadline for a request's head and body, a registry of open
  connections), so that slow clients cannot hold the server.

Modes, as the reference's: `decision_floor.py serve PORT DB` (one process), or
`decision_floor.py seq SOCK DB` with `decision_floor.py worker PORT SOCK` started N
times (SO_REUSEPORT workers feeding one log process, which checks revocation again
and writes the record, as the committer does in one process).
Environment: as `reference.py` (REF_DATA, REF_TOKEN), and FLOOR_EXTRAS.
"""
import asyncio, bisect, hashlib, os, re, sqlite3, sys, threading, time

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402  (its keys, Cedar handles, tree and helpers)

ALL = {"strict", "checks", "standing", "revoked", "record", "answer", "metrics", "guard"}
_asked = os.environ.get("FLOOR_EXTRAS", "all")
EXTRAS = ALL if _asked == "all" else set() if _asked == "none" else set(_asked.split(","))
if EXTRAS - ALL:
    sys.exit(f"unknown FLOOR_EXTRAS: {sorted(EXTRAS - ALL)}")

canon = lambda o: orjson.dumps(o, option=orjson.OPT_SORT_KEYS)
CREDENTIALS = {h: {"name": rt["id"], "role": "runtime", "revoked": False, "expires_ms": None, "runtime": rt}
               for h, rt in R.TOKENS.items()}
ACTING = {"runtime", "agent"}
REVOKED_PRINCIPALS: set = set()  # what a principal revocation adds to
RUNTIME_STATE = {rt["id"]: "active" for rt in R.TOKENS.values()}
POLICY_VERSION = hashlib.sha256(R.POLICY.encode()).hexdigest()
ENTITIES_VERSION = hashlib.sha256(R.SCHEMA.encode()).hexdigest()
MAX_DEPTH = 32
STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?')
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


class Refused(Exception):
    def __init__(self, status, code, message):
        super().__init__(message); self.status, self.code = status, code


def strict_loads(raw):
    value = orjson.loads(raw)
    written = STRING.findall(raw)
    keys, count, pending = len(written) - written.count(b""), 0, [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            count += len(item); pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    if keys != count:
        raise Refused(400, "invalid_request", "a key is named twice in one object")
    return value


def depth(value, level=0):
    if level > MAX_DEPTH:
        raise Refused(400, "invalid_request", "context nested too deep")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return max((depth(c, level + 1) for c in children), default=level)


def checked(req):
    if not isinstance(req, dict):
        raise Refused(400, "invalid_request", "body: an object")
    refs = []
    for field in ("principal", "action", "resource"):
        try:
            refs.append(R.ref(req[field]))
        except (KeyError, ValueError):
            raise Refused(400, "invalid_request", f"body.{field}: an entity reference") from None
    ctx, ttl = req.get("context", {}), req.get("ttl", 15)
    if not isinstance(ctx, dict) or "lictor" in ctx:
        raise Refused(400, "invalid_request", "body.context: an object without 'lictor'")
    if type(ttl) is not int or not 0 < ttl <= 86400:
        raise Refused(400, "invalid_request", "body.ttl: seconds, a positive integer")
    depth(ctx)
    return refs, ctx, ttl


def execution_id(now):
    value = (now << 80) | int.from_bytes(os.urandom(10), "big")
    return "ex_" + "".join(CROCKFORD[(value >> s) & 31] for s in range(125, -1, -5))


def decide_and_prepare(body, auth):
    """Everything before the log, as the reference's, with the obligations switched on."""
    if auth[:7] != b"Bearer ":
        raise Refused(401, "unauthenticated", "expected a bearer credential")
    credential = CREDENTIALS.get(hashlib.sha256(auth[7:]).digest())
    if credential is None:
        raise Refused(401, "unauthenticated", "unknown credential")
    now = int(time.time() * 1000)
    if "standing" in EXTRAS:
        if credential["revoked"] or (credential["expires_ms"] or now + 1) <= now:
            raise Refused(401, "unauthenticated", "credential revoked or expired")
        if credential["role"] not in ACTING:
            raise Refused(403, "forbidden", "role not admitted")
    rt = credential["runtime"]
    req = strict_loads(body) if "strict" in EXTRAS else orjson.loads(body)
    if "checks" in EXTRAS:
        (p, a, r), ctx, ttl = checked(req)
    else:
        p, a, r, ctx, ttl = R.ref(req["principal"]), R.ref(req["action"]), R.ref(req["resource"]), req.get("context", {}), 15
    stamp = R.datetime.fromtimestamp(now // 1000, R.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{now % 1000:03d}Z"
    facts = {"id": rt["id"], "region": rt["region"], "cluster": rt["cluster"],
             "attestation": {"state": "verified", "digests": []}}
    lictor = {"runtime": facts, "lineage": {"depth": 0, "root_principal": p},
              "time": {"epoch_ms": now, "now": stamp}}
    denied = None
    if "revoked" in EXTRAS:
        if f'{p["type"]}::"{p["id"]}"' in REVOKED_PRINCIPALS:
            denied = "principal_revoked"
        elif RUNTIME_STATE.get(rt["id"]) != "active":
            denied = "runtime_not_active"
    res = R.cedarpy.is_authorized({"principal": p, "action": a, "resource": r,
                                   "context": orjson.dumps({**ctx, "lictor": lictor}).decode()},
                                  R.pset, R.entities, R.schema)
    allowed = res.allowed and not res.diagnostics.errors and denied is None
    decision = {"allowed": allowed, "reasons": sorted(R.IDS.get(x, x) for x in res.diagnostics.reasons),
                "errors": list(res.diagnostics.errors), "policy_version": POLICY_VERSION,
                "entities_version": ENTITIES_VERSION, "reason_code": denied if denied or allowed else "denied"}
    eid = execution_id(now) if "record" in EXTRAS else "ex_" + R.base64.b32encode(os.urandom(15)).decode().lower()
    state = "active" if allowed else "denied"
    public = {"execution": eid, "parent": None, "runtime": rt["id"], "policy_version": POLICY_VERSION, "state": state}
    event = {**public, "principal": p, "action": a, "resource": r, "context": ctx, "reason": None,
             "decision": decision, "kind": "execution", "time": stamp}
    ev, salt = canon(event), os.urandom(16)
    entry = {**public, "kind": "execution", "time": stamp,
             "commitment": "sha256:" + hashlib.sha256(salt + ev).hexdigest()}
    private = b'{"event":' + ev + b',"salt":"' + R.b64(salt).encode() + b'"}'
    lease = {"ttl_ms": ttl * 1000, "issued_at_ms": now, "expires_at_ms": now + ttl * 1000,
             "renew_by_ms": now + ttl * 1000 // 3}
    record = None
    if "record" in EXTRAS:
        record = {"id": eid, "principal": p, "action": a, "resource": r, "context": ctx, "runtime_id": rt["id"],
                  "parent_id": None, "root_id": eid, "depth": 0, "delegation": [p], "state": state,
                  "policy_version": POLICY_VERSION, "lease": lease if allowed else None, "created_at_ms": now,
                  "ended_at_ms": None if allowed else now, "outcome": None, "exit_code": None,
                  "reason": None if allowed else decision["reason_code"], "version": 2,
                  "decision": decision, "transitions": [{"state": state, "reason": None, "at_ms": now,
                                                         "decision": decision, "runtime": facts}]}
    grant = None
    if allowed:
        claims = {"iss": R.ORIGIN, "sub": f'{p["type"]}::"{p["id"]}"', "jti": eid, "iat": now // 1000,
                  "nbf": now // 1000, "exp": (now + ttl * 1000) // 1000, "action": f'{a["type"]}::"{a["id"]}"',
                  "resource": f'{r["type"]}::"{r["id"]}"', "parent_id": None, "root_id": eid, "depth": 0,
                  "policy_version": POLICY_VERSION, "runtime_id": rt["id"]}
        si = R.GRANT_HDR + "." + R.b64u(orjson.dumps(claims))
        grant = si + "." + R.b64u(R.GRANT_KEY.sign(si.encode()))
    data = canon(entry)
    return (201 if allowed else 403), (data, private, eid, record, entry, decision, grant, lease, event, salt, p, rt["id"])


class Committer:
    """The reference's group-commit thread, with the record, the revocation re-check and
    the head's compare-and-swap when those obligations are on."""

    def __init__(self, path, deliver):
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for s in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                  "CREATE TABLE IF NOT EXISTS entries(i INTEGER PRIMARY KEY, data BLOB, private BLOB)",
                  "CREATE TABLE IF NOT EXISTS hashes(level INT, i INT, h BLOB, PRIMARY KEY(level, i))",
                  "CREATE TABLE IF NOT EXISTS records(k TEXT PRIMARY KEY, version INT, doc BLOB, tags TEXT)",
                  "CREATE TABLE IF NOT EXISTS pending(k TEXT PRIMARY KEY, tags TEXT)",
                  "CREATE TABLE IF NOT EXISTS checkpoints(size INTEGER PRIMARY KEY, note BLOB)",
                  "CREATE TABLE IF NOT EXISTS record_index(tag TEXT, value TEXT, k TEXT, PRIMARY KEY(tag, value, k))",
                  "CREATE TABLE IF NOT EXISTS head(id INTEGER PRIMARY KEY, size INT, version INT)"):
            self.db.execute(s)
        for t in ("entries", "hashes", "records", "pending", "checkpoints", "head", "record_index"):
            self.db.execute(f"DELETE FROM {t}")
        self.db.execute("INSERT INTO head VALUES (1, 0, 0)")
        self.tree, self.size, self.deliver = R.Tree(), 0, deliver
        self.pending, self.cond = [], threading.Condition()
        threading.Thread(target=self.run, daemon=True).start()
        if "record" in EXTRAS:
            threading.Thread(target=self.index, args=(path,), daemon=True).start()

    def index(self, path):
        """The query index, from the pending rows, every 50 ms (reads may lag that much)."""
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        while True:
            time.sleep(0.05)
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute("SELECT k, tags FROM pending").fetchall()
            db.executemany("INSERT OR IGNORE INTO record_index VALUES(?,?,?)",
                           [(tag, value, k) for k, tags in rows for tag, value in orjson.loads(tags)])
            db.executemany("DELETE FROM pending WHERE k = ?", [(k,) for k, _ in rows])
            db.execute("COMMIT")

    def submit(self, item):
        """``item``: (entry data, private event, record key, record (a dict) or None,
        principal as text, runtime id, what to deliver the result to)."""
        with self.cond:
            self.pending.append(item); self.cond.notify()

    def run(self):
        while True:
            with self.cond:
                while not self.pending:
                    self.cond.wait()
                batch, self.pending = self.pending[:1024], self.pending[1024:]
            first, hashes, records = self.size, [], []
            for j, (data, _, key, record, principal, runtime, _) in enumerate(batch):
                if "revoked" in EXTRAS:  # committed revocations win over a decision in flight
                    if principal in REVOKED_PRINCIPALS or RUNTIME_STATE.get(runtime) != "active":
                        raise RuntimeError("a floor run revokes nothing")
                hashes += self.tree.append(hashlib.sha256(b"\x00" + data).digest())
                if isinstance(record, dict):
                    record["transitions"][0]["log_index"] = first + j
                    tags = orjson.dumps([["state", record["state"]], ["runtime", runtime],
                                         ["principal", principal]]).decode()
                    records.append((key, 1, canon(record), tags))
            self.size = size = first + len(batch)
            root = self.tree.mth(0, size)
            text = f"{R.ORIGIN}\n{size}\n{R.b64(root)}\n"
            note = text + f"\n\u2014 {R.ORIGIN} {R.b64(R.KEY_HASH + R.LOG_KEY.sign(text.encode()))}\n"
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            if "record" in EXTRAS:
                moved = db.execute("UPDATE head SET size = ?, version = version + 1 WHERE id = 1 AND size = ?",
                                   (size, first)).rowcount
                if moved != 1:
                    raise RuntimeError("the head moved")
            db.executemany("INSERT INTO entries VALUES(?,?,?)", [(first + j, it[0], it[1]) for j, it in enumerate(batch)])
            db.executemany("INSERT INTO hashes VALUES(?,?,?)", hashes)
            if records:
                db.executemany("INSERT INTO records VALUES(?,?,?,?)", records)
                db.executemany("INSERT INTO pending VALUES(?,?)", [(k, t) for k, _, _, t in records])
            else:
                db.executemany("INSERT OR REPLACE INTO records VALUES(?,1,?,'')", [(it[2], it[3] or b"") for it in batch])
            db.execute("INSERT INTO checkpoints VALUES(?,?)", (size, note.encode()))
            db.execute("COMMIT")
            out = [(it[6], first + j, [R.b64(h) for h in self.tree.path(first + j, 0, size)])
                   for j, it in enumerate(batch)]
            self.deliver(out, size, note)


BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
METRICS = {"requests": {}, "decisions": {}, "seconds": [0] * (len(BUCKETS) + 1), "sum": [0.0]}


def count(status, decision, seconds):
    by = METRICS["requests"]; key = status // 100
    by[key] = by.get(key, 0) + 1
    if decision is not None:
        d = METRICS["decisions"]; k = (decision["allowed"], decision["reason_code"])
        d[k] = d.get(k, 0) + 1
        METRICS["seconds"][bisect.bisect_left(BUCKETS, seconds)] += 1; METRICS["sum"][0] += seconds


def respond_body(status, parts, index, proof, size, note):
    data, private, eid, record, entry, decision, grant, lease, event, salt, p, runtime = parts
    leaf = R.b64(hashlib.sha256(b"\x00" + data).digest())
    if "answer" not in EXTRAS:
        body = {"execution": eid, "decision": decision,
                "receipt": {"index": index, "entry": entry, "leaf_hash": leaf, "tree_size": size,
                            "inclusion_proof": proof, "checkpoint": note}}
        if grant:
            body["grant"], body["lease"] = grant, lease
        return orjson.dumps(body)
    view = record or {"id": eid, "principal": p, "state": entry["state"], "lease": lease}
    tlog = f"c2sp.org/tlog-proof@v1\nindex {index}\n" + "".join(h + "\n" for h in proof) + "\n" + note
    body = {"execution": {k: v for k, v in view.items() if k not in ("decision", "transitions")},
            "decision": decision, "transitions": view.get("transitions", []),
            "receipt": {"index": index, "entry": entry, "leaf_hash": leaf, "tree_size": size,
                        "inclusion_proof": proof, "checkpoint": note, "tlog_proof": tlog,
                        "event": event, "salt": R.b64(salt)}}
    if grant:
        body["lease"] = {"ttl": lease["ttl_ms"] / 1000, "expires_at_ms": lease["expires_at_ms"],
                         "renew_by_ms": lease["renew_by_ms"]}
        body["grant"] = grant
    return orjson.dumps(body)


HDRS = [(b"content-type", b"application/json")]


def make_app(submit):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        body, more = b"", True
        while more:
            m = await receive(); body += m.get("body", b""); more = m.get("more_body", False)
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        decision = None
        try:
            status, parts = decide_and_prepare(body, auth)
            decision = parts[5]
            index, proof, size, note = await submit(parts)
            out = respond_body(status, parts, index, proof, size, note)
        except Refused as e:
            status, out = e.status, orjson.dumps({"error": {"code": e.code, "message": str(e)}})
        except (ValueError, KeyError, TypeError):
            status, out = 400, b'{"error":{"code":"invalid_request","message":"not JSON"}}'
        if "metrics" in EXTRAS:
            count(status, decision, time.perf_counter() - started)
        headers = [*HDRS, (b"content-length", b"%d" % len(out))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})
    return app


def guarded_protocol():
    """uvicorn's httptools protocol with a deadline for each request's head and body."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    open_connections = set()

    class Guarded(HttpToolsProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            open_connections.add(self)
            self.deadline = self.loop.time() + 10
            self.timer = self.loop.call_later(10, self.expire)

        def connection_lost(self, exc):
            open_connections.discard(self); self.timer.cancel()
            super().connection_lost(exc)

        def on_headers_complete(self):
            super().on_headers_complete()
            self.deadline = self.loop.time() + 30  # the body's bound

        def on_message_complete(self):
            super().on_message_complete()
            self.deadline = None  # answering: no bound on the server's own time

        def on_response_complete(self):
            super().on_response_complete()
            self.deadline = self.loop.time() + 10  # the next head's bound

        def expire(self):
            if self.deadline is not None and self.loop.time() >= self.deadline:
                self.transport.abort(); return
            self.timer = self.loop.call_later(10, self.expire)

    return Guarded


def item(parts, token):
    """A committer's item for ``parts`` (`decide_and_prepare`'s)."""
    p = parts[10]
    record = parts[3] if parts[3] is not None else None if "record" in EXTRAS else canon({"execution": parts[8], "lease": parts[7]})
    return parts[0], parts[1], parts[2], record, f'{p["type"]}::"{p["id"]}"', parts[11], token


def in_process_app(db):
    """The one-process form's ASGI app, its committer writing ``db``."""
    state = {}

    def deliver(out, size, note):
        def settle():
            for fut, index, proof in out:
                fut.set_result((index, proof, size, note))
        state["loop"].call_soon_threadsafe(settle)

    committer = Committer(db, deliver)

    async def submit(parts):
        loop = state.setdefault("loop", asyncio.get_running_loop())
        fut = loop.create_future()
        committer.submit(item(parts, fut))
        return await fut

    return make_app(submit)


def serve(port, db):
    import uvicorn
    http = guarded_protocol() if "guard" in EXTRAS else "httptools"
    uvicorn.run(in_process_app(db), host="127.0.0.1", port=port, loop="uvloop", http=http,
                log_level="warning", access_log=False, lifespan="off", proxy_headers=False)


def sequencer(sock_path, db):
    """The log process of the two-worker form, as the reference's: workers send each
    entry with its record; it commits them in batches and answers with the proof."""
    import uvloop

    async def main():
        loop = asyncio.get_running_loop()

        def deliver(out, size, note):
            def write():
                for (writer, rid), index, proof in out:
                    writer.write(R.frame(rid, b"%d" % index, orjson.dumps(proof), b"%d" % size, note.encode()))
            loop.call_soon_threadsafe(write)

        committer = Committer(db, deliver)

        def got(writer, f):
            record = orjson.loads(f[4]) if "record" in EXTRAS else f[4]
            committer.submit((f[1], f[2], f[3].decode(), record, f[5].decode(), f[6].decode(), (writer, f[0])))

        async def client(reader, writer):
            await R.read_frames(reader, lambda f: got(writer, f))

        if os.path.exists(sock_path):
            os.unlink(sock_path)
        server = await asyncio.start_unix_server(client, sock_path)
        await server.serve_forever()
    uvloop.run(main())


def worker(port, sock_path):
    """One decision process of the two-worker form (SO_REUSEPORT), feeding the log process."""
    import socket
    import uvicorn
    state, waiting, seq = {}, {}, [0]

    async def connect():
        reader, writer = await asyncio.open_unix_connection(sock_path)

        def got(f):
            waiting.pop(f[0]).set_result((int(f[1]), orjson.loads(f[2]), int(f[3]), f[4].decode()))
        asyncio.get_running_loop().create_task(R.read_frames(reader, got))
        return writer

    async def submit(parts):
        if "w" not in state:
            state["w"] = asyncio.get_running_loop().create_task(connect())
        writer = await state["w"]
        seq[0] += 1; rid = b"%d" % seq[0]
        fut = asyncio.get_running_loop().create_future(); waiting[rid] = fut
        data, private, key, record, principal, runtime, _ = item(parts, None)
        writer.write(R.frame(rid, data, private, key.encode(), orjson.dumps(record) if isinstance(record, dict) else record,
                             principal.encode(), runtime.encode()))
        index, proof, size, note = await fut
        if parts[3] is not None:
            parts[3]["transitions"][0]["log_index"] = index
        return index, proof, size, note

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port)); s.listen(1024)
    http = guarded_protocol() if "guard" in EXTRAS else "httptools"
    config = uvicorn.Config(make_app(submit), loop="uvloop", http=http, log_level="warning",
                            access_log=False, lifespan="off", proxy_headers=False)
    uvicorn.Server(config).run(sockets=[s])


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "serve":
        serve(int(sys.argv[2]), sys.argv[3])
    elif mode == "seq":
        sequencer(sys.argv[2], sys.argv[3])
    elif mode == "worker":
        worker(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit("usage: decision_floor.py serve PORT DB | seq SOCK DB | worker PORT SOCK")
