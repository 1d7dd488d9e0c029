"""`teller audit verify` and `teller recording verify SESSION`: proofs an auditor can run."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any


def add_parsers(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the hash-chained audit log of the recording archive")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="prove every chain intact, or name the first broken entry")
    verify.add_argument("--config")
    verify.add_argument("--dir", help="audit directory (default: recording.audit_dir or <data_dir>/audit)")

    recording = sub.add_parser("recording", help="recorded sessions")
    recording_sub = recording.add_subparsers(dest="recording_command", required=True)
    check = recording_sub.add_parser("verify", help="check a session's files against its signed manifest")
    check.add_argument("session", help="the session id (RM_...)")
    check.add_argument("--config")


def run(args: argparse.Namespace, config: Any) -> int:
    from ..signaling.tokens import resolve_secret

    secret = resolve_secret(config)
    if args.command == "audit":
        from ..config import data_dir
        from .audit import verify_audit

        directory = Path(args.dir or config.recording.audit_dir or data_dir(config) / "audit")
        if not directory.is_dir():
            print(f"teller: no audit log at {directory}", file=sys.stderr)
            return 2
        report: Any = verify_audit(directory, secret)
        result = {"directory": str(directory), **dataclasses.asdict(report)}
    else:
        from .manifest import verify_recording
        from .objects.factory import open_object_store

        async def verify() -> Any:
            store = open_object_store(config)
            try:
                return await verify_recording(store, args.session, secret)
            finally:
                await store.close()

        report = asyncio.run(verify())
        result = {"session_id": args.session, **dataclasses.asdict(report)}
    json.dump(result, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    if not report.ok:
        print("teller: verification FAILED", file=sys.stderr)
    return 0 if report.ok else 1
