"""A field device's own recording: what the camera sees is kept on the device, whatever
the link does, and the part the bank missed is uploaded afterwards.

A body camera records continuously; the link to the bank comes and goes. So the device
pulls frames from its sources itself (`DeviceFeed`), hands each to a local recorder and
to whichever live tracks the SDK is publishing at the moment. A dropped or failed peer
connection then stops only the live copy, never the local one, and a republish after a
long drop takes new live tracks from the same feed.

`LocalRecorder` encodes in its own thread (VP8 and Opus in WebM, one file per kind and
segment, `segment_s` long) and keeps the last `keep_s` seconds of closed segments.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger("teller.client")

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)


@dataclass
class LocalSegment:
    path: Path
    kind: str  # "video" or "audio"
    codec: str  # "vp8" or "opus"
    start_wall: float
    end_wall: float
    uploaded: bool = False

    def overlaps(self, start: float, end: float) -> bool:
        return self.start_wall < end and start < self.end_wall


class _Writer:
    """One open segment file of one kind."""

    def __init__(self, path: Path, kind: str, first: Any, wall: float) -> None:
        self.path, self.kind, self.start_wall, self.end_wall = path, kind, wall, wall
        self.container = av.open(str(path), "w", format="webm")
        if kind == "video":
            stream = self.container.add_stream("libvpx", rate=30)
            stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
            stream.bit_rate = 600_000
            stream.codec_context.time_base = VIDEO_TIME_BASE
            stream.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        else:
            stream = self.container.add_stream("libopus", rate=48000)
            stream.layout = first.layout.name
        self.stream = stream
        self.pts0: int | None = None
        self.samples = 0
        self._resampler = av.AudioResampler(format="s16", layout=first.layout.name, rate=48000) if kind == "audio" else None

    def write(self, frame: Any, wall: float) -> None:
        if self.kind == "video":
            if frame.pts is None or frame.time_base is None:
                return
            pts = int(frame.pts * frame.time_base / VIDEO_TIME_BASE)
            self.pts0 = pts if self.pts0 is None else self.pts0
            out = frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
            out.pts, out.time_base = pts - self.pts0, VIDEO_TIME_BASE
            frames = [out]
        else:
            assert self._resampler is not None
            frames = []
            for f in self._resampler.resample(frame):
                f.pts, f.time_base = self.samples, fractions.Fraction(1, 48000)
                self.samples += f.samples
                frames.append(f)
        for f in frames:
            for packet in self.stream.encode(f):
                self.container.mux(packet)
        self.end_wall = wall

    def close(self) -> None:
        with contextlib.suppress(av.FFmpegError, ValueError):
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        self.container.close()


class LocalRecorder:
    def __init__(self, directory: Path, *, segment_s: float = 5.0, keep_s: float = 600.0) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.segment_s = segment_s
        self.keep_s = keep_s
        self.segments: list[LocalSegment] = []
        self.dropped = 0
        self.errors = 0
        self._queue: queue.Queue[tuple[str, Any, float] | None] = queue.Queue(300)
        self._writers: dict[str, _Writer] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="device-recorder", daemon=True)
        self._thread.start()

    def offer(self, kind: str, frame: Any) -> None:
        """On the event loop: a copy of the frame and one queue put; the encoding happens
        in the recorder's thread. The copy is needed: the live encoder reads the same
        frame in its own thread, and a PyAV frame's converter is not thread-safe."""
        if self._queue.full():
            self.dropped += 1
            return
        self._queue.put_nowait((kind, _copy(frame), time.time()))

    def closed_segments(self, start: float, end: float) -> list[LocalSegment]:
        """Finished segments that overlap [start, end], oldest first."""
        with self._lock:
            return [s for s in self.segments if s.overlaps(start, end)]

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            kind, frame, wall = item
            try:
                self._write(kind, frame, wall)
            except Exception:
                self.errors += 1
                log.warning("local recording failed for a frame", exc_info=True)
                self._close(kind)
        for kind in list(self._writers):
            self._close(kind)

    def _write(self, kind: str, frame: Any, wall: float) -> None:
        writer = self._writers.get(kind)
        if writer is not None and wall - writer.start_wall >= self.segment_s:
            self._close(kind)
            writer = None
        if writer is None:
            self._count += 1
            path = self.directory / f"{int(wall * 1000)}-{self._count:05d}-{kind}.webm"
            writer = self._writers[kind] = _Writer(path, kind, frame, wall)
        writer.write(frame, wall)

    def _close(self, kind: str) -> None:
        writer = self._writers.pop(kind, None)
        if writer is None:
            return
        with contextlib.suppress(av.FFmpegError, OSError):
            writer.close()
        segment = LocalSegment(writer.path, kind, "vp8" if kind == "video" else "opus", writer.start_wall, writer.end_wall)
        with self._lock:
            self.segments.append(segment)
            horizon = time.time() - self.keep_s
            for old in [s for s in self.segments if s.end_wall < horizon]:
                self.segments.remove(old)
                old.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)


def _copy(frame: Any) -> Any:
    if isinstance(frame, av.VideoFrame):
        copy = av.VideoFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name)
    else:
        copy = av.AudioFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name)
        copy.sample_rate = frame.sample_rate
    copy.pts, copy.time_base = frame.pts, frame.time_base
    return copy


class _LiveTrack(MediaStreamTrack):
    """What a peer connection sends: the feed's latest frames, never waiting on the link."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._frames: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)

    def put(self, frame: Any) -> None:
        if self._frames.full():
            self._frames.get_nowait()  # an encoder that fell behind gets the newest
        self._frames.put_nowait(frame)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        return await self._frames.get()


class DeviceFeed:
    """Pulls the device's sources once; the local recorder and the live tracks share it."""

    def __init__(self, sources: list[MediaStreamTrack], recorder: LocalRecorder | None) -> None:
        self.sources = sources
        self.recorder = recorder
        self._live: list[_LiveTrack] = []
        self._pumps = [asyncio.create_task(self._pump(s)) for s in sources]

    def live_tracks(self) -> list[MediaStreamTrack]:
        """A fresh set for a publication; the previous set stops receiving frames."""
        for track in self._live:
            track.stop()
        self._live = [_LiveTrack(s.kind) for s in self.sources]
        return list(self._live)

    async def _pump(self, source: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await source.recv()
                if self.recorder is not None:
                    self.recorder.offer(source.kind, frame)
                for track in self._live:
                    if track.kind == source.kind and track.readyState == "live":
                        track.put(frame)
        except MediaStreamError:
            return

    async def close(self) -> None:
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for track in self._live:
            track.stop()
        for source in self.sources:
            source.stop()
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)
