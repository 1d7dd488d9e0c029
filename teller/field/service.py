"""On-site + remote: the field visit's lifecycle, its location and its evidence.

The REST side (rest.py) starts, lists, joins and decides visits. The node side follows
the visit's room without touching its media: GPS fixes arrive as data messages the room
already checked (`Node.data_observers`), and the officer's joins, drops, resumes and
leaves as timeline events. A snapshot decodes one frame of the officer's video through
the stage host's shared tap, so it costs nothing while nobody takes one.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from .. import logs
from ..cluster.ask import answer_node, ask_node
from ..config import Config
from ..errors import BadRequest, Conflict, Forbidden, NotFound, TellerError
from ..recording.index import publish_op
from ..recording.objects import ObjectNotFound, ObjectStore
from ..recording.service import publish_session_event
from ..recording.session_info import FIELD_SESSION
from ..state import StateStore, StateUnavailable
from . import gps, sessions

if TYPE_CHECKING:
    from ..cluster.directory import Directory
    from ..recording.recorder import Recorder
    from ..sfu.node import Node
    from ..sfu.room import Room
    from ..signaling.tokens import AccessToken, TokenIssuer

log = logging.getLogger("teller.field")

OFFICER = "officer"
REVIEWER_ROLES = ("reviewer", "supervisor")
DECISIONS = ("approve", "reject")


SNAPSHOT_OP = "field_snapshot"


class SnapshotTimeout(TellerError):
    status = 504
    code = "snapshot_timeout"


class FieldService:
    def __init__(self, config: Config, store: StateStore, issuer: TokenIssuer, directory: Directory,
                 objects: ObjectStore | None = None, node: Node | None = None, recorder: Recorder | None = None) -> None:
        self.config = config
        self.settings = config.field
        self.store = store
        self.issuer = issuer
        self.directory = directory
        self.objects = objects
        self.node = node
        self.recorder = recorder
        self._tasks: set[asyncio.Task[Any]] = set()
        self.snapshots_taken = 0
        if node is not None:
            node.data_observers.append(self._on_data)
            node.timeline_listeners.append(self._on_timeline)

    # -- REST side --------------------------------------------------------------------------

    async def start_visit(self, officer: AccessToken, body: dict[str, Any]) -> dict[str, Any]:
        _require_role(officer, (OFFICER,))
        field_id = sessions.new_field_id()
        record = sessions.new_record(field_id, {"id": officer.subject, "name": officer.name}, body)
        room = await self.directory.create_room(record["room"], {
            "max_participants": 8, "empty_timeout_s": max(300.0, self.settings.resume_window_s * 2),
            "metadata": {"business": sessions.BUSINESS, "field_id": field_id, "case_number": record["case_number"]},
        })
        record["session_id"] = room.get("sid")
        await self.store.update_doc(FIELD_SESSION, field_id, lambda _: record)
        token = self.issuer.issue(room=record["room"], role=OFFICER, subject=officer.subject, name=officer.name,
                                  ttl_s=self.config.auth.default_ttl_s)
        with logs.bind(room=record["room"], session=record["session_id"]):
            log.info("field visit started", extra={"field_id": field_id, "officer": officer.subject})
        return {"field_id": field_id, "room": record["room"], "token": token, "session_id": record["session_id"],
                "started_at": record["started_at"], "resume_window_s": self.settings.resume_window_s}

    async def list(self, viewer: AccessToken) -> list[dict[str, Any]]:
        _require_role(viewer, (*REVIEWER_ROLES, OFFICER))
        now = time.time()
        out = []
        for record in await self.store.list_docs(FIELD_SESSION):
            if viewer.role == OFFICER and (record.get("officer") or {}).get("id") != viewer.subject:
                continue
            ended = record.get("ended_at")
            if ended and now - ended > self.settings.list_ended_s:
                continue
            out.append(sessions.public(record))
        out.sort(key=lambda r: (r["state"] != "live", -r["started_at"]))
        return out

    async def get(self, viewer: AccessToken, field_id: str) -> dict[str, Any]:
        record = await self.visible(viewer, field_id)
        return sessions.public(record, detail=True)

    async def visible(self, viewer: AccessToken, field_id: str) -> dict[str, Any]:
        record = await sessions.get(self.store, field_id)
        if viewer.role in REVIEWER_ROLES:
            return record
        if viewer.role == OFFICER and (record.get("officer") or {}).get("id") == viewer.subject:
            return record
        raise Forbidden("this field session is not yours to see", code="role_forbidden")

    async def join(self, reviewer: AccessToken, field_id: str) -> dict[str, Any]:
        _require_role(reviewer, REVIEWER_ROLES)
        record = await sessions.get(self.store, field_id)
        if record["state"] != "live":
            raise Conflict("the field session has ended", code="field_session_ended")
        token = self.issuer.issue(room=record["room"], role="reviewer", subject=reviewer.subject, name=reviewer.name,
                                  ttl_s=self.config.auth.default_ttl_s)
        await self._session_event(record, {"type": "reviewer_joined", "reviewer_id": reviewer.subject,
                                           "reviewer_name": reviewer.name})
        return {"token": token, "room": record["room"], "field_id": field_id}

    async def post_fix(self, officer: AccessToken, field_id: str, payload: Any) -> dict[str, Any]:
        """A fix from a device without a data channel (a WHIP body camera)."""
        record = await self._own_live(officer, field_id)
        fix = gps.normalise(payload)
        room = self._local_room(record["room"])
        sender = room and next((p for p in room.participants.values() if p.role == OFFICER and p.identity.split("#", 1)[0] == officer.subject), None)
        if room is not None and sender is not None:
            room.send_data(sender, fix, gps.TOPIC, None)  # relayed, kept in the timeline, observed below
        else:
            await self._store_fix(field_id, fix)
            await self._session_event(record, {"type": "gps", "participant_id": None, "topic": gps.TOPIC, "payload": fix})
        return fix

    async def decide(self, reviewer: AccessToken, field_id: str, body: dict[str, Any]) -> dict[str, Any]:
        _require_role(reviewer, REVIEWER_ROLES)
        record = await sessions.get(self.store, field_id)
        decision = body.get("decision")
        if decision not in DECISIONS:
            raise BadRequest("decision is approve or reject", code="invalid_message", field="decision")
        notes = sessions.text(body, "notes", required=decision == "reject", limit=sessions.MAX_NOTE)
        outcome = {"decision": decision, "notes": notes, "by": reviewer.subject, "by_name": reviewer.name,
                   "ts": round(time.time(), 3)}
        await self.store.update_doc(FIELD_SESSION, field_id, lambda r: r and {**r, "decision": outcome})
        await self._session_event(record, {"type": "field_decision", **outcome})
        if record.get("session_id"):
            with contextlib.suppress(StateUnavailable):
                await publish_op(self.store, {"op": "upsert", "entry": {"session_id": record["session_id"],
                                                                         "outcome": f"{decision}d"}})
        log.info("field visit decided", extra={"field_id": field_id, "decision": decision})
        return outcome

    async def end(self, viewer: AccessToken, field_id: str) -> dict[str, Any]:
        record = await self.visible(viewer, field_id)
        if record["state"] == "live":
            ended = round(time.time(), 3)
            await self.store.update_doc(FIELD_SESSION, field_id, lambda r: r and {**r, "state": "ended", "ended_at": ended,
                                                                                  "officer_connected": False})
            await self._session_event(record, {"type": "field_ended", "by": viewer.subject})
            with contextlib.suppress(TellerError):
                await self.directory.close_room(record["room"], "field_session_ended")
        return {"field_id": field_id, "state": "ended"}

    async def snapshot(self, reviewer: AccessToken, field_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A full-resolution frame of the officer's video, with time and GPS, into the
        recording: taken here when the room is here, else by the node that holds it."""
        _require_role(reviewer, REVIEWER_ROLES)
        record = await sessions.get(self.store, field_id)
        wanted = body.get("participant_id")
        if wanted is not None and not isinstance(wanted, str):
            raise BadRequest("participant_id is a participant's id", code="invalid_message", field="participant_id")
        if record["state"] != "live":
            raise Conflict("the field session has ended", code="field_session_ended")
        by = {"by": reviewer.subject, "by_name": reviewer.name}
        if self._local_room(record["room"]) is not None:
            entry = await self._take_snapshot(record, wanted, by)
        else:
            entry = await self._ask_node(record, {"op": SNAPSHOT_OP, "participant_id": wanted, **by})
        return {**entry, "url": f"/v1/field/sessions/{field_id}/snapshots/{entry['snapshot_id']}"}

    async def snapshot_jpeg(self, field_id: str, snapshot_id: str) -> bytes:
        if self.objects is None:
            raise NotFound("snapshots are kept in the object store, which this process has not", code="snapshot_not_found")
        try:
            return await self.objects.get_bytes(_snapshot_key(field_id, snapshot_id))
        except ObjectNotFound:
            raise NotFound("no such snapshot", code="snapshot_not_found") from None

    async def _take_snapshot(self, record: dict[str, Any], wanted: str | None, by: dict[str, str]) -> dict[str, Any]:
        room = self._local_room(record["room"])
        if room is None or self.node is None:
            raise Conflict("the field session's room is not here any more", code="room_not_local")
        publication = _officer_video(room, wanted)
        if publication is None:
            raise Conflict("the officer publishes no video yet", code="no_video")
        stream = self.node.stages.open_decoded(publication)
        try:
            frame = await asyncio.wait_for(stream.__anext__(), self.settings.snapshot_timeout_s)
        except (TimeoutError, StopAsyncIteration) as exc:
            raise SnapshotTimeout("no decodable frame of the officer's video arrived in time") from exc
        finally:
            self.node.stages.close_decoded(publication, stream)
        taken = time.time()
        jpeg = await asyncio.to_thread(_jpeg, frame)
        field_id = record["field_id"]
        snapshot_id = f"SN_{secrets.token_hex(6)}"
        fresh = await sessions.get(self.store, field_id)
        entry = {"snapshot_id": snapshot_id, "ts": round(taken, 3), "width": frame.width, "height": frame.height,
                 "gps": fresh.get("last_fix"), **by, "participant_id": publication.participant_id, "bytes": len(jpeg)}
        name = f"snapshot-{snapshot_id}.jpg"
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.add_evidence, room.sid, name, jpeg)
        if self.objects is not None:
            await self.objects.put_bytes(_snapshot_key(field_id, snapshot_id), jpeg, content_type="image/jpeg")
        await self.store.update_doc(FIELD_SESSION, field_id, lambda r: r and {
            **r, "snapshots": [*(r.get("snapshots") or []), entry]})
        self.node.timeline(room, "snapshot", file=f"evidence/{name}", **entry)
        self.snapshots_taken += 1
        return entry

    async def _ask_node(self, record: dict[str, Any], command: dict[str, Any]) -> dict[str, Any]:
        """A command to the node holding the visit's room, and its answer."""
        return await ask_node(self.store, record["room"], {**command, "field_id": record["field_id"]},
                              self.settings.snapshot_timeout_s + 4.0, SnapshotTimeout)

    async def on_node_command(self, message: dict[str, Any]) -> None:
        """The node side of _ask_node: take the snapshot and answer on the reply channel."""
        async def work() -> dict[str, Any]:
            record = await sessions.get(self.store, str(message.get("field_id")))
            by = {"by": str(message.get("by", "")), "by_name": str(message.get("by_name", ""))}
            wanted = message.get("participant_id")
            return await self._take_snapshot(record, wanted if isinstance(wanted, str) else None, by)

        await answer_node(self.store, message, work)

    # -- node side --------------------------------------------------------------------------

    def _on_data(self, room: Room, sender: Any, topic: str | None, payload: Any) -> None:
        field_id = sessions.field_id_of(room.name)
        if field_id is not None and topic == gps.TOPIC and isinstance(payload, dict):
            self._spawn(self._store_fix(field_id, payload))

    def _on_timeline(self, room: Room, event: dict[str, Any]) -> None:
        field_id = sessions.field_id_of(room.name)
        if field_id is None:
            return
        kind = event.get("type")
        if kind == "participant_joined" and event.get("role") == OFFICER:
            pid = event.get("participant_id")
            self._spawn(self._update(field_id, lambda r: {**r, "officer_participant": pid, "officer_connected": True}))
        elif kind in ("participant_disconnected", "participant_resumed", "participant_left"):
            pid, connected = event.get("participant_id"), kind == "participant_resumed"
            self._spawn(self._update(field_id, lambda r: {**r, "officer_connected": connected}
                                     if r.get("officer_participant") == pid else r))
        elif kind == "room_closed":
            ended = round(time.time(), 3)
            self._spawn(self._update(field_id, lambda r: {**r, "state": "ended", "officer_connected": False,
                                                          "ended_at": r.get("ended_at") or ended}))

    async def _store_fix(self, field_id: str, fix: dict[str, Any]) -> None:
        await self._update(field_id, lambda r: sessions.add_fix(r, fix, self.settings.max_fixes))

    async def _update(self, field_id: str, change: Any) -> None:
        try:
            await self.store.update_doc(FIELD_SESSION, field_id, lambda r: change(r) if r is not None else None)
        except StateUnavailable:
            log.warning("field session not updated: state store unavailable", extra={"field_id": field_id})

    async def _own_live(self, officer: AccessToken, field_id: str) -> dict[str, Any]:
        _require_role(officer, (OFFICER,))
        record = await sessions.get(self.store, field_id)
        if officer.room != record["room"] or (record.get("officer") or {}).get("id") != officer.subject:
            raise Forbidden("this token is not the officer's for this field session", code="room_forbidden")
        if record["state"] != "live":
            raise Conflict("the field session has ended", code="field_session_ended")
        return record

    async def _session_event(self, record: dict[str, Any], event: dict[str, Any]) -> None:
        """Into the recording's timeline, on whichever node records the room (through the
        node's own timeline where the room is here, so an event before the first media
        is kept too)."""
        room = self._local_room(record["room"])
        if room is not None and self.node is not None:
            fields = {k: v for k, v in event.items() if k != "type"}
            self.node.timeline(room, event["type"], **fields)
            if self.recorder is not None and event["type"] == "field_decision":
                self.recorder.refresh_info(record["room"])
        else:
            await publish_session_event(self.store, record["room"], {"ts": round(time.time(), 3), **event})

    def _local_room(self, name: str) -> Room | None:
        room = self.node.rooms.get(name) if self.node is not None else None
        return room if room is not None and not room.closed else None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _require_role(token: AccessToken, roles: tuple[str, ...]) -> None:
    if token.role not in roles:
        raise Forbidden(f"this needs a {' or '.join(roles)} token", code="role_forbidden")


def _officer_video(room: Room, participant_id: str | None) -> Any:
    for participant in room.participants.values():
        if participant_id is not None and participant.id != participant_id:
            continue
        if participant_id is None and participant.role != OFFICER:
            continue
        for publication in participant.publications():
            if publication.kind == "video" and not publication.ended:
                return publication
    return None


def _snapshot_key(field_id: str, snapshot_id: str) -> str:
    return f"field/{field_id}/snapshot-{snapshot_id}.jpg"


def _jpeg(frame: Any) -> bytes:
    from PIL import Image

    image = Image.fromarray(frame.to_ndarray(format="rgb24"))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=92)
    return out.getvalue()

