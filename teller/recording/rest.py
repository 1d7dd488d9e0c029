"""The archive API: search, replay, download, export, legal hold, spot checks.

Only compliance and supervisor tokens for every room ("*") get in; every request,
allowed or refused, is written to the audit log before the answer goes out, so an
access the log does not show did not happen.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import zipfile
from typing import Any

from aiohttp import web
from multidict import MultiDict

from ..errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from ..signaling.auth import authenticate
from ..signaling.keys import CONFIG, ISSUER
from ..signaling.rest import json_body
from ..signaling.tokens import ANY_ROOM, AccessToken
from ..speech.seal import Sealer, SealError
from ..speech.transcript import SEALED_PREFIX, SEALED_TRANSCRIPT, to_vtt
from ..speech.transcript import public as public_transcript
from .archive import ARCHIVE, Archive
from .index import SearchQuery, SessionEntry, publish_op
from .manifest import MANIFEST_NAME, SESSION_ID, content_type, session_prefix
from .objects import ObjectNotFound

TRANSCRIPT_NAME = "transcript.json"

routes = web.RouteTableDef()

ARCHIVE_ROLES = ("compliance", "supervisor")
CHUNK = 1024 * 1024
# The API's short names for the index's search parameters.
PARAM_NAMES = {"from": "time_from", "to": "time_to", "min_duration": "min_duration_s", "max_duration": "max_duration_s"}
EVALUATION_ITEMS = ("greeting", "identity_check", "risk_disclosure", "accuracy", "courtesy")


def _archive(request: web.Request) -> Archive:
    return request.app[ARCHIVE]


def _where(request: web.Request) -> dict[str, str | None]:
    forwarded = request.headers.get("X-Forwarded-For", "")
    ip = forwarded.split(",")[0].strip() if forwarded else request.remote
    return {"ip": ip, "user_agent": request.headers.get("User-Agent", "")[:256]}


async def _access(request: web.Request, action: str, *, target: str | None = None,
                  roles: tuple[str, ...] = ARCHIVE_ROLES) -> AccessToken:
    """Checks the token; a refusal is audited too, then raised."""
    archive = _archive(request)
    try:
        token = authenticate(request)
    except Unauthorized as exc:
        await archive.audit.append(action, subject="anonymous", role="none", target=target, outcome="denied",
                                   details={"code": exc.code, "path": request.path}, **_where(request))
        raise
    if token.role not in roles or token.room != ANY_ROOM:
        await archive.audit.append(action, subject=token.subject, role=token.role, name=token.name, target=target,
                                   outcome="denied", details={"code": "role_forbidden", "path": request.path},
                                   **_where(request))
        raise Forbidden(f"recordings need a {' or '.join(roles)} token for every room", code="role_forbidden")
    return token


async def _audit(request: web.Request, token: AccessToken, action: str, *, target: str | None = None,
                 file: str | None = None, details: dict[str, Any] | None = None) -> None:
    await _archive(request).audit.append(action, subject=token.subject, role=token.role, name=token.name,
                                         target=target, file=file, details=details or {}, **_where(request))


def _sid(request: web.Request) -> str:
    sid = request.match_info["sid"]
    if not SESSION_ID.match(sid):
        raise BadRequest("invalid session id", code="invalid_session_id")
    return sid


async def _entry(request: web.Request, sid: str) -> SessionEntry:
    archive = _archive(request)
    await archive.feeder.sync()  # what this process (or another) just changed is seen
    entry = await archive.index.get(sid)
    if entry is None:
        raise NotFound("no such recording", code="recording_not_found")
    return entry


@routes.post("/v1/recordings/login")
async def dev_login(request: web.Request) -> web.Response:
    """Demo only (auth.dev_tokens): a compliance or supervisor token for the replay page."""
    config = request.app[CONFIG]
    if not config.auth.dev_tokens:
        raise Forbidden("development tokens are disabled", code="dev_tokens_disabled")
    body = await json_body(request, optional=True)
    name = body.get("name") or "Compliance"
    role = body.get("role") or "compliance"
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise BadRequest("name is 1-64 characters", code="invalid_message", field="name")
    if role not in ARCHIVE_ROLES:
        raise BadRequest("role is compliance or supervisor", code="invalid_message", field="role")
    subject = f"{role}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    token = request.app[ISSUER].issue(room=ANY_ROOM, role=role, subject=subject, name=name,
                                      ttl_s=config.auth.default_ttl_s)
    return web.json_response({"token": token, "role": role, "name": name})


@routes.get("/v1/recordings")
async def search(request: web.Request) -> web.Response:
    token = await _access(request, "search")
    query = SearchQuery.from_params(MultiDict((PARAM_NAMES.get(k, k), v) for k, v in request.query.items()))
    archive = _archive(request)
    await archive.feeder.sync()
    page = await archive.index.search(query)
    await _audit(request, token, "search", details={"query": dict(request.query), "results": len(page.items)})
    return web.json_response(page.to_json())


@routes.get("/v1/recordings/spot-checks")
async def spot_checks(request: web.Request) -> web.Response:
    token = await _access(request, "spot_check")
    week = request.query.get("week") or _iso_week(time.time())
    start, end = _week_range(week)
    archive = _archive(request)
    await archive.feeder.sync()
    percent = archive.settings.spot_check_percent
    by_agent = await archive.index.sessions_for_spot_check(start, end)
    items = []
    for agent_id, sessions in sorted(by_agent.items()):
        for sid in _sample(archive.secret, week, agent_id, sessions, percent):
            entry = await archive.index.get(sid)
            if entry is None:
                continue
            evaluated = bool(await archive.index.evaluations(sid))
            items.append({"session_id": sid, "agent_id": agent_id, "agent_name": entry.agent_name,
                          "business": entry.business, "started_at": entry.started_at,
                          "duration_s": entry.duration_s, "evaluated": evaluated})
    await _audit(request, token, "spot_check", details={"week": week, "sampled": len(items)})
    return web.json_response({"week": week, "percent": percent, "items": items})


def _iso_week(ts: float) -> str:
    year, week, _ = datetime.datetime.fromtimestamp(ts, datetime.UTC).isocalendar()
    return f"{year}-W{week:02d}"


def _week_range(week: str) -> tuple[float, float]:
    match = re.fullmatch(r"(\d{4})-W(\d{2})", week)
    if not match:
        raise BadRequest("week is YYYY-Www, e.g. 2026-W47", code="invalid_query", field="week")
    try:
        monday = datetime.datetime.fromisocalendar(int(match[1]), int(match[2]), 1).replace(tzinfo=datetime.UTC)
    except ValueError as exc:
        raise BadRequest("no such ISO week", code="invalid_query", field="week") from exc
    return monday.timestamp(), monday.timestamp() + 7 * 86400


def _sample(secret: str, week: str, agent_id: str, sessions: list[str], percent: float) -> list[str]:
    """A fixed random N % per agent and week: the same draw for everyone who asks,
    unpredictable to the agent (keyed by the server secret)."""
    if not sessions or percent <= 0:
        return []
    count = min(len(sessions), max(1, math.ceil(len(sessions) * percent / 100)))

    def rank(sid: str) -> str:
        return hmac.new(secret.encode(), f"{week}|{agent_id}|{sid}".encode(), hashlib.sha256).hexdigest()

    return sorted(sorted(sessions, key=rank)[:count])


@routes.get("/v1/recordings/{sid}")
async def session(request: web.Request) -> web.Response:
    sid = _sid(request)
    token = await _access(request, "view", target=sid)
    archive = _archive(request)
    entry = await _entry(request, sid)
    manifest = await archive.manifest(sid)
    files = []
    if manifest is not None:
        files = [{k: v for k, v in f.items() if k != "key"} for f in manifest.get("files", [])]
        files.append({"name": MANIFEST_NAME, "kind": "manifest"})
    evaluations = await archive.index.evaluations(sid)
    await _audit(request, token, "view", target=sid)
    coverage = (manifest.get("session") or {}).get("coverage") if manifest is not None else None
    return web.json_response({"session": entry.to_json(), "files": files, "evaluations": evaluations,
                              "manifest_ok": archive.manifest_ok(manifest) if manifest is not None else None,
                              **({"coverage": coverage} if coverage else {})})


async def _session_json(request: web.Request, name: str, missing_code: str, missing: str) -> web.Response:
    """A JSON object the finaliser (or speech recognition) stored beside the media."""
    sid = _sid(request)
    token = await _access(request, "view", target=sid)
    await _entry(request, sid)
    try:
        data = json.loads(await _archive(request).objects.get_bytes(session_prefix(sid) + name))
    except ObjectNotFound as exc:
        raise NotFound(missing, code=missing_code) from exc
    await _audit(request, token, "view", target=sid, file=name)
    return web.json_response(data)


@routes.get("/v1/recordings/{sid}/timeline")
async def timeline(request: web.Request) -> web.Response:
    return await _session_json(request, "timeline.json", "timeline_not_found", "this recording has no timeline yet")


@routes.get("/v1/recordings/{sid}/quality")
async def quality(request: web.Request) -> web.Response:
    return await _session_json(request, "quality.json", "quality_not_found", "this recording has no quality report")


async def _transcript(request: web.Request, action: str, roles: tuple[str, ...] = ARCHIVE_ROLES,
                      ) -> tuple[AccessToken, str, dict[str, Any]]:
    sid = _sid(request)
    token = await _access(request, action, target=sid, roles=roles)
    await _entry(request, sid)
    try:
        data = json.loads(await _archive(request).objects.get_bytes(session_prefix(sid) + TRANSCRIPT_NAME))
    except ObjectNotFound as exc:
        raise NotFound("this recording has no transcript", code="transcript_not_found") from exc
    return token, sid, data


@routes.get("/v1/recordings/{sid}/transcript")
async def transcript(request: web.Request) -> web.Response:
    """The masked transcript; sealed originals stay on the server."""
    token, sid, data = await _transcript(request, "view")
    await _audit(request, token, "view", target=sid, file=TRANSCRIPT_NAME)
    return web.json_response(public_transcript(data))


@routes.get("/v1/recordings/{sid}/transcript.vtt")
async def transcript_vtt(request: web.Request) -> web.Response:
    token, sid, data = await _transcript(request, "download")
    await _audit(request, token, "download", target=sid, file="transcript.vtt")
    return web.Response(text=to_vtt(data), content_type="text/vtt", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{sid}.vtt"'})


@routes.post("/v1/recordings/{sid}/transcript/reveal")
async def transcript_reveal(request: web.Request) -> web.Response:
    """Compliance opens the masked personal numbers, with a reason; the audit log keeps both."""
    sid = _sid(request)
    token = await _access(request, "reveal", target=sid, roles=("compliance",))
    body = await json_body(request)
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
        raise BadRequest("a reveal needs a reason (1-500 characters)", code="reason_required", field="reason")
    _, _, data = await _transcript(request, "reveal", roles=("compliance",))
    try:
        sealed = json.loads(await _archive(request).objects.get_bytes(session_prefix(sid) + SEALED_TRANSCRIPT)).get("lines", {})
    except ObjectNotFound:
        sealed = {}
    sealer = Sealer(_archive(request).secret)
    out = public_transcript(data)
    revealed = 0
    for i, line in enumerate(out["lines"]):
        original = sealed.get(str(i))
        if original:
            try:
                line["revealed"] = sealer.open(original, sid)
                revealed += 1
            except SealError:
                line["revealed_error"] = "sealed_text_invalid"
    await _audit(request, token, "reveal", target=sid, file=TRANSCRIPT_NAME,
                 details={"reason": reason.strip(), "lines": revealed})
    return web.json_response(out)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or (not match[1] and not match[2]):
        return None
    if match[1]:
        start = int(match[1])
        end = min(int(match[2]), size - 1) if match[2] else size - 1
    else:
        start, end = max(0, size - int(match[2])), size - 1
    return (start, end) if start <= end < size else None


@routes.get("/v1/recordings/{sid}/files/{name:.+}")
async def file(request: web.Request) -> web.StreamResponse:
    sid = _sid(request)
    name = request.match_info["name"]
    download = request.query.get("download") in ("1", "true")
    action = "download" if download else "play"
    token = await _access(request, action, target=sid)
    archive = _archive(request)
    await _entry(request, sid)
    if ".." in name.split("/") or name.startswith("/"):
        raise BadRequest("invalid file name", code="invalid_file_name")
    if name.startswith(SEALED_PREFIX):
        raise Forbidden("personal data opens only through the audited reveal", code="sealed_file")
    key = session_prefix(sid) + name
    info = await archive.objects.stat(key)
    if info is None:
        raise NotFound("no such file in this recording", code="file_not_found")
    size = info.size
    header = request.headers.get("Range")
    span = _parse_range(header, size) if header else None
    if header and span is None:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    start, end = span or (0, size - 1)
    if download or start == 0:  # one entry per playback, not one per range request
        await _audit(request, token, action, target=sid, file=name, details={"range": header} if header else None)
    response = web.StreamResponse(status=206 if span else 200)
    response.content_type = content_type(name)
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Cache-Control"] = "private, no-store"
    response.content_length = end - start + 1 if size else 0
    if span:
        response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if download:
        response.headers["Content-Disposition"] = f'attachment; filename="{sid}-{name.replace("/", "_")}"'
    await response.prepare(request)
    position = start
    while size and position <= end:
        chunk = await archive.objects.read_range(key, position, min(CHUNK, end - position + 1))
        if not chunk:
            break
        await response.write(chunk)
        position += len(chunk)
    await response.write_eof()
    return response


@routes.get("/v1/recordings/{sid}/export")
async def export(request: web.Request) -> web.StreamResponse:
    """Every file of the session in one zip (stored, not compressed: media is compressed)."""
    sid = _sid(request)
    token = await _access(request, "export", target=sid)
    archive = _archive(request)
    await _entry(request, sid)
    prefix = session_prefix(sid)
    objects = [o async for o in archive.objects.list(prefix) if not o.key[len(prefix):].startswith(SEALED_PREFIX)]
    if not objects:
        raise NotFound("this recording has no files", code="file_not_found")
    await _audit(request, token, "export", target=sid, details={"files": len(objects)})
    response = web.StreamResponse()
    response.content_type = "application/zip"
    response.headers["Content-Disposition"] = f'attachment; filename="{sid}.zip"'
    await response.prepare(request)
    writer = _ZipStream(response)
    with zipfile.ZipFile(writer, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as bundle:
        for obj in objects:
            with bundle.open(f"{sid}/{obj.key[len(prefix):]}", "w", force_zip64=obj.size > 1 << 31) as out:
                position = 0
                while position < obj.size:
                    chunk = await archive.objects.read_range(obj.key, position, CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    position += len(chunk)
                    await writer.drain()
    await writer.drain()
    await response.write_eof()
    return response


class _ZipStream:
    """A write-only file for zipfile that hands bytes to an HTTP response."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self._buffer = bytearray()
        self._position = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    async def drain(self) -> None:
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            await self._response.write(data)


@routes.put("/v1/recordings/{sid}/legal-hold")
async def legal_hold(request: web.Request) -> web.Response:
    sid = _sid(request)
    token = await _access(request, "legal_hold", target=sid, roles=("compliance",))
    body = await json_body(request)
    hold, reason = body.get("hold"), body.get("reason", "")
    if not isinstance(hold, bool):
        raise BadRequest("hold is true or false", code="invalid_message", field="hold")
    if not isinstance(reason, str) or len(reason) > 500 or (hold and not reason.strip()):
        raise BadRequest("a hold needs a reason (at most 500 characters)", code="invalid_message", field="reason")
    archive = _archive(request)
    entry = await _entry(request, sid)
    if entry.status == "deleted":
        raise Conflict("this recording was deleted", code="recording_deleted")
    await archive.set_hold(sid, hold, reason, token.subject)
    await _audit(request, token, "legal_hold", target=sid, details={"hold": hold, "reason": reason})
    return web.json_response((await _entry(request, sid)).to_json())


@routes.delete("/v1/recordings/{sid}")
async def delete(request: web.Request) -> web.Response:
    sid = _sid(request)
    token = await _access(request, "delete", target=sid, roles=("compliance",))
    archive = _archive(request)
    entry = await _entry(request, sid)
    if entry.legal_hold or await archive.held_in_store(sid):
        await archive.audit.append("delete", subject=token.subject, role=token.role, name=token.name, target=sid,
                                   outcome="denied", details={"code": "legal_hold"}, **_where(request))
        raise Conflict("this recording is under legal hold", code="legal_hold")
    deleted = await archive.delete_session(sid, by=token.subject, reason="compliance request")
    await _audit(request, token, "delete", target=sid, details={"objects": deleted})
    return web.json_response({"session_id": sid, "deleted_objects": deleted})


@routes.post("/v1/recordings/{sid}/evaluations")
async def evaluate(request: web.Request) -> web.Response:
    sid = _sid(request)
    token = await _access(request, "evaluate", target=sid)
    body = await json_body(request)
    scores, comments = body.get("scores"), body.get("comments", "")
    if not isinstance(scores, dict) or set(scores) != set(EVALUATION_ITEMS) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 5 for v in scores.values()
    ):
        raise BadRequest(f"scores: each of {', '.join(EVALUATION_ITEMS)} from 0 to 5",
                         code="invalid_message", field="scores")
    if not isinstance(comments, str) or len(comments) > 4000:
        raise BadRequest("comments: at most 4000 characters", code="invalid_message", field="comments")
    archive = _archive(request)
    entry = await _entry(request, sid)
    if entry.status == "deleted":
        raise Conflict("this recording was deleted", code="recording_deleted")
    evaluation = {"id": f"EV_{secrets.token_urlsafe(8)}", "by": token.subject, "by_name": token.name,
                  "at": round(time.time(), 3), "scores": scores, "comments": comments,
                  "total": sum(scores.values()), "max": 5 * len(EVALUATION_ITEMS)}
    await archive.objects.put_bytes(f"{session_prefix(sid)}evaluations/{evaluation['id']}.json",
                                    json.dumps(evaluation, ensure_ascii=False).encode(), content_type="application/json")
    await publish_op(archive.state, {"op": "evaluation", "session_id": sid, "evaluation": evaluation})
    await archive.feeder.sync()
    await _audit(request, token, "evaluate", target=sid, details={"evaluation": evaluation["id"], "total": evaluation["total"]})
    return web.json_response(evaluation, status=201)


@routes.get("/v1/audit")
async def audit_entries(request: web.Request) -> web.Response:
    token = await _access(request, "audit_view", roles=("compliance",))
    from .audit import read_entries

    query = request.query
    try:
        limit = min(500, max(1, int(query.get("limit", "100"))))
    except ValueError as exc:
        raise BadRequest("limit is a number", code="invalid_query", field="limit") from exc
    archive = _archive(request)
    entries = await asyncio.to_thread(read_entries, archive.audit_dir, action=query.get("action") or None, target=query.get("target") or None,
                           actor=query.get("actor") or None, limit=limit)
    await _audit(request, token, "audit_view", details={"query": dict(query)})
    return web.json_response({"entries": [e.to_json() if hasattr(e, "to_json") else e for e in entries]})


@routes.post("/v1/recordings/{sid}/segments")
async def device_segment(request: web.Request) -> web.Response:
    """A segment a field device recorded while its link was down, with its events.

    multipart/form-data: `meta` (JSON: kind, codec, start_wall, participant_id, label,
    events[]) and `file` (the WebM/Matroska segment). The token is the device's own,
    for the session's room.
    """
    sid = _sid(request)
    authenticate(request)
    archive = _archive(request)
    entry = await _entry(request, sid)
    token = _device_token(request, entry.room)
    result = await archive.ingest_segment(sid, entry.room, token.subject, request)
    return web.json_response(result, status=201)


def _device_token(request: web.Request, room: str) -> AccessToken:
    token = authenticate(request)
    token.require_room(room)
    token.require("publish")
    if token.role not in ("officer", "service", "reviewer", "agent"):
        raise Forbidden("segments come from field devices (officer or service tokens)", code="role_forbidden")
    return token


@routes.post("/v1/recordings/{sid}/uploads")
async def create_upload(request: web.Request) -> web.Response:
    """Declares a device segment to send in chunks: meta, size and SHA-256 (uploads.py)."""
    sid = _sid(request)
    archive = _archive(request)
    entry = await _entry(request, sid)
    token = _device_token(request, entry.room)
    body = await json_body(request)
    from .archive import device_meta

    meta = device_meta({k: v for k, v in body.items() if k not in ("size", "sha256")})
    if len(json.dumps(meta)) > 256 * 1024:
        raise PayloadTooLarge("meta is too large", code="message_too_large")
    archive.uploads.sweep()
    upload = archive.uploads.create(sid, entry.room, token.subject, meta, body.get("size"), body.get("sha256"))
    upload.meta["sha256"] = upload.sha256
    return web.json_response({**upload.public(), "chunk_max": archive.uploads.settings.chunk_max_bytes}, status=201)


@routes.get("/v1/recordings/{sid}/uploads/{upload}")
async def upload_status(request: web.Request) -> web.Response:
    sid = _sid(request)
    authenticate(request)
    upload = _archive(request).uploads.get(sid, request.match_info["upload"])
    _device_token(request, upload.room)
    return web.json_response(upload.public())


@routes.patch("/v1/recordings/{sid}/uploads/{upload}")
async def upload_chunk(request: web.Request) -> web.Response:
    """Appends a chunk at Upload-Offset; the last one verifies the digest and adds the segment."""
    sid = _sid(request)
    authenticate(request)
    archive = _archive(request)
    upload = archive.uploads.get(sid, request.match_info["upload"])
    _device_token(request, upload.room)
    raw = request.headers.get("Upload-Offset", "")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
        raise BadRequest("the Upload-Offset header is the byte offset of this chunk", code="invalid_message",
                         field="Upload-Offset")
    upload = await archive.uploads.append(upload, int(raw), request.content)
    if upload.offset < upload.size:
        return web.json_response(upload.public())

    async def ingest(data: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return await archive.ingest_file(sid, upload.room, upload.device, meta, data)

    done = await archive.uploads.complete(upload, ingest)
    return web.json_response({**done.public(), **(done.result or {})}, status=201)
