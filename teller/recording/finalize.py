"""After a session: seal its segments, build the composite, upload, write the manifest.

The spool directory is the durable queue: a part stays on local disk until the object
store has confirmed every file of it, and a process that starts finds whatever an
earlier one left (a crash, a shutdown, a store outage) and finishes it. All of this
runs in the background; the composite is encoded in a separate process at low
priority, so a slow or failing finalisation never touches a live call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import multiprocessing
import shutil
import time
from pathlib import Path
from typing import Any

import av

from .. import logs
from ..config import Config
from ..quality.report import build_report as build_quality_report
from ..speech.transcript import (
    SEALED_PREFIX,
    SEALED_TRANSCRIPT,
    build_transcript,
    sealed_lines,
    strip_sealed,
    to_vtt,
)
from ..speech.transcript import public as public_transcript
from ..state import StateStore, StateUnavailable
from .composite import Clip, CompositeOptions, build_composite_at_low_priority
from .coverage import coverage, gap_events
from .index import publish_op
from .manifest import (
    MANIFEST_NAME,
    SESSION_ID,
    build_manifest,
    content_type,
    session_prefix,
    sha256_file,
)
from .objects import ObjectStore
from .recorder import wants_recording
from .segments import write_json_atomic
from .session_info import lookup_session

log = logging.getLogger("teller.recording")

MEDIA_SUFFIXES = (".webm", ".mkv")
# How long shutdown waits for the finaliser's worker to stop.
WORKER_STOP_S = 5.0
QUALITY_NAME = "quality.json"
TRANSCRIPT_NAME = "transcript.json"
TRANSCRIPT_VTT = "transcript.vtt"
# Timeline event types that raise a search flag on the session.
FLAG_EVENTS = {
    "quality_alert": "poor_quality",
    "risk_keyword": "risk_keyword",
    "content_risk": "risk_keyword",
    "fraud_risk": "risk_keyword",
    "identity_override": "identity_override",
}


def file_kind(name: str) -> str:
    if name == "composite.mp4":
        return "composite"
    if name == MANIFEST_NAME:
        return "manifest"
    if name.startswith("tracks/"):
        return "track" if name.endswith(MEDIA_SUFFIXES) else "track_meta"
    if name.startswith("timeline"):
        return "timeline"
    if name == QUALITY_NAME:
        return "quality"
    if name.startswith(SEALED_PREFIX):
        return "sealed"
    if name.startswith("part-"):
        return "part"
    if name.startswith("transcript"):
        return "transcript"
    return "evidence"


def media_probe(path: Path) -> tuple[float, int]:
    """Seconds and packets of media in a segment, read from its packets (a file a crash
    left has no duration in its header)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams[0]
            last = first = None
            packets = 0
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                packets += 1
                first = packet.pts if first is None else first
                last = packet.pts + (packet.duration or 0)
            if first is None or last is None or stream.time_base is None:
                return 0.0, packets
            return float((last - first) * stream.time_base), packets
    except (av.FFmpegError, OSError, IndexError):
        return 0.0, 0


class Finalizer:
    def __init__(self, config: Config, objects: ObjectStore, state: StateStore, spool: Path, *,
                 node_id: str, secret: str, retention_days: dict[str, float] | None = None) -> None:
        self.config = config
        self.settings = config.recording
        self.objects = objects
        self.state = state
        self.spool = spool
        self.node_id = node_id
        self._secret = secret
        self._retention = retention_days or {}
        self._queue: asyncio.Queue[tuple[str, bool | None, int] | None] = asyncio.Queue()
        self._queued: set[str] = set()
        self._worker: asyncio.Task[None] | None = None
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self.finalized = 0
        self.failures = 0
        self.last_result: dict[str, Any] = {}
        from ..signaling.webhooks import (
            Webhooks,  # not at import: composite workers import this module
        )

        self.webhooks = Webhooks(config.webhooks)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        await self.webhooks.start()
        self._worker = asyncio.create_task(self._work(), name="recording-finalizer")
        for directory in sorted(self.spool.iterdir()):
            if directory.is_dir() and SESSION_ID.match(directory.name):  # anything else is not ours
                self.enqueue(directory.name, None)

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._worker is not None:
            self._worker.cancel()
            # The Redis client can swallow a cancellation that lands inside its call (as
            # index.py says); the worker then waits on its queue for ever. The sentinel
            # wakes it to stop, and shutdown never waits without bound.
            self._queue.put_nowait(None)
            done, _ = await asyncio.wait({self._worker}, timeout=WORKER_STOP_S)
            if done:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    self._worker.result()
            else:
                log.warning("the finaliser did not stop; left behind")
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        await self.webhooks.close()

    def enqueue(self, sid: str, final: bool | None, attempt: int = 0) -> None:
        key = f"{sid}:{final}"
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait((sid, final, attempt))

    async def idle(self) -> None:
        """Waits until nothing is queued or running (tests and `teller recording finalize`)."""
        await self._queue.join()

    # -- the recorder's callbacks -------------------------------------------------------

    async def part_started(self, sid: str, room: str, started_at: float) -> None:
        entry = {"session_id": sid, "room": room, "started_at": started_at, "status": "recording",
                 "node_id": self.node_id, "duration_s": 0.0, "flags": [], "size_bytes": 0,
                 "retention_until": started_at + self.settings.retention_days * 86400}
        with contextlib.suppress(StateUnavailable):
            await publish_op(self.state, {"op": "upsert", "entry": entry})

    async def part_ended(self, sid: str, node_id: str, final: bool) -> None:
        self.enqueue(sid, final)

    # -- the worker ---------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            sid, final, attempt = item
            self._queued.discard(f"{sid}:{final}")
            try:
                with logs.bind(session=sid):
                    await self._process(sid, final, last=attempt + 1 >= self.settings.finalize_max_attempts)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                with logs.bind(session=sid):
                    log.warning("finalisation failed; will retry", extra={"attempt": attempt + 1, "error": repr(exc)},
                                exc_info=not isinstance(exc, (OSError, StateUnavailable)))
                if attempt + 1 < self.settings.finalize_max_attempts:
                    delay = self.settings.finalize_retry_s * (2 ** attempt)
                    self._later(delay, sid, final, attempt + 1)
                else:
                    self.webhooks.send("recording.failed", {"session_id": sid, "error": repr(exc), "attempts": attempt + 1})
                    with contextlib.suppress(Exception):
                        await publish_op(self.state, {"op": "upsert", "entry": {"session_id": sid, "status": "failed"}})
            finally:
                self._queue.task_done()

    def _later(self, delay: float, sid: str, final: bool | None, attempt: int) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(timer)
            self.enqueue(sid, final, attempt)

        timer = loop.call_later(delay, fire)
        self._timers.add(timer)

    async def _process(self, sid: str, final: bool | None, *, last: bool) -> None:
        directory = self.spool / sid
        if not directory.is_dir():
            return
        parts = self._read_parts(directory)
        if any(p.get("node_id") == self.node_id and "ended_at" not in p for p in parts):
            return  # still recording here: this node ends that part itself
        info = next((p["info"] for p in reversed(parts) if p.get("info")), None)
        room = parts[0]["room"] if parts else ""
        if info is None and room:
            with contextlib.suppress(Exception):
                info = await lookup_session(self.state, room)
        business = (info or {}).get("business") or next((p["metadata"].get("business") for p in parts if p.get("metadata")), None)
        if self.settings.enabled and not wants_recording(self.settings, business):
            await asyncio.to_thread(shutil.rmtree, directory, True)
            return
        await asyncio.to_thread(self._seal_tracks, directory)
        if final is None:
            final = not await self._live_elsewhere(room, sid)
        if not final:
            await self._upload_dir(sid, directory)
            if await self.objects.stat(session_prefix(sid) + MANIFEST_NAME) is None:
                await asyncio.to_thread(_remove_empty, directory)
                return
            directory.mkdir(parents=True, exist_ok=True)  # a late part: finalise the session again
        await self._finalize(sid, directory, parts, info or {}, business, last=last)

    @staticmethod
    def _read_parts(directory: Path) -> list[dict[str, Any]]:
        parts = []
        for path in sorted(directory.glob("part-*.json")):
            with contextlib.suppress(OSError, ValueError):
                parts.append(json.loads(path.read_text("utf-8")))
        return sorted(parts, key=lambda p: p.get("started_at", 0))

    @staticmethod
    def _seal_tracks(directory: Path) -> None:
        """Segments a crash left open get their end from the media actually written."""
        for meta_path in directory.glob("tracks/*/*.json"):
            try:
                meta = json.loads(meta_path.read_text("utf-8"))
            except (OSError, ValueError):
                continue
            if meta.get("closed"):
                continue
            media = meta_path.with_name(meta["path"])
            seconds, packets = media_probe(media) if media.exists() else (0.0, 0)
            meta["end_wall"] = round(meta["start_wall"] + seconds, 4)
            meta["frames"] = packets
            meta["bytes"] = media.stat().st_size if media.exists() else 0
            meta["closed"] = True
            meta["recovered"] = True
            write_json_atomic(meta_path, meta)

    async def _live_elsewhere(self, room: str, sid: str) -> bool:
        with contextlib.suppress(Exception):
            record = await self.state.get_room(room)
            return bool(record and record.get("sid") == sid)
        return False

    async def _upload_dir(self, sid: str, directory: Path, skip: tuple[str, ...] = (".remote",)) -> dict[str, dict[str, Any]]:
        """Uploads every file; each local copy is removed only after the store confirmed it."""
        uploaded: dict[str, dict[str, Any]] = {}
        files = [p for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.endswith((".tmp", ".upload.json"))]
        for path in files:
            name = path.relative_to(directory).as_posix()
            if name.split("/")[0] in skip:
                continue
            digest = await asyncio.to_thread(sha256_file, path)
            size = path.stat().st_size
            stored = await self.objects.put_file(session_prefix(sid) + name, path, sha256=digest,
                                                 content_type=content_type(name))
            if stored.size != size or (stored.sha256 is not None and stored.sha256 != digest):
                raise OSError(f"the store did not confirm {name}: size {stored.size}/{size}")
            uploaded[name] = {"size": size, "sha256": digest, "encrypted": stored.encrypted}
            await asyncio.to_thread(path.unlink)
        return uploaded

    async def _finalize(self, sid: str, directory: Path, parts: list[dict[str, Any]], info: dict[str, Any],
                        business: str | None, *, last: bool) -> None:
        started = time.monotonic()
        prefix = session_prefix(sid)
        remote_dir = directory / ".remote"
        remote = {o.key[len(prefix):]: o async for o in self.objects.list(prefix)}
        # Track metadata and timelines of other nodes' parts come from the store.
        for name in remote:
            local = directory / name
            wanted = name.startswith(("tracks/", "timeline-", "part-")) and not local.exists()
            if wanted and name != "timeline.json":
                target = remote_dir / name
                if not target.exists():
                    await self.objects.get_file(prefix + name, target)
        roots = [directory, remote_dir]
        parts = self._read_parts(directory) + self._read_parts(remote_dir)
        clips, tracks = self._clips(roots)
        starts = [c.start_wall for c in clips] + [p.get("started_at", 0) for p in parts if p.get("started_at")]
        started_at = min(starts) if starts else time.time()
        ends = [t["end_wall"] for t in tracks if t.get("end_wall")] + [p["ended_at"] for p in parts if p.get("ended_at")]
        ended_at = max(ends) if ends else started_at
        cover = coverage(tracks)
        events = await self._timeline(roots, info, started_at, gap_events(cover))
        write_json_atomic(directory / "timeline.json",
                          {"session_id": sid, "started_at": started_at, "events": [strip_sealed(e) for e in events]})
        quality = build_quality_report(sid, events)
        if quality is not None:
            write_json_atomic(directory / QUALITY_NAME, quality)
        transcript = build_transcript(sid, started_at, events)
        if transcript is not None:
            write_json_atomic(directory / TRANSCRIPT_NAME, public_transcript(transcript))
            (directory / TRANSCRIPT_VTT).write_text(to_vtt(transcript), "utf-8")
            sealed = sealed_lines(transcript)
            if sealed:
                (directory / SEALED_TRANSCRIPT).parent.mkdir(exist_ok=True)
                write_json_atomic(directory / SEALED_TRANSCRIPT, {"session_id": sid, "lines": sealed})

        composite_error = None
        if self.settings.composite and clips and not (directory / "composite.mp4").exists():
            try:
                await self._composite(sid, directory / "composite.mp4", clips, started_at)
            except Exception as exc:
                if not last:
                    raise
                composite_error = repr(exc)
                log.error("composite failed for good; originals are kept", extra={"error": composite_error})

        uploaded = await self._upload_dir(sid, directory)
        files = []
        async for obj in self.objects.list(prefix):
            name = obj.key[len(prefix):]
            if name == MANIFEST_NAME:
                continue
            known = uploaded.get(name)
            digest = known["sha256"] if known else obj.sha256
            if digest is None:
                stat = await self.objects.stat(obj.key)
                digest = stat.sha256 if stat else None
            entry: dict[str, Any] = {"key": obj.key, "name": name, "size": obj.size, "sha256": digest, "kind": file_kind(name)}
            track = next((t for t in tracks if t.get("name") == name), None)
            if track is not None:
                entry.update({k: track[k] for k in ("participant_id", "label", "track_kind", "start_offset_s") if k in track})
                entry["start_offset_s"] = round(track["start_wall"] - started_at, 3)
            files.append(entry)
        flags = sorted({FLAG_EVENTS[e["type"]] for e in events if e.get("type") in FLAG_EVENTS}
                       | ({"identity_override"} if any(e.get("override") for e in events if e.get("type") == "identity_check") else set()))
        retention_days = self._retention.get(business or "", self.settings.retention_days)
        session = {
            "session_id": sid, "room": parts[0]["room"] if parts else "", "started_at": round(started_at, 3),
            "ended_at": round(ended_at, 3), "duration_s": round(max(0.0, ended_at - started_at), 3),
            "business": business, "agent_id": info.get("agent_id"), "agent_name": info.get("agent_name"),
            "customer_id": info.get("customer_id"), "customer_name": info.get("customer_name"),
            "outcome": info.get("outcome"), "call_id": info.get("call_id"), "flags": flags,
            "nodes": sorted({p.get("node_id", "") for p in parts}),
            **({"coverage": cover} if cover else {}),
        }
        manifest = build_manifest(sid, files, session, self._secret)
        await self.objects.put_bytes(prefix + MANIFEST_NAME, json.dumps(manifest, ensure_ascii=False, indent=1).encode(),
                                     content_type="application/json")
        size = sum(f["size"] for f in files)
        entry = {
            **{k: v for k, v in session.items() if k != "nodes"},
            "status": "ready", "node_id": self.node_id, "size_bytes": size,
            "retention_until": round(ended_at + retention_days * 86400, 3),
            "composite": any(f["kind"] == "composite" for f in files),
            "tracks": sum(1 for f in files if f["kind"] == "track"),
            "extra": {"composite_error": composite_error} if composite_error else {},
        }
        await publish_op(self.state, {"op": "upsert", "entry": entry})
        self.webhooks.send("recording.ready", {k: entry[k] for k in (
            "session_id", "room", "call_id", "business", "started_at", "ended_at", "duration_s", "size_bytes",
            "tracks", "composite", "flags")})
        await asyncio.to_thread(shutil.rmtree, directory, True)
        self.finalized += 1
        self.last_result = {"session_id": sid, "seconds": round(time.monotonic() - started, 3), "files": len(files)}
        log.info("recording finalised", extra={"files": len(files), "bytes": size,
                                               "seconds": self.last_result["seconds"]})

    @staticmethod
    def _clips(roots: list[Path]) -> tuple[list[Clip], list[dict[str, Any]]]:
        clips: list[Clip] = []
        tracks: list[dict[str, Any]] = []
        seen: set[str] = set()
        for root in roots:
            for meta_path in sorted(root.glob("tracks/*/*.json")):
                try:
                    meta = json.loads(meta_path.read_text("utf-8"))
                except (OSError, ValueError):
                    continue
                media = meta_path.with_name(meta["path"])
                name = media.relative_to(root).as_posix()
                if name in seen or not media.exists() or not meta.get("frames", 1):
                    continue
                seen.add(name)
                track = meta.get("track", {})
                role = track.get("role") or ""
                label = " ".join(x for x in (role.capitalize(), track.get("name") or track.get("identity") or "") if x)
                tracks.append({"name": name, "participant_id": track.get("participant_id", ""), "label": label,
                               "track_kind": track.get("kind"), "start_wall": meta["start_wall"],
                               "end_wall": meta.get("end_wall"), "device": bool(meta.get("device")),
                               "gaps": meta.get("gaps") or []})
                clips.append(Clip(path=media, kind=str(track.get("kind")), participant_id=str(track.get("participant_id")),
                                  label=label, start_wall=float(meta["start_wall"])))
        return clips, tracks

    async def _timeline(self, roots: list[Path], info: dict[str, Any], started_at: float,
                        extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = list(extra or [])
        for root in roots:
            for path in sorted(root.glob("timeline-*.jsonl")):
                text = await asyncio.to_thread(path.read_text, "utf-8")
                for line in text.splitlines():
                    with contextlib.suppress(ValueError):
                        events.append(json.loads(line))
        call_id = info.get("call_id")
        if call_id:
            with contextlib.suppress(StateUnavailable):
                after = 0
                while True:
                    batch = await self.state.read_events(call_id, after, 500)
                    if not batch:
                        break
                    after += len(batch)
                    known = {(e.get("type"), e.get("ts")) for e in events}
                    events.extend(e for e in batch if (e.get("type"), e.get("ts")) not in known)
        events.sort(key=lambda e: float(e.get("ts") or 0))
        for seq, event in enumerate(events, 1):
            event["seq"] = seq
            event["t"] = round(max(0.0, float(event.get("ts") or started_at) - started_at), 3)
        return events

    async def _composite(self, sid: str, out: Path, clips: list[Clip], started_at: float) -> None:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        options = CompositeOptions(session_id=sid, layout=self.settings.composite_layout,
                                   height=self.settings.composite_height, fps=self.settings.composite_fps)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._pool, build_composite_at_low_priority, clips, out, options)
        log.info("composite built", extra={"duration_s": result.get("duration_s"), "encode_s": result.get("encode_seconds")})

    def stats(self) -> dict[str, Any]:
        return {"queued": self._queue.qsize(), "finalized": self.finalized, "failures": self.failures}


def _remove_empty(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()
    with contextlib.suppress(OSError):
        directory.rmdir()
