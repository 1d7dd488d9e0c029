"""The archive a signalling process serves: index, audit log, object store, retention.

The object store holds the truth (files, manifests, legal-hold markers); the index is
a searchable copy every process keeps up to date from the replication log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ..config import Config, RecordingSettings, data_dir
from ..errors import BadRequest, PayloadTooLarge
from ..state import StateStore, StateUnavailable
from .audit import AuditLog
from .finalize import Finalizer
from .index import IndexFeeder, RecordingIndex, publish_op
from .manifest import MANIFEST_NAME, manifest_mac, session_prefix
from .objects import ObjectNotFound, ObjectStore
from .segments import write_json_atomic
from .uploads import UploadStore

log = logging.getLogger("teller.recording")

HOLD_MARKER = "legal_hold.json"
MAX_SEGMENT_BYTES = 512 * 1024 * 1024
MAX_META_BYTES = 256 * 1024
RETENTION_LEASE = "recording-retention"


class Archive:
    def __init__(self, config: Config, state: StateStore, objects: ObjectStore, finalizer: Finalizer, secret: str,
                 *, writer_id: str | None = None) -> None:
        self.config = config
        self.settings: RecordingSettings = config.recording
        self.state = state
        self.objects = objects
        self.finalizer = finalizer
        self.secret = secret
        root = data_dir(config)
        self.index = RecordingIndex(Path(self.settings.index_path) if self.settings.index_path else root / "recordings.sqlite3")
        self.feeder = IndexFeeder(state, self.index, persist_cursor=config.state.backend != "memory")
        self.audit_dir = Path(self.settings.audit_dir) if self.settings.audit_dir else root / "audit"
        self.audit = AuditLog(self.audit_dir, writer_id or f"{socket.gethostname()}-{config.server.port}", secret)
        self.uploads = UploadStore(root / "uploads", config.field)
        self._owner = f"retention-{secrets.token_hex(6)}"
        self._sweeper: asyncio.Task[None] | None = None
        self.swept = 0

    async def start(self) -> None:
        await self.feeder.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="recording-retention")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.feeder.close()
        await self.index.close()
        self.audit.close()

    # -- manifests and holds ------------------------------------------------------------

    async def manifest(self, sid: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(await self.objects.get_bytes(session_prefix(sid) + MANIFEST_NAME))
        except ObjectNotFound:
            return None
        return data

    def manifest_ok(self, manifest: dict[str, Any]) -> bool:
        return hmac.compare_digest(str(manifest.get("mac", "")), manifest_mac(manifest, self.secret))

    async def held_in_store(self, sid: str) -> bool:
        try:
            marker = json.loads(await self.objects.get_bytes(session_prefix(sid) + HOLD_MARKER))
        except ObjectNotFound:
            return False
        return bool(marker.get("hold"))

    async def set_hold(self, sid: str, hold: bool, reason: str, by: str) -> None:
        """The marker in the store is what the sweeper trusts; the index follows."""
        marker = {"hold": hold, "reason": reason, "by": by, "at": round(time.time(), 3)}
        await self.objects.put_bytes(session_prefix(sid) + HOLD_MARKER, json.dumps(marker, ensure_ascii=False).encode(),
                                     content_type="application/json")
        await publish_op(self.state, {"op": "hold", "session_id": sid, **marker})
        await self.feeder.sync()

    async def delete_session(self, sid: str, *, by: str, reason: str) -> int:
        prefix = session_prefix(sid)
        keys = [o.key async for o in self.objects.list(prefix)]
        for key in keys:
            await self.objects.delete(key)
        await publish_op(self.state, {"op": "deleted", "session_id": sid, "at": round(time.time(), 3)})
        await self.feeder.sync()
        log.info("recording deleted", extra={"session": sid, "by": by, "reason": reason, "objects": len(keys)})
        return len(keys)

    # -- retention ----------------------------------------------------------------------

    async def sweep(self, now: float | None = None) -> list[str]:
        """Deletes every expired session that is not on legal hold; returns their ids."""
        now = time.time() if now is None else now
        await self.feeder.sync()
        deleted: list[str] = []
        while True:
            batch = [e for e in await self.index.expired(now, 100) if e.session_id not in deleted]
            if not batch:
                break
            for entry in batch:
                if await self.held_in_store(entry.session_id):
                    # The index missed a hold: put it right rather than delete evidence.
                    await publish_op(self.state, {"op": "hold", "session_id": entry.session_id, "hold": True,
                                                  "reason": "found in store", "by": "retention", "at": now})
                    await self.feeder.sync()
                    continue
                count = await self.delete_session(entry.session_id, by="retention", reason="retention expired")
                await self.audit.append("delete", subject="retention", role="service", target=entry.session_id,
                                        details={"reason": "retention expired", "objects": count,
                                                 "retention_until": entry.retention_until})
                deleted.append(entry.session_id)
            if len(batch) < 100:
                break
        self.swept += len(deleted)
        return deleted

    async def _sweep_loop(self) -> None:
        interval = self.settings.retention_sweep_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.state.try_lease(RETENTION_LEASE, self._owner, interval * 2):
                    await self.sweep()
            except StateUnavailable:
                pass
            except Exception:
                log.exception("retention sweep failed")

    # -- field devices ------------------------------------------------------------------

    async def ingest_segment(self, sid: str, room: str, device: str, request: web.Request) -> dict[str, Any]:
        """Writes a device segment, sent whole as multipart, into the spool as one more part."""
        if not request.content_type.startswith("multipart/"):
            raise BadRequest("send multipart/form-data with meta and file", code="invalid_message")
        reader = await request.multipart()
        meta: dict[str, Any] | None = None
        part_id = f"device-{secrets.token_hex(4)}"
        media: Path | None = None
        try:
            while True:
                field = await reader.next()
                if field is None:
                    break
                if field.name == "meta":  # type: ignore[union-attr]
                    raw = await field.read(decode=False)  # type: ignore[union-attr]
                    if len(raw) > MAX_META_BYTES:
                        raise PayloadTooLarge("meta is too large", code="message_too_large")
                    meta = device_meta(raw)
                elif field.name == "file":  # type: ignore[union-attr]
                    if meta is None:
                        raise BadRequest("meta must come before file", code="invalid_message", field="meta")
                    media = self._segment_path(sid, part_id, meta)
                    await _save(field, media)  # type: ignore[arg-type]
            if meta is None or media is None:
                raise BadRequest("meta and file are required", code="invalid_message")
            return await self._add_segment(sid, room, device, meta, part_id, media)
        except BaseException:
            if media is not None:
                media.unlink(missing_ok=True)
            raise

    async def ingest_file(self, sid: str, room: str, device: str, meta: dict[str, Any], path: Path) -> dict[str, Any]:
        """A finished resumable upload (checked meta, verified bytes) joins the session."""
        part_id = f"device-{secrets.token_hex(4)}"
        media = self._segment_path(sid, part_id, meta)
        try:
            await asyncio.to_thread(path.replace, media)
            return await self._add_segment(sid, room, device, meta, part_id, media)
        except BaseException:
            media.unlink(missing_ok=True)
            raise

    def _segment_path(self, sid: str, part_id: str, meta: dict[str, Any]) -> Path:
        tracks = self.finalizer.spool / sid / "tracks" / part_id
        tracks.mkdir(parents=True, exist_ok=True)
        suffix = ".webm" if meta["codec"].lower() in ("vp8", "vp9", "opus") else ".mkv"
        return tracks / f"{meta['participant_id']}-{part_id}-0{suffix}"

    async def _add_segment(self, sid: str, room: str, device: str, meta: dict[str, Any], part_id: str,
                           media: Path) -> dict[str, Any]:
        from .finalize import media_probe

        directory = self.finalizer.spool / sid
        duration, _ = await asyncio.to_thread(media_probe, media)
        if duration <= 0:
            raise BadRequest("the file is not a playable WebM/Matroska segment", code="invalid_media", field="file")
        start = float(meta["start_wall"])
        track = {"session_id": sid, "room": room, "node_id": part_id, "participant_id": meta["participant_id"],
                 "identity": device, "name": meta.get("label") or device, "role": "officer",
                 "track_id": part_id, "kind": meta["kind"], "source": "device", "codec": meta["codec"], "clock_rate": 0}
        write_json_atomic(media.with_name(media.name + ".json"), {
            "path": media.name, "index": 0, "start_wall": start, "end_wall": start + duration, "frames": 1,
            "bytes": media.stat().st_size, "closed": True, "track": track, "device": True})
        events = [{"type": "device_segment", "ts": start, "participant_id": meta["participant_id"], "kind": meta["kind"],
                   "duration_s": round(duration, 3), "end": round(start + duration, 3), "device": device,
                   **({"sha256": meta["sha256"]} if meta.get("sha256") else {})}, *meta.get("events", [])]
        text = "".join(json.dumps(event, ensure_ascii=False) + "\n" for event in events)
        await asyncio.to_thread((directory / f"timeline-{part_id}.jsonl").write_text, text, "utf-8")
        write_json_atomic(directory / f"part-{part_id}.json", {
            "session_id": sid, "room": room, "node_id": part_id, "started_at": start,
            "ended_at": start + duration, "end": "device", "metadata": {}, "info": None})
        self.finalizer.enqueue(sid, None)
        log.info("device segment added", extra={"session": sid, "part": part_id, "duration_s": round(duration, 3)})
        return {"session_id": sid, "part": part_id, "duration_s": round(duration, 3)}


def device_meta(raw: bytes | dict[str, Any]) -> dict[str, Any]:
    """What a device says of its segment, checked; `raw` is JSON text or an object."""
    if isinstance(raw, dict):
        meta: Any = dict(raw)
    else:
        try:
            meta = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest("meta is not JSON", code="invalid_json", field="meta") from exc
    if not isinstance(meta, dict):
        raise BadRequest("meta is a JSON object", code="invalid_message", field="meta")
    if meta.get("kind") not in ("audio", "video"):
        raise BadRequest("meta.kind is audio or video", code="invalid_message", field="kind")
    if meta.get("codec") not in ("vp8", "vp9", "h264", "opus", "VP8", "VP9", "H264", "opus"):
        raise BadRequest("meta.codec is vp8, vp9, h264 or opus", code="invalid_message", field="codec")
    start = meta.get("start_wall")
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not 1e9 < start < time.time() + 300:
        raise BadRequest("meta.start_wall is the segment's start, epoch seconds", code="invalid_message", field="start_wall")
    participant = meta.get("participant_id", "device")
    if not isinstance(participant, str) or not participant.replace("_", "").replace("-", "").isalnum() or len(participant) > 64:
        raise BadRequest("meta.participant_id is letters, digits, '_' or '-'", code="invalid_message", field="participant_id")
    meta["participant_id"] = participant
    label = meta.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > 200):
        raise BadRequest("meta.label is text of at most 200 characters", code="invalid_message", field="label")
    events = meta.get("events", [])
    if not isinstance(events, list) or len(events) > 1000 or not all(
        isinstance(e, dict) and isinstance(e.get("type"), str) and isinstance(e.get("ts"), (int, float))
        and not isinstance(e.get("ts"), bool) and math.isfinite(e["ts"]) for e in events
    ):
        raise BadRequest("meta.events is a list of {type, ts, ...}", code="invalid_message", field="events")
    meta["events"] = [{**e, "source": "device"} for e in events]
    return meta


async def _save(field: Any, path: Path) -> None:
    size = 0
    with open(path, "wb") as out:
        while True:
            chunk = await field.read_chunk(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_SEGMENT_BYTES:
                raise PayloadTooLarge("the segment is too large", code="message_too_large")
            await asyncio.to_thread(out.write, chunk)


ARCHIVE = web.AppKey("archive", Archive)


def install_archive(app: web.Application, state: StateStore, config: Config, secret: str) -> Archive:
    """The archive API. It shares the app's object store and finaliser when this process
    records too (embedded), else brings its own for segments uploaded by field devices."""
    from .rest import routes
    from .service import FINALIZER, OBJECTS, spool_dir

    if OBJECTS not in app:
        from .objects.factory import open_object_store

        app[OBJECTS] = open_object_store(config)
    objects = app[OBJECTS]
    own_finalizer = FINALIZER not in app
    finalizer = app[FINALIZER] if not own_finalizer else Finalizer(
        config, objects, state, spool_dir(config).with_name(spool_dir(config).name + "-ingest"), node_id=f"signal-{secrets.token_hex(4)}", secret=secret)
    archive = Archive(config, state, objects, finalizer, secret)
    app[ARCHIVE] = archive
    app.add_routes(routes)

    async def start(app: web.Application) -> None:
        if own_finalizer:
            await finalizer.start()
        await archive.start()

    async def stop(app: web.Application) -> None:
        await archive.close()
        if own_finalizer:
            await finalizer.close()
            await objects.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return archive
