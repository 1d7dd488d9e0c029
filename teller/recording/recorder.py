"""The recorder: every session of a recorded business, from its first media.

It follows the node's session timeline rather than sitting in the forwarding path:
a `track_published` event attaches a TrackRecorder to that publication, the room's
close or move ends this node's part of the session. Every timeline event, and the
contact centre's call events for the room, are appended to a JSON-lines file beside
the media, line-buffered, so a crash keeps them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .. import logs
from ..config import RecordingSettings
from .segments import RecordingWorker, TrackMeta, TrackRecorder, write_json_atomic

if TYPE_CHECKING:
    from ..sfu.node import Node
    from ..sfu.room import Room

log = logging.getLogger("teller.recording")

MAX_EARLY_EVENTS = 200
# (room name, session id) -> what the contact centre knows of the session, if anything.
SessionLookup = Callable[[str, str], Awaitable[dict[str, Any] | None]]
PartStarted = Callable[[str, str, float], Awaitable[None]]
PartEnded = Callable[[str, str, bool], Awaitable[None]]


@dataclass
class SessionPart:
    """This node's share of one session (a room may move between nodes)."""

    sid: str
    room: str
    node_id: str
    directory: Path
    started_at: float
    metadata: dict[str, Any]
    tracks: dict[str, TrackRecorder] = field(default_factory=dict)
    timeline: IO[str] | None = None
    info: dict[str, Any] | None = None
    discarded: bool = False
    lookup: asyncio.Task[None] | None = None
    # Tracks unpublished before the part ends, still closing their segments: the part
    # ends after them, or the finaliser would find their segments open.
    detaching: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def part_file(self) -> Path:
        return self.directory / f"part-{self.node_id}.json"

    def write_part(self, **fields: Any) -> None:
        data = {
            "session_id": self.sid, "room": self.room, "node_id": self.node_id,
            "started_at": round(self.started_at, 3), "metadata": self.metadata, "info": self.info, **fields,
        }
        write_json_atomic(self.part_file, data)


def wants_recording(settings: RecordingSettings, business: str | None) -> bool:
    if not settings.enabled:
        return False
    if business is None:
        return settings.record_unassigned
    return "*" in settings.businesses or business in settings.businesses


class Recorder:
    def __init__(self, node: Node, settings: RecordingSettings, spool: Path, *,
                 lookup: SessionLookup | None = None, part_started: PartStarted | None = None,
                 part_ended: PartEnded | None = None) -> None:
        self.node = node
        self.settings = settings
        self.spool = spool
        self._lookup = lookup
        self._part_started = part_started
        self._part_ended = part_ended
        self.parts: dict[str, SessionPart] = {}
        self._early: dict[str, list[dict[str, Any]]] = {}
        self.worker = RecordingWorker(min(0.1, settings.flush_interval_s / 4))
        self._tasks: set[asyncio.Task[Any]] = set()
        self.sessions_recorded = 0
        self.sessions_discarded = 0
        node.timeline_listeners.append(self.on_event)

    # -- node timeline ------------------------------------------------------------------

    def on_event(self, room: Room, event: dict[str, Any]) -> None:
        kind = event.get("type")
        part = self.parts.get(room.sid)
        if part is None:
            if not self.settings.enabled:
                return
            if kind != "track_published":
                # Joins and the like before the first media belong to the session too.
                early = self._early.setdefault(room.sid, [])
                if kind in ("room_closed", "room_moved"):
                    self._early.pop(room.sid, None)
                elif len(early) < MAX_EARLY_EVENTS:
                    early.append(event)
                return
            business = room.metadata.get("business") if isinstance(room.metadata, dict) else None
            if isinstance(business, str) and not wants_recording(self.settings, business):
                self._early.pop(room.sid, None)
                return
            part = self._start(room)
            for earlier in self._early.pop(room.sid, []):
                self.write_event(part, earlier)
        if part.discarded:
            return
        self.write_event(part, event)
        if kind == "track_published":
            self._attach(room, part, event)
        elif kind == "track_unpublished":
            recorder = part.tracks.pop(str(event.get("track_id")), None)
            if recorder is not None:
                detaching = self._spawn(self._detach(room, recorder))
                part.detaching.add(detaching)
                detaching.add_done_callback(part.detaching.discard)
        elif kind in ("room_closed", "room_moved"):
            self.parts.pop(room.sid, None)
            self._spawn(self._end(part, final=kind == "room_closed", reason=str(event.get("reason", ""))))

    def session_event(self, room_name: str, event: dict[str, Any]) -> None:
        """An event from outside the node (the contact centre) about a room recorded here."""
        for part in self.parts.values():
            if part.room == room_name and not part.discarded:
                self.write_event(part, event)
                # A call linked, or a field visit decided: who and what it was changed.
                if part.info is None or event.get("call_id") or event.get("type") == "field_decision":
                    self._resolve(part)

    def add_evidence(self, sid: str, name: str, data: bytes) -> bool:
        """A file (a snapshot, an ID frame) beside the session's media, so the finaliser
        archives it with them; blocking, call it from a worker thread."""
        part = self.parts.get(sid)
        if part is None or part.discarded:
            return False
        evidence = part.directory / "evidence"
        evidence.mkdir(parents=True, exist_ok=True)
        (evidence / name).write_bytes(data)
        return True

    def refresh_info(self, room_name: str) -> None:
        """What the session is (its outcome, say) changed: look it up again."""
        for part in self.parts.values():
            if part.room == room_name and not part.discarded:
                self._resolve(part)

    def write_event(self, part: SessionPart, event: dict[str, Any]) -> None:
        if part.timeline is None:
            return
        line = dict(event)
        line.setdefault("ts", round(time.time(), 3))
        try:
            part.timeline.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
        except (OSError, ValueError):
            log.exception("timeline write failed", extra={"session": part.sid})

    # -- a part's life ------------------------------------------------------------------

    def _start(self, room: Room) -> SessionPart:
        directory = self.spool / room.sid
        (directory / "tracks" / self.node.id).mkdir(parents=True, exist_ok=True)
        part = SessionPart(room.sid, room.name, self.node.id, directory, time.time(), dict(room.metadata))
        part.timeline = open(directory / f"timeline-{self.node.id}.jsonl", "a", encoding="utf-8", buffering=1)
        part.write_part()
        self.parts[room.sid] = part
        self.sessions_recorded += 1
        with logs.bind(room=room.name, session=room.sid):
            log.info("recording started", extra={"path": str(directory)})
        self._resolve(part, announce=True)
        return part

    def _resolve(self, part: SessionPart, announce: bool = False) -> None:
        """Learns which call and business the room serves; drops it if not recorded.
        A kept session is announced to the index once its business is known (or unknown)."""
        if part.lookup is not None and not part.lookup.done():
            return

        async def resolve() -> None:
            info = None
            try:
                info = await self._lookup(part.room, part.sid) if self._lookup else None
            except Exception:
                log.warning("session lookup failed", extra={"session": part.sid}, exc_info=True)
            business = (info or {}).get("business") or part.metadata.get("business")
            if info is not None:
                part.info = info
                if not part.discarded:
                    part.write_part()
            if (info is not None or business) and not wants_recording(self.settings, business):
                await self._discard(part)
            elif announce and self._part_started is not None:
                await self._part_started(part.sid, part.room, part.started_at)

        part.lookup = self._spawn(resolve())

    def _attach(self, room: Room, part: SessionPart, event: dict[str, Any]) -> None:
        track_id = str(event.get("track_id"))
        publication = room.publications.get(track_id)
        if publication is None or track_id in part.tracks:
            return
        participant = room.participants.get(publication.participant_id)
        meta = TrackMeta(
            session_id=room.sid, room=room.name, node_id=self.node.id,
            participant_id=publication.participant_id,
            identity=participant.identity if participant else "",
            name=participant.name if participant else "",
            role=participant.role if participant else "",
            track_id=publication.id, kind=publication.kind,
            source=str(publication.info().get("source") or ""),
            codec=publication.mime_type, clock_rate=publication.clock_rate,
        )
        recorder = TrackRecorder(
            meta, part.directory / "tracks" / self.node.id,
            flush_interval_s=self.settings.flush_interval_s, segment_max_s=self.settings.segment_max_s,
            request_keyframe=publication.request_keyframe,
        )
        part.tracks[track_id] = recorder
        self.worker.add(recorder)
        recorder.attach(publication.replace_tap)
        publication.add_tap(recorder.tap)
        publication.request_keyframe()

    async def _detach(self, room: Room, recorder: TrackRecorder) -> None:
        publication = room.publications.get(recorder.meta.track_id)
        if publication is not None:
            publication.remove_tap(recorder.tap)
        await self.worker.finish(recorder)

    async def _discard(self, part: SessionPart) -> None:
        if part.discarded:
            return
        part.discarded = True
        self.sessions_discarded += 1
        self.parts.pop(part.sid, None)
        await self._close_tracks(part)
        with logs.bind(room=part.room, session=part.sid):
            log.info("session not recorded: its business is not in recording.businesses")
        await asyncio.to_thread(shutil.rmtree, part.directory, True)

    async def _close_tracks(self, part: SessionPart) -> None:
        room = self.node.rooms.get(part.room)
        for recorder in list(part.tracks.values()):
            if room is not None:
                publication = room.publications.get(recorder.meta.track_id)
                if publication is not None:
                    publication.remove_tap(recorder.tap)
        recorders, part.tracks = list(part.tracks.values()), {}
        await asyncio.gather(*(self.worker.finish(r) for r in recorders), *part.detaching, return_exceptions=True)
        if part.timeline is not None:
            with contextlib.suppress(OSError):
                part.timeline.close()
            part.timeline = None

    async def _end(self, part: SessionPart, *, final: bool, reason: str) -> None:
        if part.lookup is not None:
            with contextlib.suppress(Exception):
                await part.lookup
        if part.discarded:
            return
        await self._close_tracks(part)
        part.write_part(ended_at=round(time.time(), 3), end="closed" if final else "moved", reason=reason)
        with logs.bind(room=part.room, session=part.sid):
            log.info("recording part ended", extra={"final": final})
        if self._part_ended is not None:
            await self._part_ended(part.sid, part.node_id, final)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def stats(self) -> dict[str, Any]:
        return {
            "recording": len(self.parts),
            "worker_busy_s": round(self.worker.busy_s, 3),
            "sessions_recorded": self.sessions_recorded,
            "sessions_discarded": self.sessions_discarded,
            "tracks": [r.stats() for p in self.parts.values() for r in p.tracks.values()],
        }

    async def close(self) -> None:
        """Process shutdown: every part ends as if its room closed (a restart finalises it)."""
        if self.on_event in self.node.timeline_listeners:
            self.node.timeline_listeners.remove(self.on_event)
        parts, self.parts = list(self.parts.values()), {}
        for part in parts:
            if part.discarded:
                continue
            await self._close_tracks(part)
            part.write_part(ended_at=round(time.time(), 3), end="shutdown", reason="server_shutdown")
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await asyncio.to_thread(self.worker.stop)
