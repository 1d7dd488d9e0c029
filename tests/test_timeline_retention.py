"""Session timelines are forgotten once their session is over, so churn cannot grow
the state store (or an embedded server's memory) without bound."""

from __future__ import annotations

import asyncio

from teller.cluster.mirror import StateMirror
from teller.config.settings import Config
from teller.sfu import Node
from teller.state import MemoryStore

from .test_state import eventually


async def _types(store: MemoryStore, sid: str) -> list[str]:
    return [e["type"] for e in await store.read_events(sid)]


async def test_a_closed_rooms_timeline_expires_after_the_retention() -> None:
    node = Node(Config())
    store = MemoryStore()
    StateMirror(node, store, "http://node.invalid", timeline_retention_s=2.0)
    try:
        closing = await node.create_room("closing")
        staying = await node.create_room("staying")

        async def both_opened() -> bool:
            return await _types(store, closing.sid) == ["room_opened"] and await _types(store, staying.sid) == ["room_opened"]

        await eventually(both_opened)
        await node.close_room("closing")

        async def closed_recorded() -> bool:
            return await _types(store, closing.sid) == ["room_opened", "room_closed"]

        await eventually(closed_recorded)  # kept for the retention, not dropped at once

        async def forgotten() -> bool:
            return await store.read_events(closing.sid) == []

        await eventually(forgotten)
        assert await _types(store, staying.sid) == ["room_opened"]  # an open room's stays
    finally:
        await node.close()
        await store.close()


async def test_a_moved_rooms_timeline_is_kept() -> None:
    """room_moved: the session goes on on another node, which appends to the same timeline."""
    node = Node(Config())
    store = MemoryStore()
    mirror = StateMirror(node, store, "http://node.invalid", timeline_retention_s=0.2)
    try:
        room = await node.create_room("moving")
        await room.close("drain", notify=False)
        node.rooms.pop("moving", None)

        async def moved_recorded() -> bool:
            return await _types(store, room.sid) == ["room_opened", "room_moved"]

        await eventually(moved_recorded)
        await asyncio.sleep(0.5)
        assert not mirror.behind
        assert await _types(store, room.sid) == ["room_opened", "room_moved"]
    finally:
        await node.close()
        await store.close()
