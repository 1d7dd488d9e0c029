"""Helpers for tests that receive real media."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


@dataclass
class Received:
    frames: int = 0
    first_at: float | None = None
    pts: list[int] = field(default_factory=list)
    sizes: set[tuple[int, int]] = field(default_factory=set)
    ended: bool = False


async def receive(track: MediaStreamTrack, duration: float, first_timeout: float = 5.0) -> Received:
    """Decode frames from `track` for `duration` seconds after the first one arrives."""
    out = Received()
    frame = await asyncio.wait_for(track.recv(), first_timeout)
    out.first_at = time.monotonic()
    deadline = out.first_at + duration
    while True:
        out.frames += 1
        out.pts.append(frame.pts)
        if hasattr(frame, "width"):
            out.sizes.add((frame.width, frame.height))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return out
        try:
            frame = await asyncio.wait_for(track.recv(), remaining)
        except asyncio.TimeoutError:
            return out
        except MediaStreamError:
            out.ended = True
            return out


def delivery_ratio(received: Received, step: int) -> float:
    """Frames received over frames the sender produced in the same span of timestamps."""
    if len(received.pts) < 2:
        return 0.0
    span = (max(received.pts) - min(received.pts)) // step + 1
    return len(set(received.pts)) / span


async def drain(track: MediaStreamTrack) -> int:
    """Consume a track until it ends; returns frames read."""
    n = 0
    try:
        while True:
            await track.recv()
            n += 1
    except MediaStreamError:
        return n
