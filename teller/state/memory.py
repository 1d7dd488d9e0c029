"""The embedded state store: plain dicts in one process and one event loop.

No method awaits between reading and writing, so every read-modify-write is atomic
without locks. Records are copied through JSON on the way in and out, so callers
get exactly what the Redis backend would give them (and cannot alias stored state).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from .base import BusSubscription, LockLost, Record, StateStore
from .common import (
    check_kind,
    QueueSubscription,
    check_priority,
    check_scalar,
    json_copy,
    same_scalar,
)

log = logging.getLogger("teller.state")

_SESSION_SWEEP_S = 10.0


@dataclass
class _Expiring:
    record: Record
    expires_at: float

    def live(self, now: float) -> bool:
        return now < self.expires_at


@dataclass
class _QueueItem:
    order: int
    priority: int
    enqueued_at: float
    record: Record

    def sort_key(self) -> tuple[int, int]:
        return (-self.priority, self.order)

    def public(self, item_id: str) -> Record:
        return {**json_copy(self.record), "item_id": item_id, "priority": self.priority,
                "enqueued_at": self.enqueued_at}


@dataclass
class _NamedLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class MemoryStore(StateStore):
    """State for a single process; nothing survives a restart, by design."""

    backend = "memory"

    def __init__(self) -> None:
        self._rooms: dict[str, Record] = {}
        self._participants: dict[str, dict[str, Record]] = {}
        self._nodes: dict[str, _Expiring] = {}
        self._locks: dict[str, _NamedLock] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._subscriptions: dict[str, set[QueueSubscription]] = {}
        self._timelines: dict[str, list[Record]] = {}
        self._timeline_deadlines: dict[str, float] = {}
        self._next_timeline_sweep = 0.0
        self._sessions: dict[str, _Expiring] = {}
        self._next_session_sweep = 0.0
        self._queues: dict[str, dict[str, _QueueItem]] = {}
        self._queue_order = 0
        self._agents: dict[str, Record] = {}
        self._docs: dict[str, dict[str, Record]] = {}

    async def close(self) -> None:
        subscriptions = {s for subs in self._subscriptions.values() for s in subs}
        for subscription in subscriptions:
            await subscription.close()

    async def ping(self) -> bool:
        return True

    # -- rooms -----------------------------------------------------------------------
    async def get_room(self, name: str) -> Record | None:
        record = self._rooms.get(name)
        return None if record is None else json_copy(record)

    async def list_rooms(self) -> list[Record]:
        return [json_copy(self._rooms[name]) for name in sorted(self._rooms)]

    async def put_room(self, name: str, record: Record) -> None:
        self._rooms[name] = json_copy(record)

    async def update_room(self, name: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        return _apply(self._rooms, name, change)

    async def delete_room(self, name: str) -> None:
        self._rooms.pop(name, None)
        self._participants.pop(name, None)

    # -- participants ----------------------------------------------------------------
    async def put_participant(self, room: str, participant_id: str, record: Record) -> None:
        self._participants.setdefault(room, {})[participant_id] = json_copy(record)

    async def remove_participant(self, room: str, participant_id: str) -> None:
        members = self._participants.get(room)
        if members is not None:
            members.pop(participant_id, None)
            if not members:
                del self._participants[room]

    async def list_participants(self, room: str) -> list[Record]:
        members = self._participants.get(room, {})
        return [json_copy(members[pid]) for pid in sorted(members)]

    async def remove_participants_where(self, room: str, field: str, value: Any) -> int:
        check_scalar(value)
        members = self._participants.get(room, {})
        doomed = [pid for pid, rec in members.items() if field in rec and same_scalar(rec[field], value)]
        for pid in doomed:
            del members[pid]
        if not members:
            self._participants.pop(room, None)
        return len(doomed)

    # -- node registry ---------------------------------------------------------------
    async def heartbeat(self, node_id: str, record: Record, ttl_s: float) -> bool:
        now = time.monotonic()
        previous = self._nodes.get(node_id)
        self._nodes[node_id] = _Expiring(json_copy(record), now + ttl_s)
        return previous is not None and previous.live(now)

    async def get_node(self, node_id: str) -> Record | None:
        entry = self._nodes.get(node_id)
        if entry is None or not entry.live(time.monotonic()):
            return None
        return json_copy(entry.record)

    async def list_nodes(self) -> list[Record]:
        now = time.monotonic()
        for node_id in [n for n, e in self._nodes.items() if not e.live(now)]:
            del self._nodes[node_id]
        return [json_copy(self._nodes[n].record) for n in sorted(self._nodes)]

    async def remove_node(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)

    # -- locks -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lock(self, name: str, ttl_s: float = 5.0, wait_s: float = 5.0) -> AsyncIterator[None]:
        """ttl_s is not needed here: a holder in this process releases on exit or cancel."""
        entry = self._locks.setdefault(name, _NamedLock())
        entry.users += 1
        try:
            try:
                async with asyncio.timeout(wait_s):
                    await entry.lock.acquire()
            except TimeoutError:
                raise LockLost(f"could not take the lock {name!r} within {wait_s} s", lock=name) from None
            try:
                yield
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[name]

    async def try_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        now = time.monotonic()
        current = self._leases.get(name)
        if current is not None and current[0] != owner and now < current[1]:
            return False
        self._leases[name] = (owner, now + ttl_s)
        return True

    # -- message bus -----------------------------------------------------------------
    async def publish(self, channel: str, message: Record) -> None:
        text = json.dumps(message)
        for subscription in list(self._subscriptions.get(channel, ())):
            subscription.deliver(channel, json.loads(text))

    async def subscribe(self, *channels: str) -> BusSubscription:
        subscription = QueueSubscription(channels, on_close=self._forget)
        for channel in subscription.channels:
            self._subscriptions.setdefault(channel, set()).add(subscription)
        return subscription

    def _forget(self, subscription: QueueSubscription) -> None:
        for channel in subscription.channels:
            subs = self._subscriptions.get(channel)
            if subs is not None:
                subs.discard(subscription)
                if not subs:
                    del self._subscriptions[channel]

    # -- session timeline --------------------------------------------------------------
    def _live_timeline(self, session_id: str, now: float) -> list[Record] | None:
        deadline = self._timeline_deadlines.get(session_id)
        if deadline is not None and now >= deadline:
            del self._timeline_deadlines[session_id]
            self._timelines.pop(session_id, None)
        return self._timelines.get(session_id)

    async def append_event(self, session_id: str, event: Record) -> int:
        now = time.monotonic()
        if now >= self._next_timeline_sweep:
            self._next_timeline_sweep = now + _SESSION_SWEEP_S
            for sid in [s for s, at in self._timeline_deadlines.items() if now >= at]:
                self._live_timeline(sid, now)
        timeline = self._live_timeline(session_id, now)
        if timeline is None:
            timeline = self._timelines[session_id] = []
        stored = json_copy(event)
        stored.setdefault("ts", time.time())
        stored["seq"] = len(timeline) + 1
        timeline.append(stored)
        return stored["seq"]

    async def read_events(self, session_id: str, after: int = 0, limit: int = 1000) -> list[Record]:
        if limit <= 0:
            return []
        after = max(after, 0)
        return json_copy((self._live_timeline(session_id, time.monotonic()) or [])[after : after + limit])

    async def expire_events(self, session_id: str, ttl_s: float) -> None:
        if session_id not in self._timelines:
            return
        if ttl_s <= 0:
            del self._timelines[session_id]
            self._timeline_deadlines.pop(session_id, None)
        else:
            self._timeline_deadlines[session_id] = time.monotonic() + ttl_s

    # -- sessions ------------------------------------------------------------------------
    async def put_session(self, session_id: str, record: Record, ttl_s: float) -> None:
        now = time.monotonic()
        if now >= self._next_session_sweep:
            # Sessions nobody resumes are never read again; sweep them now and then.
            self._next_session_sweep = now + _SESSION_SWEEP_S
            for sid in [s for s, e in self._sessions.items() if not e.live(now)]:
                del self._sessions[sid]
        self._sessions[session_id] = _Expiring(json_copy(record), now + ttl_s)

    async def get_session(self, session_id: str) -> Record | None:
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        if not entry.live(time.monotonic()):
            del self._sessions[session_id]
            return None
        return json_copy(entry.record)

    async def delete_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    # -- queues ----------------------------------------------------------------------------
    def _ordered(self, queue: str) -> list[tuple[str, _QueueItem]]:
        return sorted(self._queues.get(queue, {}).items(), key=lambda kv: kv[1].sort_key())

    async def enqueue(self, queue: str, item_id: str, record: Record, priority: int = 0) -> int:
        check_priority(priority)
        items = self._queues.setdefault(queue, {})
        existing = items.get(item_id)
        if existing is None:
            self._queue_order += 1
            items[item_id] = _QueueItem(self._queue_order, priority, time.time(), json_copy(record))
        else:
            existing.priority = priority
            existing.record = json_copy(record)
        return next(i for i, (iid, _) in enumerate(self._ordered(queue), 1) if iid == item_id)

    async def dequeue(self, queue: str) -> Record | None:
        ordered = self._ordered(queue)
        if not ordered:
            return None
        item_id, item = ordered[0]
        self._take(queue, item_id)
        return item.public(item_id)

    async def queue_position(self, queue: str, item_id: str) -> int | None:
        for index, (iid, _) in enumerate(self._ordered(queue)):
            if iid == item_id:
                return index + 1
        return None

    async def remove_from_queue(self, queue: str, item_id: str) -> bool:
        return self._take(queue, item_id)

    def _take(self, queue: str, item_id: str) -> bool:
        items = self._queues.get(queue)
        if items is None or item_id not in items:
            return False
        del items[item_id]
        if not items:
            del self._queues[queue]
        return True

    async def queue_items(self, queue: str) -> list[Record]:
        return [item.public(iid) for iid, item in self._ordered(queue)]

    # -- agents ----------------------------------------------------------------------------
    async def get_agent(self, agent_id: str) -> Record | None:
        record = self._agents.get(agent_id)
        return None if record is None else json_copy(record)

    async def list_agents(self) -> list[Record]:
        return [json_copy(self._agents[a]) for a in sorted(self._agents)]

    async def update_agent(self, agent_id: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        return _apply(self._agents, agent_id, change)

    # -- documents ---------------------------------------------------------------------------
    async def get_doc(self, kind: str, key: str) -> Record | None:
        record = self._docs.get(check_kind(kind), {}).get(key)
        return json_copy(record) if record is not None else None

    async def list_docs(self, kind: str) -> list[Record]:
        table = self._docs.get(check_kind(kind), {})
        return [json_copy(table[k]) for k in sorted(table)]

    async def update_doc(self, kind: str, key: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        return _apply(self._docs.setdefault(check_kind(kind), {}), key, change)


def _apply(table: dict[str, Record], key: str, change: Callable[[Record | None], Record | None]) -> Record | None:
    """One read-modify-write; atomic because nothing here awaits."""
    current = table.get(key)
    new = change(None if current is None else json_copy(current))
    if new is None:
        table.pop(key, None)
        return None
    table[key] = json_copy(new)
    return json_copy(new)
