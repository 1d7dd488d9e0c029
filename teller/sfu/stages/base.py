"""The stage interface: what a stage consumes, and the one coroutine it implements.

A stage is attached to each publication that matches its spec and reads frames
from a bounded stream. A stage that falls behind loses frames (counted), never
slows forwarding.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class StageSpec:
    kinds: frozenset[str]
    form: Literal["encoded", "decoded"]
    # Publisher roles the stage applies to; None: every role.
    roles: frozenset[str] | None = None
    # Track sources ("camera", "screen", "microphone"...) it applies to; None: every source.
    sources: frozenset[str] | None = None

    def matches(self, kind: str, role: str) -> bool:
        return kind in self.kinds and (self.roles is None or role in self.roles)


@dataclass(frozen=True)
class EncodedFrame:
    """One assembled (not decoded) frame, as the publisher sent it."""

    kind: str
    mime_type: str
    timestamp: int
    data: bytes
    keyframe: bool


@dataclass
class StageContext:
    room: str
    track: dict[str, Any]
    participant: dict[str, Any]
    options: dict[str, Any]
    send_data: Callable[[str, Any], None]
    request_keyframe: Callable[[], None]
    # Shared services a process offers its stages by name (the speech hub...).
    services: Mapping[str, Any] = field(default_factory=dict)


class FrameStream(Generic[T]):
    """A bounded queue of frames for one stage; full means the newest frame is dropped."""

    def __init__(self, maxsize: int = 30) -> None:
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(maxsize)
        self.delivered = 0
        self.dropped = 0
        self.closed = False

    def offer(self, frame: T) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(frame)
            self.delivered += 1
        except asyncio.QueueFull:
            self.dropped += 1

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        while True:  # make room for the end marker
            try:
                self._queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()

    def __aiter__(self) -> FrameStream[T]:
        return self

    async def __anext__(self) -> T:
        frame = await self._queue.get()
        if frame is None:
            raise StopAsyncIteration
        return frame


class Stage(ABC):
    name: ClassVar[str]
    spec: ClassVar[StageSpec]

    @classmethod
    def wants(cls, kind: str, role: str, services: Mapping[str, Any]) -> bool:
        """Whether to attach to a publication; a stage whose choice rests on settings
        (which roles to transcribe) decides here, before any decoder is built."""
        return cls.spec.matches(kind, role)

    @abstractmethod
    async def run(self, ctx: StageContext, frames: FrameStream[Any]) -> None:
        """Consume one publication's frames until the stream ends."""
