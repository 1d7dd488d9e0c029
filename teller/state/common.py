"""What both state backends share: the checks that keep them answering alike, and the
buffered bus subscription."""

from __future__ import annotations

import asyncio
import json
import re
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..errors import BadRequest
from .base import BusSubscription, Record

log = logging.getLogger("teller.state")

# Queue scores in Redis are doubles: -priority * PRIORITY_SPAN + arrival order must
# stay exact, so both backends refuse priorities the Redis score could not order.
PRIORITY_SPAN = 1e12
MAX_PRIORITY = 9000
SUBSCRIPTION_BUFFER = 10_000


def json_copy(value: Any) -> Any:
    """A deep copy that also proves the value is JSON, as it must be for Redis."""
    return json.loads(json.dumps(value))


KIND = re.compile(r"^[a-z][a-z_]{0,31}$")


def check_kind(kind: str) -> str:
    """Document kinds become key parts: a fixed, small alphabet."""
    if not isinstance(kind, str) or not KIND.match(kind):
        raise ValueError(f"a document kind is 1-32 lowercase letters or '_', not {kind!r}")
    return kind


def check_priority(priority: int) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
        raise BadRequest(
            f"priority must be an integer between {-MAX_PRIORITY} and {MAX_PRIORITY}",
            priority=repr(priority),
        )
    return priority


def check_scalar(value: Any) -> Any:
    """remove_participants_where compares JSON scalars only: Lua cannot compare tables."""
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise TypeError(f"can only match a JSON scalar, not {type(value).__name__}")
    return value


def same_scalar(a: Any, b: Any) -> bool:
    """JSON equality: True is not 1 (Python says it is; JSON and Lua say it is not)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def ttl_ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


class QueueSubscription(BusSubscription):
    """Messages pushed by a producer into a bounded queue.

    A slow reader must not grow memory without limit or stall publishers, so when
    the buffer is full the oldest message is dropped and a warning logged.
    """

    def __init__(
        self,
        channels: tuple[str, ...],
        on_close: Callable[[QueueSubscription], None] | None = None,
        maxsize: int = SUBSCRIPTION_BUFFER,
    ) -> None:
        self.channels = frozenset(channels)
        self._queue: asyncio.Queue[tuple[str, Record] | None] = asyncio.Queue(maxsize)
        self._on_close = on_close
        self._closed = False
        self.dropped = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def deliver(self, channel: str, message: Record) -> None:
        if self._closed:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "bus subscriber is not keeping up; dropped its oldest message",
                    extra={"channels": sorted(self.channels), "dropped": self.dropped},
                )
        self._queue.put_nowait((channel, message))

    async def __aiter__(self) -> AsyncIterator[tuple[str, Record]]:
        while True:
            item = await self._queue.get()
            if item is None:
                # Leave the end marker for any other reader of this subscription.
                self._queue.put_nowait(None)
                return
            yield item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        if self._on_close is not None:
            self._on_close(self)
