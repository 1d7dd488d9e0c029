"""Media to publish: a test pattern with a tone, a media file, or frames from Python."""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError, MediaStreamTrack

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


class PacedTrack(MediaStreamTrack):
    """Paces frames in real time from the first recv(), counting what it produced."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self._period = 1.0 / rate
        self._start: float | None = None
        self.frames_sent = 0

    async def _next_slot(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        index = self.frames_sent
        wait = self._start + index * self._period - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.frames_sent += 1
        return index


class TestPatternTrack(PacedTrack):
    """Colour bars moving one step a frame, with a bright block whose position encodes the index."""

    kind = "video"
    __test__ = False  # not a pytest class, despite the name

    def __init__(self, width: int = 640, height: int = 480, fps: int = 30) -> None:
        super().__init__(fps)
        self.width, self.height, self.fps = width, height, fps
        bars = np.array(
            [[235, 235, 235], [235, 235, 16], [16, 235, 235], [16, 235, 16],
             [235, 16, 235], [235, 16, 16], [16, 16, 235], [16, 16, 16]],
            dtype=np.uint8,
        )
        columns = np.repeat(bars, math.ceil(width / 8), axis=0)[:width]
        self._base = np.ascontiguousarray(np.broadcast_to(columns, (height, width, 3)))

    async def recv(self) -> av.VideoFrame:
        index = await self._next_slot()
        image = np.roll(self._base, index * 4, axis=1)
        block = max(8, self.height // 12)
        x = (index * block) % max(block, self.width - block)
        image[:block, x : x + block] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index * (VIDEO_CLOCK // self.fps)
        frame.time_base = VIDEO_TIME_BASE
        return frame


class ToneTrack(PacedTrack):
    """A sine tone in 20 ms frames of 48 kHz mono."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, sample_rate: int = 48000, level: float = 0.2) -> None:
        super().__init__(1 / AUDIO_PTIME)
        self.frequency, self.sample_rate, self.level = frequency, sample_rate, level
        self._samples = int(AUDIO_PTIME * sample_rate)

    async def recv(self) -> av.AudioFrame:
        index = await self._next_slot()
        t = (np.arange(self._samples) + index * self._samples) / self.sample_rate
        pcm = (np.sin(2 * math.pi * self.frequency * t) * self.level * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = index * self._samples
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        return frame


class FrameQueueTrack(MediaStreamTrack):
    """Publishes frames that Python code pushes in; a full queue drops the oldest."""

    def __init__(self, kind: str, maxsize: int = 30) -> None:
        super().__init__()
        self.kind = kind
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.dropped = 0

    def push(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(frame)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        return await self._queue.get()


def file_tracks(path: str, loop: bool = False) -> tuple[MediaStreamTrack | None, MediaStreamTrack | None]:
    """(audio, video) tracks that play a media file in real time."""
    from aiortc.contrib.media import MediaPlayer

    player = MediaPlayer(path, loop=loop)
    return player.audio, player.video
