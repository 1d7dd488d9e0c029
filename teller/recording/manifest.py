"""The manifest of a recorded session: every file with its SHA-256, sealed with an HMAC.

A recording is evidence. The manifest lets anyone holding the secret show, years
later, that the session's files are exactly those written at the time: a file edited
in the store fails its SHA-256, an edited manifest fails its MAC. Verification always
re-reads the content; it never trusts hashes the store keeps as metadata, since
whoever can edit an object can edit its metadata too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import BadRequest
from .objects.base import ObjectNotFound, ObjectStore, check_key, sha256_file

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
READ_CHUNK = 8 * 1024 * 1024
# A session id as it names a spool directory and a store prefix (a room's sid: RM_...).
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CONTENT_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska", ".json": "application/json",
                 ".jsonl": "application/x-ndjson", ".vtt": "text/vtt", ".png": "image/png", ".jpg": "image/jpeg"}


def content_type(name: str) -> str:
    """The media type of a session file, by its suffix (stored with it, served with it)."""
    suffix = name[name.rfind("."):] if "." in name else ""
    return CONTENT_TYPES.get(suffix, "application/octet-stream")

__all__ = [
    "MANIFEST_NAME",
    "VerifyReport",
    "build_manifest",
    "canonical_json",
    "manifest_key",
    "manifest_mac",
    "session_prefix",
    "sha256_file",
    "verify_recording",
]


def session_prefix(session_id: str) -> str:
    """Where a session's objects live: ``recordings/<session_id>/``."""
    if not session_id or "/" in session_id:
        raise BadRequest(f"invalid session id {session_id!r}", code="invalid_session_id")
    prefix = f"recordings/{session_id}/"
    check_key(prefix + MANIFEST_NAME)
    return prefix


def manifest_key(session_id: str) -> str:
    return session_prefix(session_id) + MANIFEST_NAME


def canonical_json(value: Any) -> bytes:
    """The one byte string a JSON value MACs as: any reader re-serialising gets the same."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_mac(manifest: Mapping[str, Any], secret: str) -> str:
    """HMAC-SHA256 over everything in the manifest but the MAC itself."""
    body = {k: v for k, v in manifest.items() if k != "mac"}
    return hmac.new(secret.encode(), canonical_json(body), hashlib.sha256).hexdigest()


def build_manifest(
    session_id: str,
    files: Iterable[Mapping[str, Any]],
    session: Mapping[str, Any],
    secret: str,
    *,
    created_at: str | None = None,
) -> dict[str, Any]:
    """`files` are full object keys with size, sha256 and kind (and anything else worth
    sealing); they are sorted by key so the same recording always gives the same bytes."""
    entries = sorted((dict(f) for f in files), key=lambda f: str(f["key"]))
    seen: set[str] = set()
    for entry in entries:
        missing = {"key", "size", "sha256"} - entry.keys()
        if missing:
            raise ValueError(f"manifest entry {entry!r} lacks {sorted(missing)}")
        if entry["key"] in seen:
            raise ValueError(f"manifest lists {entry['key']!r} twice")
        seen.add(entry["key"])
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "session_id": session_id,
        "created_at": created_at or datetime.now(UTC).isoformat(timespec="milliseconds"),
        "files": entries,
        "session": dict(session),
    }
    manifest["mac"] = manifest_mac(manifest, secret)
    return manifest


@dataclass
class VerifyReport:
    ok: bool
    checked: int
    # {"key", "problem": "missing" | "size" | "sha256" | "manifest_mac" | "manifest_missing", ...}
    problems: list[dict[str, Any]] = field(default_factory=list)


async def verify_recording(store: ObjectStore, session_id: str, secret: str) -> VerifyReport:
    """Checks the manifest's MAC, then re-reads every file it lists. A store that cannot
    be reached raises (ObjectStoreUnavailable): "could not check" is not "tampered"."""
    key = manifest_key(session_id)
    try:
        raw = await store.get_bytes(key)
    except ObjectNotFound:
        return VerifyReport(ok=False, checked=0, problems=[{"key": key, "problem": "manifest_missing"}])
    problems: list[dict[str, Any]] = []
    try:
        manifest = json.loads(raw)
        files = [f for f in manifest["files"] if isinstance(f, dict)]
    except (ValueError, KeyError, TypeError):
        return VerifyReport(ok=False, checked=0, problems=[{"key": key, "problem": "manifest_mac", "detail": "unreadable"}])
    mac = manifest.get("mac")
    if not isinstance(mac, str) or not hmac.compare_digest(mac, manifest_mac(manifest, secret)):
        problems.append({"key": key, "problem": "manifest_mac"})
    elif manifest.get("session_id") != session_id:
        # A genuine manifest of another session, copied here.
        problems.append({"key": key, "problem": "manifest_mac", "detail": "session_id"})
    for entry in files:
        problem = await _check_file(store, entry)
        if problem is not None:
            problems.append(problem)
    return VerifyReport(ok=not problems, checked=len(files), problems=problems)


async def _check_file(store: ObjectStore, entry: Mapping[str, Any]) -> dict[str, Any] | None:
    key = str(entry.get("key"))
    try:
        info = await store.stat(key)
    except BadRequest:
        return {"key": key, "problem": "missing", "detail": "invalid key"}
    if info is None:
        return {"key": key, "problem": "missing"}
    if info.size != entry.get("size"):
        return {"key": key, "problem": "size", "expected": entry.get("size"), "actual": info.size}
    digest = hashlib.sha256()
    offset = 0
    try:
        while offset < info.size:
            chunk = await store.read_range(key, offset, min(READ_CHUNK, info.size - offset))
            if not chunk:
                break
            digest.update(chunk)
            offset += len(chunk)
    except ObjectNotFound:  # deleted while we read it
        return {"key": key, "problem": "missing"}
    if offset != info.size:
        return {"key": key, "problem": "size", "expected": entry.get("size"), "actual": offset}
    actual = digest.hexdigest()
    if actual != str(entry.get("sha256", "")).lower():
        return {"key": key, "problem": "sha256", "expected": entry.get("sha256"), "actual": actual}
    return None
