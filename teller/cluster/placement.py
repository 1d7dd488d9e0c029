"""Which SFU node hosts a room: the least-loaded live one, decided once, shared by all."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..errors import Conflict, NotFound, Unavailable
from ..state import Record, StateStore

# One room counts as much as this many CPU percent when comparing nodes: the room
# count reacts at once to placements made in the same second, CPU only at the next
# heartbeat.
CPU_PERCENT_PER_ROOM = 25.0


def _usable(node: Record | None, exclude: Iterable[str]) -> bool:
    return node is not None and not node.get("draining") and node["node_id"] not in set(exclude)


async def _look(
    store: StateStore, name: str, exclude: frozenset[str], must_create: bool
) -> tuple[dict[str, Record], Record | None, Record | None]:
    """The live nodes, the room's record, and its node if the room may stay there."""
    nodes = {n["node_id"]: n for n in await store.list_nodes()}
    record = await store.get_room(name)
    if must_create and record is not None:
        raise Conflict(f"room {name!r} exists", code="room_exists")
    node = nodes.get(record.get("node_id") or "") if record is not None else None
    return nodes, record, node if _usable(node, exclude) else None


async def place_room(
    store: StateStore,
    name: str,
    *,
    auto_create: bool = True,
    exclude: frozenset[str] = frozenset(),
    options: dict[str, Any] | None = None,
    must_create: bool = False,
) -> tuple[Record, Record]:
    """Returns (room record, node record), placing or re-placing the room if needed.

    A room whose node is alive keeps it; one whose node is dead, draining or
    excluded (found unreachable by the caller) moves. Placements are serialised by
    one shared lock so that rooms created in a burst spread over the nodes.
    """
    nodes, record, node = await _look(store, name, exclude, must_create)
    if node is not None:
        assert record is not None
        return record, node
    if record is None and not auto_create and not must_create:
        raise NotFound(f"no room {name!r}", code="room_not_found")
    async with store.lock("placement", ttl_s=5.0, wait_s=5.0):
        nodes, record, node = await _look(store, name, exclude, must_create)  # again, under the lock
        if node is not None:
            assert record is not None
            return record, node
        candidates = [n for n in nodes.values() if _usable(n, exclude)]
        if not candidates:
            raise Unavailable("no media node is available; try again shortly", code="no_node_available")
        rooms_on = Counter(r.get("node_id") for r in await store.list_rooms())
        best = min(
            candidates,
            key=lambda n: (rooms_on[n["node_id"]] + float(n.get("cpu_percent", 0)) / CPU_PERCENT_PER_ROOM, n["node_id"]),
        )
        now = time.time()

        def assign(current: Record | None) -> Record:
            base = current or {"name": name, "created_at": round(now, 3), **(options or {})}
            return {**base, "node_id": best["node_id"], "node_url": best["url"], "placed_at": round(now, 3)}

        placed = await store.update_room(name, assign)
        assert placed is not None
        return placed, best
