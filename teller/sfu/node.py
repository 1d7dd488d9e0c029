"""An SFU node: the rooms it hosts, its stage host and its load."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import resource
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import Config
from ..errors import BadRequest, Conflict, NotFound, Unavailable
from . import codec_guard
from .room import Room
from .stages import StageHost

log = logging.getLogger("teller.sfu.node")

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def validate_room_name(name: str) -> str:
    if not isinstance(name, str) or not ROOM_NAME.match(name):
        raise BadRequest(
            "a room name is 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit",
            code="invalid_room_name",
        )
    return name


class Node:
    def __init__(self, config: Config) -> None:
        self.id = f"ND_{secrets.token_hex(6)}"
        self.config = config
        self.started_at = time.time()
        self.rooms: dict[str, Room] = {}
        self.codecs = codec_guard.install()
        self.stages = StageHost(config.stages)
        self._cpu_at = (time.monotonic(), time.process_time())
        self._closed = False
        self.draining = False
        # Called with a room whenever its membership or tracks change (the state mirror).
        self.listeners: list[Callable[[Room], None]] = []
        # Called with (room, event) for the session timeline (joins, leaves, tracks...).
        self.timeline_listeners: list[Callable[[Room, dict[str, Any]], None]] = []
        # In a cluster: the shared record of a room this node is asked to open, or an
        # error if the room belongs to another node.
        self.room_guard: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None
        # Called with (metric, value) for the few timings /metrics keeps (join time...).
        self.observers: list[Callable[[str, float], None]] = []
        # Called with (room, sender, topic, payload) for each data message a participant
        # sends (content-risk checks of chat); they must be quick and must not raise.
        self.data_observers: list[Callable[[Room, Any, str | None, Any], None]] = []

    def observe(self, metric: str, value: float) -> None:
        for observer in self.observers:
            observer(metric, value)

    def changed(self, room: Room) -> None:
        for listener in self.listeners:
            listener(room)

    def timeline(self, room: Room, event_type: str, /, **fields: Any) -> None:
        if not self.timeline_listeners:
            return
        event = {"type": event_type, "ts": round(time.time(), 3), "room": room.name, "node_id": self.id, **fields}
        for listener in self.timeline_listeners:
            listener(room, event)

    def room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None or room.closed:
            raise NotFound(f"no room {name!r}", code="room_not_found")
        return room

    async def create_room(
        self,
        name: str,
        *,
        max_participants: int | None = None,
        empty_timeout_s: float | None = None,
        metadata: dict[str, Any] | None = None,
        sid: str | None = None,
    ) -> Room:
        validate_room_name(name)
        if self.draining:
            raise Unavailable("this node is draining; try again", code="node_draining")
        if name in self.rooms and not self.rooms[name].closed:
            raise Conflict(f"room {name!r} exists", code="room_exists")
        room = Room(
            name,
            self,
            max_participants=max_participants,
            empty_timeout_s=empty_timeout_s,
            metadata=metadata,
            sid=sid,
        )
        self.rooms[name] = room
        self.changed(room)
        self.timeline(room, "room_opened", moved=sid is not None)
        log.info("room created", extra={"room": name})
        return room

    async def room_for_join(self, name: str) -> Room:
        validate_room_name(name)
        room = self.rooms.get(name)
        if room is not None and not room.closed:
            return room
        if self.draining:
            raise Unavailable("this node is draining; try again", code="node_draining")
        record = await self.room_guard(name) if self.room_guard is not None else None
        if record is None and not self.config.rooms.auto_create:
            raise NotFound(f"no room {name!r}", code="room_not_found")
        record = record or {}
        room = self.rooms.get(name)  # another join may have opened it meanwhile
        if room is not None and not room.closed:
            return room
        return await self.create_room(
            name,
            max_participants=record.get("max_participants"),
            empty_timeout_s=record.get("empty_timeout_s"),
            metadata=record.get("metadata"),
            sid=record.get("sid"),
        )

    async def close_room(self, name: str, reason: str = "room_closed") -> None:
        room = self.room(name)
        await room.close(reason)
        if self.rooms.get(name) is room:
            del self.rooms[name]

    async def close_room_if_empty(self, room: Room) -> None:
        if not room.participants and not room.closed:
            await room.close("empty_timeout")
            if self.rooms.get(room.name) is room:
                del self.rooms[room.name]

    def stats(self) -> dict[str, Any]:
        now, cpu = time.monotonic(), time.process_time()
        last_now, last_cpu = self._cpu_at
        self._cpu_at = (now, cpu)
        participants = [p for r in self.rooms.values() for p in r.participants.values()]
        try:
            open_fds = len(os.listdir("/proc/self/fd"))
        except OSError:
            open_fds = -1
        return {
            "node_id": self.id,
            "draining": self.draining,
            "uptime_s": round(time.time() - self.started_at, 1),
            "rooms": len(self.rooms),
            "participants": len(participants),
            "publications": sum(len(r.publications) for r in self.rooms.values()),
            "subscriptions": sum(len(p.subscriptions) for p in participants),
            "peer_connections": sum(p.transport_count for p in participants),
            "codecs": self.codecs.snapshot(),
            "stages": self.stages.stats(),
            "cpu_percent": round(100 * (cpu - last_cpu) / max(1e-6, now - last_now), 1),
            "cpu_seconds": round(cpu, 3),
            "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "open_fds": open_fds,
            "tasks": len(asyncio.all_tasks()),
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        rooms, self.rooms = list(self.rooms.values()), {}
        await asyncio.gather(*(r.close("node_shutdown") for r in rooms), return_exceptions=True)
        await self.stages.close()
