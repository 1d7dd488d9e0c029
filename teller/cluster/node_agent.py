"""What makes an SFU node part of a cluster: heartbeat, commands, drain.

The same agent runs in the embedded server against the memory store, so the
registry, the mirror and the commands behave the same in both modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import Config
from ..errors import Conflict
from ..sfu import Node
from ..state import Record, StateStore, StateUnavailable
from .mirror import StateMirror

log = logging.getLogger("teller.cluster.node")

SIGNALS_CHANNEL = "signals"


def node_channel(node_id: str) -> str:
    return f"node:{node_id}"


class NodeAgent:
    def __init__(self, node: Node, store: StateStore, config: Config, url: str) -> None:
        self.node = node
        self.store = store
        self.config = config
        self.url = url
        self.mirror = StateMirror(node, store, url, timeline_retention_s=config.state.timeline_retention_s)
        self._tasks: list[asyncio.Task[Any]] = []
        self._store_ok = True
        self.drained = asyncio.Event()
        # Commands other components of this process answer (op -> handler), run as tasks
        # so that a slow one (a snapshot waits for a frame) holds up no other command.
        self.handlers: dict[str, Callable[[Record], Awaitable[None]]] = {}
        self._handling: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.node.room_guard = self._guard
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="node-heartbeat"),
            asyncio.create_task(self._command_loop(), name="node-commands"),
        ]

    def record(self) -> Record:
        stats = self.node.stats()
        return {
            "node_id": self.node.id,
            "url": self.url,
            "pid": os.getpid(),
            "draining": self.node.draining,
            "started_at": round(self.node.started_at, 3),
            "cpu_percent": stats["cpu_percent"],
            "rooms": stats["rooms"],
            "participants": stats["participants"],
            "tracks": stats["publications"],
            "heartbeat_at": round(time.time(), 3),
        }

    async def heartbeat(self) -> None:
        present = await self.store.heartbeat(self.node.id, self.record(), self.config.cluster.node_ttl_s)
        if not present or self.mirror.behind or not self._store_ok:
            if not self._store_ok:
                log.info("state store reachable again; republishing this node's state")
            await self.mirror.resync()
        self._store_ok = True

    async def _heartbeat_loop(self) -> None:
        interval = self.config.cluster.heartbeat_interval_s
        while True:
            try:
                await self.heartbeat()
            except StateUnavailable:
                if self._store_ok:
                    log.warning("state store unreachable; media goes on, retrying")
                self._store_ok = False
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(interval)

    async def _guard(self, name: str) -> Record | None:
        """Refuses to open a room another live node holds (a stale route)."""
        record = await self.store.get_room(name)
        owner = record.get("node_id") if record else None
        if owner and owner != self.node.id and await self.store.get_node(owner) is not None:
            raise Conflict("the room is hosted by another node", code="room_moved")
        return record

    async def _command_loop(self) -> None:
        subscription = await self._subscribe()
        try:
            async for _channel, message in subscription:
                try:
                    await self._command(message)
                except Exception:
                    log.exception("node command failed", extra={"command": message.get("op")})
        finally:
            await subscription.close()

    async def _subscribe(self) -> Any:
        delay = 0.1
        while True:
            try:
                return await self.store.subscribe(node_channel(self.node.id))
            except StateUnavailable:
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def _command(self, message: Record) -> None:
        op = message.get("op")
        room = self.node.rooms.get(str(message.get("room", "")))
        if op == "close_room" and room is not None:
            await self.node.close_room(room.name, str(message.get("reason", "closed_by_api")))
        elif op == "remove_participant" and room is not None:
            await room.remove(str(message.get("participant_id")), str(message.get("reason", "removed_by_api")))
        elif op == "drain":
            asyncio.create_task(self.drain(), name="node-drain")
        elif isinstance(op, str) and op in self.handlers:
            task = asyncio.create_task(self.handlers[op](message), name=f"node-{op}")
            self._handling.add(task)
            task.add_done_callback(self._handling.discard)

    async def drain(self) -> None:
        """Stop taking rooms, move every room elsewhere, then report drained."""
        if self.node.draining:
            await self.drained.wait()
            return
        self.node.draining = True
        log.info("draining: moving rooms to other nodes")
        with contextlib.suppress(StateUnavailable):
            await self.store.heartbeat(self.node.id, self.record(), self.config.cluster.node_ttl_s)
        deadline = time.monotonic() + self.config.cluster.drain_timeout_s
        me = self.node.id
        for name, room in list(self.node.rooms.items()):
            def unplace(current: Record | None) -> Record | None:
                if current is None or current.get("node_id") != me:
                    return current
                return {**current, "node_id": None, "node_url": None, "moved_from": me, "unplaced_at": time.time()}

            try:
                await self.store.update_room(name, unplace)
            except StateUnavailable:
                log.warning("cannot unplace room while the store is down", extra={"room": name})
            await room.migrate_out("node_draining")
            if self.node.rooms.get(name) is room:
                del self.node.rooms[name]
        while self.node.rooms and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        with contextlib.suppress(Exception):
            await self.mirror.close()
        log.info("drained", extra={"rooms_left": len(self.node.rooms)})
        self.drained.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self.mirror.close()
        with contextlib.suppress(StateUnavailable):
            await self.store.remove_node(self.node.id)
