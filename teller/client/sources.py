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


class SpeechTrack(PacedTrack):
    """A microphone that says what it is given (48 kHz int16 mono) and is silent between.

    Like a real microphone it never stops sending, so a listener's voice activity
    detection sees each sentence end. `say` resolves with the wall time of the
    sentence's last sample: the reference for caption and alert latency.
    """

    kind = "audio"

    def __init__(self, sample_rate: int = 48000, noise_level: float = 0.0) -> None:
        super().__init__(1 / AUDIO_PTIME)
        self.sample_rate = sample_rate
        self._samples = int(AUDIO_PTIME * sample_rate)
        self._noise = noise_level
        self._buffer = np.zeros(0, np.int16)
        self._ends: list[tuple[int, asyncio.Future[float]]] = []  # (sample index, future)
        self._sent = 0

    def say(self, pcm: np.ndarray) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._buffer = np.concatenate((self._buffer, pcm.astype(np.int16)))
        self._ends.append((self._sent + len(self._buffer), future))
        return future

    async def recv(self) -> av.AudioFrame:
        index = await self._next_slot()
        pcm = self._buffer[: self._samples]
        self._buffer = self._buffer[self._samples :]
        if len(pcm) < self._samples:
            fill = np.zeros(self._samples - len(pcm), np.int16)
            if self._noise:
                fill = (np.random.default_rng(index).standard_normal(len(fill)) * self._noise * 32767).astype(np.int16)
            pcm = np.concatenate((pcm, fill))
        self._sent += self._samples
        now = time.time()
        while self._ends and self._ends[0][0] <= self._sent:
            _, future = self._ends.pop(0)
            if not future.done():
                future.set_result(now)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = index * self._samples
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        return frame


def media_tracks(file: str | None, loop: bool, width: int, height: int, fps: int) -> list[MediaStreamTrack]:
    """The file's tracks, or a tone and a test pattern (what `teller client` publishes)."""
    if file:
        audio, video = file_tracks(file, loop=loop)
        return [t for t in (audio, video) if t is not None]
    return [ToneTrack(), TestPatternTrack(width, height, fps)]
