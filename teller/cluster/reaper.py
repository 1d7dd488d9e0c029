"""Failover bookkeeping: rooms of dead nodes are released and their clients told.

Every signalling process runs a reaper; one lease makes a single one act at a time.
A node is dead when its heartbeat entry has expired. Its rooms are un-placed (the
next join places them on a live node), the participants it hosted are forgotten,
and every signalling process is told so that it sends its clients on that node a
`reconnect` at once instead of waiting for their sockets to time out.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..config import Config
from ..state import Record, StateStore, StateUnavailable
from .node_agent import SIGNALS_CHANNEL

log = logging.getLogger("teller.cluster.reaper")


class Reaper:
    def __init__(self, store: StateStore, config: Config, owner: str) -> None:
        self.store = store
        self.config = config
        self.owner = owner
        self._healthy_since: float | None = None
        self.reaped_rooms = 0

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except StateUnavailable:
                self._healthy_since = None
            except Exception:
                log.exception("reaper pass failed")
            await asyncio.sleep(self.config.cluster.reaper_interval_s)

    async def tick(self) -> int:
        """One pass; returns how many rooms it released."""
        now = time.monotonic()
        if not await self.store.try_lease("reaper", self.owner, max(2.0, 4 * self.config.cluster.reaper_interval_s)):
            self._healthy_since = self._healthy_since or now
            return 0
        if self._healthy_since is None:
            self._healthy_since = now
        # After an outage every node needs a heartbeat interval or two to re-register;
        # until a whole TTL has passed with a reachable store, nobody is declared dead.
        if now - self._healthy_since < self.config.cluster.node_ttl_s:
            return 0
        live = {n["node_id"] for n in await self.store.list_nodes()}
        released = 0
        dead_nodes: set[str] = set()
        for record in await self.store.list_rooms():
            owner = record.get("node_id")
            if owner and owner not in live:
                dead_nodes.add(owner)
                released += await self._release(record["name"], owner)
            elif not owner or not record.get("sid"):
                # Un-placed, or placed by the REST API but never opened by its node.
                await self._expire_unplaced(record)
        for node_id in dead_nodes:
            log.warning("node is gone; its rooms move", extra={"node_id": node_id})
            await self.store.publish(SIGNALS_CHANNEL, {"op": "node_down", "node_id": node_id})
        self.reaped_rooms += released
        return released

    async def _release(self, name: str, dead: str) -> int:
        def unplace(current: Record | None) -> Record | None:
            if current is None or current.get("node_id") != dead:
                return current
            return {**current, "node_id": None, "node_url": None, "moved_from": dead, "unplaced_at": time.time()}

        await self.store.update_room(name, unplace)
        await self.store.remove_participants_where(name, "node_id", dead)
        return 1

    async def _expire_unplaced(self, record: Record) -> None:
        """An un-placed room nobody came back to is closed like an empty room."""
        since = record.get("unplaced_at") or record.get("created_at") or 0
        timeout = record.get("empty_timeout_s")
        if timeout is None:
            timeout = self.config.rooms.empty_timeout_s
        if time.time() - float(since) < float(timeout):
            return
        if await self.store.list_participants(record["name"]):
            return

        def drop(current: Record | None) -> Record | None:
            idle = current is not None and (not current.get("node_id") or not current.get("sid"))
            return None if idle else current

        await self.store.update_room(record["name"], drop)
