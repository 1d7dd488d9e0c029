"""Rooms and participants as the REST API sees them, embedded or clustered.

Embedded, the one node's own objects answer. In a cluster, the shared store
answers reads and commands go to the owning node over the message bus; the REST
handlers are the same for both.
"""

from __future__ import annotations

import abc
import os
import time
from typing import Any

from ..config import Config
from ..errors import NotFound
from ..sfu import Node, validate_room_name
from ..state import Record, StateStore
from .node_agent import node_channel
from .placement import place_room

# The fields of a stored room that are the node's bookkeeping, not the room's.
INTERNAL_FIELDS = ("node_url", "placed_at", "unplaced_at", "moved_from")


class Directory(abc.ABC):
    role: str = ""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    @abc.abstractmethod
    async def list_rooms(self) -> list[Record]: ...

    @abc.abstractmethod
    async def create_room(self, name: str, options: dict[str, Any]) -> Record: ...

    @abc.abstractmethod
    async def get_room(self, name: str) -> Record: ...

    @abc.abstractmethod
    async def close_room(self, name: str, reason: str) -> None: ...

    @abc.abstractmethod
    async def list_participants(self, name: str) -> list[Record]: ...

    @abc.abstractmethod
    async def remove_participant(self, name: str, participant_id: str, reason: str) -> None: ...

    @abc.abstractmethod
    def process_stats(self) -> Record: ...

    async def list_nodes(self) -> list[Record]:
        return await self.store.list_nodes()


class LocalDirectory(Directory):
    role = "embedded"

    def __init__(self, store: StateStore, node: Node) -> None:
        super().__init__(store)
        self.node = node

    async def list_rooms(self) -> list[Record]:
        return [r.info() for r in self.node.rooms.values() if not r.closed]

    async def create_room(self, name: str, options: dict[str, Any]) -> Record:
        room = await self.node.create_room(name, **options)
        return room.info()

    async def get_room(self, name: str) -> Record:
        return self.node.room(name).info()

    async def close_room(self, name: str, reason: str) -> None:
        await self.node.close_room(name, reason)

    async def list_participants(self, name: str) -> list[Record]:
        return [p.info() for p in self.node.room(name).participants.values()]

    async def remove_participant(self, name: str, participant_id: str, reason: str) -> None:
        room = self.node.room(name)
        participant = room.get(participant_id)
        await room.remove(participant.id, reason)

    def process_stats(self) -> Record:
        return self.node.stats()


class ClusterDirectory(Directory):
    role = "signal"

    def __init__(self, store: StateStore, config: Config, signal_id: str, relays: Any) -> None:
        super().__init__(store)
        self.config = config
        self.signal_id = signal_id
        self.started_at = time.time()
        self._relays = relays

    @staticmethod
    def _public(record: Record) -> Record:
        return {k: v for k, v in record.items() if k not in INTERNAL_FIELDS}

    async def list_rooms(self) -> list[Record]:
        return [self._public(r) for r in await self.store.list_rooms()]

    async def create_room(self, name: str, options: dict[str, Any]) -> Record:
        validate_room_name(name)
        defaults = {
            "max_participants": options.get("max_participants") or self.config.rooms.max_participants,
            "empty_timeout_s": self.config.rooms.empty_timeout_s
            if options.get("empty_timeout_s") is None
            else options["empty_timeout_s"],
            "metadata": options.get("metadata") or {},
            "num_participants": 0,
            "num_tracks": 0,
        }
        record, _node = await place_room(self.store, name, options=defaults, must_create=True)
        return self._public(record)

    async def _record(self, name: str) -> Record:
        record = await self.store.get_room(name)
        if record is None:
            raise NotFound(f"no room {name!r}", code="room_not_found")
        return record

    async def get_room(self, name: str) -> Record:
        return self._public(await self._record(name))

    async def close_room(self, name: str, reason: str) -> None:
        record = await self._record(name)
        if record.get("node_id"):
            await self.store.publish(node_channel(record["node_id"]), {"op": "close_room", "room": name, "reason": reason})
        await self.store.delete_room(name)

    async def list_participants(self, name: str) -> list[Record]:
        await self._record(name)
        return [self._public(p) for p in await self.store.list_participants(name)]

    async def remove_participant(self, name: str, participant_id: str, reason: str) -> None:
        record = await self._record(name)
        if not any(p["participant_id"] == participant_id for p in await self.store.list_participants(name)):
            raise NotFound("no such participant in this room", code="participant_not_found")
        await self.store.publish(
            node_channel(record["node_id"]),
            {"op": "remove_participant", "room": name, "participant_id": participant_id, "reason": reason},
        )

    def process_stats(self) -> Record:
        return {
            "role": "signal",
            "signal_id": self.signal_id,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "relays": self._relays.relay_count(),
            "relayed_total": self._relays.relayed_total,
            "moved_total": self._relays.moved_total,
        }
