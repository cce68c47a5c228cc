"""`lictor log`: check a transparency log from outside, with its URL (or directory) and key.

    lictor log checkpoint SOURCE [--key VKEY] [--origin ORIGIN] [--json]
    lictor log prove SOURCE --index N [--key VKEY] [--origin ORIGIN] [--size S]
                     [--checkpoint FILE] [--out FILE] [--entry-out FILE] [--json]
    lictor log verify PROOF_FILE --key VKEY [--origin ORIGIN] [--entry FILE] [--json]
    lictor log audit SOURCE --key VKEY [--origin ORIGIN] [--state FILE] [--json]

SOURCE is an http(s) tlog-tiles prefix or a local directory laid out the same
way; VKEY is a verifier key or a file holding one. Checkpoints must have the
origin ORIGIN, by default the key's name. The logic is in `lictor.audit` and
`lictor.receipt`; this module only parses arguments, reads and writes files,
and prints. A file that cannot be read or written is an `InvalidRequestError`
naming it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from lictor import audit as auditing
from lictor import tilesource
from lictor.errors import InvalidRequestError
from lictor.log.checkpoint import Checkpoint, open_checkpoint
from lictor.log.encoding import b64encode
from lictor.receipt import read_proof_file


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("log", help="check a transparency log from outside")
    cmds = parser.add_subparsers(dest="log_command", required=True, metavar="COMMAND")
    _register_checkpoint(cmds)
    _register_prove(cmds)
    _register_verify(cmds)
    _register_audit(cmds)


def _source_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="tlog-tiles URL prefix or directory")


def _key_args(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--key", required=required, metavar="VKEY", help="log verifier key, or a file holding it"
    )
    parser.add_argument(
        "--origin",
        metavar="ORIGIN",
        help="the log's checkpoint origin (default: the key's name)",
    )


def _json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def _register_checkpoint(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("checkpoint", help="fetch (and verify) the log's current checkpoint")
    _source_arg(p)
    _key_args(p, required=False)
    _json_arg(p)
    p.set_defaults(func=cmd_checkpoint)


def _register_prove(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("prove", help="build a c2sp.org/tlog-proof from the log's tiles")
    _source_arg(p)
    p.add_argument("--index", type=int, required=True, metavar="N", help="entry index")
    _key_args(p, required=False)
    p.add_argument("--size", type=int, metavar="S", help="require a checkpoint of this size")
    p.add_argument(
        "--checkpoint", type=Path, metavar="FILE", help="prove against this signed checkpoint"
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="write the proof here")
    p.add_argument("--entry-out", type=Path, metavar="FILE", help="write the entry bytes here")
    _json_arg(p)
    p.set_defaults(func=cmd_prove)


def _register_verify(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("verify", help="verify a tlog-proof or receipt offline")
    p.add_argument("proof", type=Path, metavar="PROOF_FILE", help="tlog-proof or receipt JSON")
    _key_args(p, required=True)
    p.add_argument("--entry", type=Path, metavar="FILE", help="the entry's raw bytes")
    _json_arg(p)
    p.set_defaults(func=cmd_verify)


def _register_audit(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("audit", help="recompute the whole tree and check it extends the last")
    _source_arg(p)
    _key_args(p, required=True)
    p.add_argument("--state", type=Path, metavar="FILE", help="last audited tree (JSON)")
    _json_arg(p)
    p.set_defaults(func=cmd_audit)


def _print_json(value: dict[str, Any]) -> None:
    print(json.dumps(value, indent=2))


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidRequestError(f"cannot read {what} {path}: {e.strerror or e}") from e


def _write_file(path: Path, data: bytes, what: str) -> None:
    try:
        path.write_bytes(data)
    except OSError as e:
        raise InvalidRequestError(f"cannot write {what} {path}: {e.strerror or e}") from e


def _checkpoint_json(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root": b64encode(checkpoint.root),
    }


def cmd_checkpoint(args: argparse.Namespace) -> int:
    verifier = tilesource.load_verifier(args.key) if args.key else None
    with tilesource.open_source(args.source) as source:
        note = source.checkpoint()
    if verifier is None:
        checkpoint = auditing.read_checkpoint(note)
        auditing.check_origin(checkpoint, None, args.origin)
        if args.json:
            _print_json({**_checkpoint_json(checkpoint), "verified": False, "note": note.decode()})
        else:
            sys.stdout.write(note.decode())
        return 0
    checkpoint, opened = open_checkpoint(note, [verifier])
    auditing.check_origin(checkpoint, verifier, args.origin)
    signers = [f"{s.name}+{s.key_id:08x}" for s in opened.verified]
    if args.json:
        _print_json({**_checkpoint_json(checkpoint), "verified": True, "note": note.decode()})
        return 0
    print(f"origin {checkpoint.origin}\nsize   {checkpoint.size}")
    print(f"root   {b64encode(checkpoint.root)}\nsigned by {', '.join(signers)} (verified)")
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    verifier = tilesource.load_verifier(args.key) if args.key else None
    note = _read_file(args.checkpoint, "checkpoint") if args.checkpoint else None
    with tilesource.open_source(args.source) as source:
        proved = auditing.prove(
            source, args.index, verifier, note=note, size=args.size, origin=args.origin
        )
    if not proved.verified:
        print("lictor: warning: checkpoint signature not verified (no --key)", file=sys.stderr)
    text = proved.proof.encode()
    if args.entry_out:
        _write_file(args.entry_out, proved.entry, "entry file")
    if args.out:
        _write_file(args.out, text.encode(), "proof file")
    if args.json:
        _print_json(
            {
                **_checkpoint_json(proved.checkpoint),
                "index": args.index,
                "verified": proved.verified,
                "entry": b64encode(proved.entry),
                "tlog_proof": text,
            }
        )
    elif args.out:
        print(f"wrote the proof of entry {args.index} at tree size {proved.checkpoint.size}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    verifier = tilesource.load_verifier(args.key)
    parsed = read_proof_file(_read_file(args.proof, "proof file"))
    proof, receipt_entry = parsed.proof, parsed.entry
    entry = _read_file(args.entry, "entry file") if args.entry else receipt_entry
    if entry is None:
        raise InvalidRequestError("a tlog-proof needs the entry: pass --entry FILE")
    if receipt_entry is not None and entry != receipt_entry:
        raise InvalidRequestError("the --entry file differs from the receipt's entry")
    checkpoint = auditing.verify_proof(proof, entry, verifier, args.origin)
    if args.json:
        doc = {"ok": True, "index": proof.index, **_checkpoint_json(checkpoint)}
        _print_json({**doc, "event_checked": parsed.event_checked})
        return 0
    print(
        f"OK: entry {proof.index} is in {checkpoint.origin} at tree size {checkpoint.size}"
        f" (root {b64encode(checkpoint.root)})"
    )
    if parsed.event_checked:
        print("OK: the receipt's event matches the entry's commitment")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    verifier = tilesource.load_verifier(args.key)
    if args.state and not os.path.isdir(args.state.parent):  # never raises, unlike is_dir
        raise InvalidRequestError(f"no directory {args.state.parent} for the state file")
    state = auditing.load_state(args.state) if args.state else None
    with tilesource.open_source(args.source) as source:
        result = auditing.audit(source, verifier, state, origin=args.origin)
    if args.state:
        auditing.save_state(args.state, result.state)
    if args.json:
        _print_json(_audit_json(result, args.state))
        return 0
    print(f"OK: {result.origin}: size {result.old_size} -> {result.size}")
    print(f"root {b64encode(result.root)}")
    print(
        f"checked {result.entries_checked} new entries ({result.bundles_checked} entry bundles)"
        f" and {result.tiles_checked} hash tiles"
    )
    if args.state:
        print(f"state saved to {args.state}")
    return 0


def _audit_json(result: auditing.AuditResult, state: Path | None) -> dict[str, Any]:
    return {
        "ok": True,
        "origin": result.origin,
        "old_size": result.old_size,
        "size": result.size,
        "root": b64encode(result.root),
        "entries_checked": result.entries_checked,
        "bundles_checked": result.bundles_checked,
        "tiles_checked": result.tiles_checked,
        "state": str(state) if state else None,
    }
