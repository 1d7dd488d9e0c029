"""Keeps the shared store's view of this node's rooms and participants up to date.

The node's own objects are the truth; the store is a copy for the other processes
(REST, routing, the contact centre). Changes are coalesced per room and written
off the media path; when the store is unreachable they wait and are rewritten in
full once it answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from ..sfu import Node, Room
from ..state import Record, StateStore, StateUnavailable

log = logging.getLogger("teller.cluster.mirror")

# Timeline events kept while the store is unreachable; beyond this the oldest go.
MAX_PENDING_EVENTS = 10000


class StateMirror:
    def __init__(self, node: Node, store: StateStore, node_url: str, *, timeline_retention_s: float = 600.0) -> None:
        self._node = node
        self._retention_s = timeline_retention_s
        self._store = store
        self._url = node_url
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.behind = False  # a write failed; a full resync is due
        # (sid, event), or (sid, None): the session is over, its timeline may expire.
        self._events: deque[tuple[str, dict[str, Any] | None]] = deque(maxlen=MAX_PENDING_EVENTS)
        self.events_dropped = 0
        node.listeners.append(self.mark)
        node.timeline_listeners.append(self.record_event)

    def mark(self, room: Room) -> None:
        self._dirty.add(room.name)
        self._kick()

    def record_event(self, room: Room, event: dict[str, Any]) -> None:
        """Appends to the room session's timeline (keyed by its sid), in order."""
        if len(self._events) == self._events.maxlen:
            self.events_dropped += 1
        self._events.append((room.sid, event))
        if event.get("type") == "room_closed":  # not room_moved: the session goes on elsewhere
            self._events.append((room.sid, None))
        self._kick()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name="state-mirror")

    async def _flush(self) -> None:
        while self._events or self._dirty:
            if self._events:
                sid, event = self._events[0]
                name = None
            else:
                name = self._dirty.pop()
            try:
                if name is None and event is None:
                    await self._store.expire_events(sid, self._retention_s)
                elif name is None:
                    await self._store.append_event(sid, event)
                else:
                    await self._sync(name)
            except StateUnavailable:
                if name is not None:
                    self._dirty.add(name)
                self.behind = True
                return
            except Exception:
                log.exception("state mirror write failed", extra={"room": name})
            if name is None:
                self._events.popleft()

    async def resync(self) -> None:
        """Rewrites everything this node holds, and forgets what it no longer holds."""
        names = {name for name, room in self._node.rooms.items() if not room.closed}
        for record in await self._store.list_rooms():
            if record.get("node_id") == self._node.id:
                names.add(record["name"])
        self._dirty |= names
        self.behind = False
        self._kick()
        assert self._task is not None
        await self._task

    async def _sync(self, name: str) -> None:
        me = self._node.id
        room = self._node.rooms.get(name)
        if room is None or room.closed:
            record = await self._store.get_room(name)
            if record is not None and record.get("node_id") == me:
                await self._store.delete_room(name)
            else:
                await self._store.remove_participants_where(name, "node_id", me)
            return
        info = room.info()

        def change(current: Record | None) -> Record | None:
            if current is not None and current.get("node_id") not in (None, me):
                return current  # the room was moved away from this node
            return {**(current or {}), **info, "node_id": me, "node_url": self._url}

        await self._store.update_room(name, change)
        local = {p.id: {**p.info(), "node_id": me} for p in room.participants.values()}
        stored = {p["participant_id"]: p for p in await self._store.list_participants(name)}
        for pid, record in local.items():
            if stored.get(pid) != record:
                await self._store.put_participant(name, pid, record)
        for pid, record in stored.items():
            if pid not in local and record.get("node_id") == me:
                await self._store.remove_participant(name, pid)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(self._task, 2.0)
            except Exception:
                self._task.cancel()
