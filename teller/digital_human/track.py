"""The avatar as a video track: frames on a drift-free clock, drawn ahead in worker threads.

Frame k is due at start + k / fps and stamped with that time (90 kHz), whenever it is
actually returned. While frame k is encoded and sent, frame k+1 is already being drawn
for its own due time (with the loudness the voice will have then), so the event loop
never draws and a frame is normally ready before it is due. Frames of one track are
drawn one after another, in order; tracks share a small pool of threads.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import fractions
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .renderer import AvatarRenderer

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
RESYNC_S = 0.2  # further behind than this, the clock jumps to now instead of bursting
RENDER_HISTORY = 300  # frames whose drawing time the figures cover
SHARED_WORKERS = 2

_shared: concurrent.futures.ThreadPoolExecutor | None = None
_shared_lock = threading.Lock()


def shared_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The process's avatar drawing threads, made on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = concurrent.futures.ThreadPoolExecutor(SHARED_WORKERS, thread_name_prefix="avatar")
        return _shared


class LevelSource(Protocol):
    def level_at(self, t: float) -> float:
        """Speech loudness 0..1 at monotonic time t (possibly ~100 ms in the future)."""
        ...


@dataclass
class _Slot:
    """Frame k: when it is due and, once drawn, its I420 pixels."""

    k: int
    due: float
    frame: asyncio.Future[np.ndarray]
    job: concurrent.futures.Future[np.ndarray] | None = None


class AvatarTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, renderer: AvatarRenderer, levels: LevelSource, *,
                 executor: concurrent.futures.Executor | None = None, lookahead_frames: int = 1) -> None:
        super().__init__()
        self.renderer = renderer
        self._levels = levels
        self._executor = executor
        self._lookahead = max(1, lookahead_frames)
        self._period = 1.0 / renderer.fps
        self._start: float | None = None
        self._epoch = 0.0
        self._k = 0
        self._slots: collections.deque[_Slot] = collections.deque()
        self._busy = False  # a frame of this track is being drawn
        self._loop: asyncio.AbstractEventLoop | None = None
        self._render_ms: collections.deque[float] = collections.deque(maxlen=RENDER_HISTORY)
        self.frames_sent = 0
        self.late = 0
        self.resyncs = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._loop = asyncio.get_running_loop()
            self._start = self._epoch = now
        elif now - self._due(self._k) > RESYNC_S:
            self._resync(now)
        self._fill()
        slot = self._slots[0]
        wait = slot.due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if not slot.frame.done():
            if self.frames_sent:
                self.late += 1
            try:
                await asyncio.shield(slot.frame)
            except asyncio.CancelledError:
                if self.readyState != "live":  # stopped while waiting
                    raise MediaStreamError from None
                raise
        if self.readyState != "live":
            raise MediaStreamError
        i420 = slot.frame.result()
        self._slots.popleft()
        self._k = slot.k + 1
        self._fill()

        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = round((slot.due - self._epoch) * VIDEO_CLOCK)
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        for slot in self._slots:
            if slot.job is not None:
                slot.job.cancel()  # a queued frame never starts; one being drawn ends in ms
            if not slot.frame.done():
                slot.frame.cancel()
        self._slots.clear()

    def stats(self) -> dict[str, Any]:
        drawn = sorted(self._render_ms)
        return {
            "frames_sent": self.frames_sent,
            "late": self.late,
            "resyncs": self.resyncs,
            "render_ms_mean": round(sum(drawn) / len(drawn), 3) if drawn else None,
            "render_ms_p99": round(drawn[min(len(drawn) - 1, int(0.99 * len(drawn)))], 3) if drawn else None,
        }

    def _due(self, k: int) -> float:
        assert self._start is not None
        return self._start + k * self._period

    def _resync(self, now: float) -> None:
        """Far behind (a stalled loop, a slow consumer): skip to the frame due now. Frames
        drawn for the skipped times are dropped, so the picture matches the voice again."""
        assert self._start is not None
        self.resyncs += 1
        self._k = int((now - self._start) / self._period)
        while self._slots and self._slots[0].k < self._k:
            old = self._slots.popleft()
            if old.job is not None:
                old.job.cancel()

    def _fill(self) -> None:
        """Keep the next `lookahead` frames wanted, and one of them being drawn: once frame
        k is out, frames k+1 .. k+lookahead are drawn or being drawn."""
        assert self._loop is not None
        last = self._slots[-1].k if self._slots else self._k - 1
        for k in range(last + 1, self._k + self._lookahead):
            self._slots.append(_Slot(k=k, due=self._due(k), frame=self._loop.create_future()))
        self._pump()

    def _pump(self) -> None:
        if self._busy or self.readyState != "live":
            return
        slot = next((s for s in self._slots if s.job is None), None)
        if slot is None:
            return
        level = self._levels.level_at(slot.due)  # here, on the loop: the source is not thread-safe
        slot.job = (self._executor or shared_executor()).submit(self._draw, slot.due, level)
        self._busy = True
        slot.job.add_done_callback(lambda job: self._call_soon(self._drawn, slot, job))

    def _call_soon(self, *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(*args)
        except RuntimeError:  # the loop closed after the track stopped: nobody waits
            pass

    def _draw(self, due: float, level: float) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self.renderer.render(due, level)
        finally:
            self._render_ms.append((time.perf_counter() - started) * 1000)

    def _drawn(self, slot: _Slot, job: concurrent.futures.Future[np.ndarray]) -> None:
        self._busy = False
        if not slot.frame.done():
            if job.cancelled():
                slot.frame.cancel()
            elif job.exception() is not None:
                slot.frame.set_exception(job.exception())  # type: ignore[arg-type]
            else:
                slot.frame.set_result(job.result())
        self._pump()
