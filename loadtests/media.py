"""Pre-encoded media and packet-level frame counting, for benchmarks.

The benchmark measures the server, so its clients avoid work: the publisher loops
media encoded once at start-up, and subscribers count frames from RTP headers
instead of decoding them.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from teller.client.sources import PacedTrack
from teller.sfu.rtp import vp8_keyframe_start

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_TIME_BASE = fractions.Fraction(1, 48000)


def encode_video(width: int = 640, height: int = 480, fps: int = 30, seconds: float = 4.0, bitrate: int = 1_000_000) -> list[bytes]:
    """VP8 frames of moving gradients with sensor-like noise, at about `bitrate` (CBR).

    Camera-like: a keyframe of a few tens of kilobytes, deltas of a few kilobytes.
    The first frame is the only keyframe of the loop.
    """
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.framerate = fractions.Fraction(fps, 1)
    codec.time_base = fractions.Fraction(1, fps)
    codec.bit_rate = bitrate
    codec.gop_size = int(fps * seconds) + 1
    rate = f"{bitrate // 1000}k"
    codec.options = {
        "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "threads": "1",
        "minrate": rate, "maxrate": rate, "bufsize": rate, "static-thresh": "0",
    }
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(int(fps * seconds)):
        image = np.empty((height, width, 3), np.float32)
        image[..., 0] = 128 + 100 * np.sin((xx + i * 4) / 40.0)
        image[..., 1] = 128 + 100 * np.cos((yy - i * 3) / 30.0)
        image[..., 2] = (xx + yy + i * 5) % 256
        image += rng.normal(0, 8, (height, width, 1))
        frame = av.VideoFrame.from_ndarray(np.clip(image, 0, 255).astype(np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        frames += [bytes(p) for p in codec.encode(frame)]
    frames += [bytes(p) for p in codec.encode(None)]
    return frames


def encode_audio(seconds: float = 1.0) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48000
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 32000
    out = []
    samples = 960
    for i in range(int(seconds / 0.02)):
        t = (np.arange(samples) + i * samples) / 48000
        pcm = (np.sin(2 * math.pi * 440 * t) * 6000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(pcm, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = i * samples
        for packet in codec.encode(frame):
            out.append(bytes(packet))
    return out


class PreEncodedTrack(PacedTrack):
    """Loops pre-encoded packets in real time; a keyframe request restarts the loop."""

    def __init__(self, kind: str, packets: list[bytes], rate: float, step: int, time_base: fractions.Fraction) -> None:
        super().__init__(rate)
        self.kind = kind
        self._packets = packets
        self._step = step
        self._time_base = time_base
        self._index = 0
        self.keyframes_forced = 0

    def request_keyframe(self) -> None:
        if self._index != 0:
            self._index = 0
            self.keyframes_forced += 1

    async def recv(self) -> av.Packet:
        slot = await self._next_slot()
        packet = av.Packet(self._packets[self._index])
        packet.pts = slot * self._step
        packet.time_base = self._time_base
        self._index = (self._index + 1) % len(self._packets)
        return packet


@dataclass
class FrameCounter:
    """Counts complete VP8 frames of one subscription from its RTP packets."""

    joined_at: float
    first_keyframe_at: float | None = None
    frames: list[tuple[float, int]] = field(default_factory=list)  # (arrival, RTP timestamp)
    audio_packets: int = 0
    _ts: int | None = None
    _start_seq: int | None = None
    _count: int = 0
    _keyframe: bool = False

    def on_video(self, seq: int, ts: int, marker: bool, payload: bytes) -> None:
        if ts != self._ts:
            self._ts, self._start_seq, self._count, self._keyframe = ts, None, 0, False
        if payload and payload[0] & 0x10 and not payload[0] & 0x07:
            self._start_seq = seq
            self._keyframe = vp8_keyframe_start(payload, 0)
        self._count += 1
        if marker and self._start_seq is not None and ((seq - self._start_seq) & 0xFFFF) + 1 == self._count:
            now = time.monotonic()
            if self._keyframe and self.first_keyframe_at is None:
                self.first_keyframe_at = now
            if self.first_keyframe_at is not None:
                self.frames.append((now, ts))


def count_frames(receiver: Any, counter: FrameCounter, kind: str) -> None:
    """Replace an aiortc receiver's packet handler with a counter (no jitter buffer, no decoder)."""

    if kind == "video":

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            counter.on_video(packet.sequence_number, packet.timestamp, bool(packet.marker), packet.payload)

    else:

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            counter.audio_packets += 1

    receiver._handle_rtp_packet = handle


def frame_delivery(stamps: Iterable[int], ticks_per_frame: int = 3000) -> tuple[int, int]:
    """(frames received, frames expected) from the RTP timestamps of complete frames.

    Expected is the span between the first and last timestamp; timestamps are taken
    relative to the first one seen, so a wrap past 2**32 (every 13 hours at 90 kHz,
    from a random start: about one subscriber-minute in 800) is no gap. Sorting the raw
    values put a wrapped window's newest frames first and counted 0.1 % delivery."""
    base: int | None = None
    relative: set[int] = set()
    for ts in stamps:
        if base is None:
            base = ts
        relative.add(((ts - base + 0x80000000) & 0xFFFFFFFF) - 0x80000000)
    if not relative:
        return 0, 0
    return len(relative), (max(relative) - min(relative)) // ticks_per_frame + 1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def measure_window(counters: list[FrameCounter], duration: float, warmup: float) -> None:
    """Once every subscriber shows video: warm up, measure, print the result as JSON.

    The orchestrator reads the server's CPU time at `window_start` and `window_end`.
    """
    deadline = time.monotonic() + 10
    while any(c.first_keyframe_at is None for c in counters):
        if time.monotonic() > deadline:
            raise SystemExit("a subscriber never received a keyframe")
        await asyncio.sleep(0.01)
    await asyncio.sleep(warmup)
    start = time.monotonic()
    print(json.dumps({"event": "window_start"}), flush=True)
    await asyncio.sleep(duration)
    end = time.monotonic()
    print(json.dumps({"event": "window_end"}), flush=True)
    ratios, gaps = [], []
    for counter in counters:
        frames = [(t, ts) for t, ts in counter.frames if start <= t <= end]
        if len(frames) < 2:
            ratios.append(0.0)
            continue
        received, expected = frame_delivery(ts for _, ts in frames)
        ratios.append(received / expected)
        gaps += [1000 * (b[0] - a[0]) for a, b in zip(frames, frames[1:])]
    result = {
        "event": "result",
        "delivery_min": min(ratios),
        "delivery_mean": statistics.fmean(ratios),
        "frame_gap_p99_ms": percentile(gaps, 99),
        "join_ms": [1000 * (c.first_keyframe_at - c.joined_at) for c in counters],  # type: ignore[operator]
        "audio_packets_min": min(c.audio_packets for c in counters),
    }
    print(json.dumps(result), flush=True)


def report(n: int, join: str, video_bps: float, cpu_s: float, window_s: float, result: dict[str, Any]) -> dict[str, Any]:
    """One benchmark line: the server's CPU over the window, and what subscribers saw."""
    return {
        "subscribers": n,
        "join": join,
        "window_s": round(window_s, 2),
        "publisher_video_kbps": round(video_bps / 1000),
        "server_cpu_ms_per_stream_s": round(1000 * cpu_s / (n * window_s), 2),
        "server_cpu_percent": round(100 * cpu_s / window_s, 1),
        "video_delivery_ratio_min": round(result["delivery_min"], 4),
        "video_delivery_ratio_mean": round(result["delivery_mean"], 4),
        "frame_gap_p99_ms": round(result["frame_gap_p99_ms"], 1),
        "join_to_first_frame_ms": {
            "p50": round(percentile(result["join_ms"], 50), 1),
            "p95": round(percentile(result["join_ms"], 95), 1),
        },
    }
