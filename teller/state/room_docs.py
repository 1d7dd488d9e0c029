"""A room's doc that the media node serving it keeps in the shared store.

The quality monitor and the speech hub each keep one per room (kinds `quality` and
`speech`), so that any signalling process can answer for a room without asking the
node. Writes never hold up the caller. A doc is removed only by the node that wrote
it: a room that moved may already have its new node's doc.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .base import StateStore

log = logging.getLogger("teller.state")

WRITE_TIMEOUT_S = 2.0


class RoomDocs:
    def __init__(self, store: StateStore, kind: str, node_id: str, timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self.store = store
        self.kind = kind
        self.node_id = node_id
        self.timeout_s = timeout_s
        self._writes: set[asyncio.Task[Any]] = set()

    def put(self, room: str, record: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        """Writes the record (or what the callable gives when the write runs)."""

        async def write() -> None:
            value = record() if callable(record) else record
            await self.store.update_doc(self.kind, room, lambda _old: value)

        self._spawn(write(), "write")

    def forget(self, room: str) -> None:
        node_id = self.node_id

        def mine_gone(old: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if old is None or old.get("node_id") == node_id else old

        self._spawn(self.store.update_doc(self.kind, room, mine_gone), "remove")

    def _spawn(self, operation: Any, what: str) -> None:
        async def run() -> None:
            try:
                await asyncio.wait_for(operation, self.timeout_s)
            except Exception:
                log.debug("cannot %s the %s doc", what, self.kind, exc_info=True)

        task = asyncio.ensure_future(run())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def close(self, cancel: bool = False) -> None:
        """Waits for the writes under way (cancelled first with `cancel`: the store may be closing)."""
        if cancel:
            for task in self._writes:
                task.cancel()
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=self.timeout_s)
