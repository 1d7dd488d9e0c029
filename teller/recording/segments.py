"""Published tracks written to WebM/Matroska segment files, without transcoding.

The event loop pays one deque append per packet. One worker thread per node wakes
a few times a second and, for every track, puts packets back in order, strips the
RTP payload headers, assembles frames and appends them to the track's segment
(teller.recording.mkv). A cluster reaches the file at least every
`flush_interval_s`, so a process killed with SIGKILL leaves files that play up to
about that point.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av

from ..sfu.rtp import keyframe_detector
from .mkv import MkvWriter, TrackSpec, avc_config, vp8_dimensions

log = logging.getLogger("teller.recording")

REORDER_PACKETS = 96
MAX_PENDING_PACKETS = 20000
START_CODE = b"\x00\x00\x00\x01"
# No frame for this long inside a segment is a hole in it, not a pause of the encoder.
GAP_S = 2.0


@dataclass
class TrackMeta:
    """Written beside every segment, so a file found after a crash explains itself."""

    session_id: str
    room: str
    node_id: str
    participant_id: str
    identity: str
    name: str
    role: str
    track_id: str
    kind: str
    source: str
    codec: str
    clock_rate: int


@dataclass
class SegmentInfo:
    path: str
    index: int
    start_wall: float
    end_wall: float | None = None
    frames: int = 0
    bytes: int = 0
    width: int = 0
    height: int = 0
    closed: bool = False
    track: dict[str, Any] = field(default_factory=dict)
    # [from, to] wall times inside the segment where no media came (a dropped link):
    # the segment's span is not all covered (recording/coverage.py).
    gaps: list[list[float]] = field(default_factory=list)


def codec_name(mime: str) -> str:
    return mime.split("/")[-1].lower()


def suffix_for(codec: str) -> str:
    return ".webm" if codec in ("vp8", "vp9", "opus") else ".mkv"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    os.replace(tmp, path)


def _h264_size(frame: bytes) -> tuple[int, int]:
    """Decodes one keyframe (once per segment): an SPS parser is not worth keeping."""
    try:
        decoder = av.CodecContext.create("h264", "r")
        for packet in (av.Packet(frame), None):
            for decoded in decoder.decode(packet):
                return decoded.width, decoded.height
    except (av.FFmpegError, ValueError):
        pass
    return 0, 0


def _avcc_to_annexb(frame: bytes) -> bytes:
    out = []
    i = 0
    while i + 4 <= len(frame):
        n = int.from_bytes(frame[i : i + 4], "big")
        out.append(START_CODE + frame[i + 4 : i + 4 + n])
        i += 4 + n
    return b"".join(out)


class _Segment:
    def __init__(self, recorder: TrackRecorder, index: int, start_wall: float, ts0: int, first: bytes) -> None:
        meta = recorder.meta
        codec = recorder.codec
        width = height = 0
        private = None
        if codec == "vp8":
            width, height = vp8_dimensions(first)
        elif codec == "h264":
            sps = next((n for n in recorder.parameter_sets if n[0] & 0x1F == 7), None)
            pps = next((n for n in recorder.parameter_sets if n[0] & 0x1F == 8), None)
            if sps is not None and pps is not None:
                private = avc_config(sps, pps)
            width, height = _h264_size(_avcc_to_annexb(first))
        self.path = recorder.directory / f"{meta.participant_id}-{meta.track_id}-{index}{suffix_for(codec)}"
        self.ts0 = ts0
        self.rate = meta.clock_rate / 1000
        # Past this, the next frame rotates the segment (checked on the audio fast path).
        self.max_ts = int(recorder.segment_max_s * meta.clock_rate)
        self.writer = MkvWriter(
            str(self.path), TrackSpec(codec, width, height, codec_private=private), start_wall=start_wall,
            cluster_ms=max(100, int(recorder.flush_interval_s * 1000)),
        )
        self.info = SegmentInfo(path=self.path.name, index=index, start_wall=round(start_wall, 4),
                                width=width, height=height, track=asdict(meta))
        write_json_atomic(self.path.with_name(self.path.name + ".json"), asdict(self.info))

    def ms(self, ts: int) -> int:
        return int((ts - self.ts0) / self.rate)

    def close(self, end_wall: float) -> SegmentInfo:
        with contextlib.suppress(OSError):
            self.writer.close(max(0.0, (end_wall - self.info.start_wall) * 1000))
        self.info.end_wall = round(end_wall, 4)
        self.info.frames = self.writer.frames
        self.info.bytes = self.writer.bytes
        self.info.closed = True
        write_json_atomic(self.path.with_name(self.path.name + ".json"), asdict(self.info))
        return self.info


class TrackRecorder:
    """One publication being recorded. `tap` runs on the event loop; the rest on
    the worker's thread."""

    def __init__(self, meta: TrackMeta, directory: Path, *, flush_interval_s: float, segment_max_s: float,
                 request_keyframe: Callable[[], None]) -> None:
        self.meta = meta
        self.directory = directory
        self.flush_interval_s = flush_interval_s
        self.segment_max_s = segment_max_s
        self.codec = codec_name(meta.codec)
        self.video = meta.kind == "video"
        self._loop = asyncio.get_running_loop()
        self._request_keyframe = request_keyframe
        # Bounded: a worker that falls far behind loses the oldest packets, not memory.
        self.packets_in: collections.deque[bytes] = collections.deque(maxlen=MAX_PENDING_PACKETS)
        self.first: tuple[float, int] | None = None
        # What the publication calls per packet: first_packet once, then the bare append.
        self.tap: Callable[[bytes], None] = self.first_packet
        self._swap_tap: Callable[[Callable[[bytes], None], Callable[[bytes], None]], None] | None = None
        self.segments: list[SegmentInfo] = []
        self.parameter_sets: list[bytes] = []
        self.packets = 0
        self.packet_drops = 0
        self.frames_dropped = 0
        self.closing = False
        self.closed = threading.Event()
        self.assembly = _Assembly(self)

    def attach(self, swap: Callable[[Callable[[bytes], None], Callable[[bytes], None]], None]) -> None:
        """`swap(old, new)` replaces this recorder's tap on its publication."""
        self._swap_tap = swap

    def first_packet(self, pkt: bytes) -> None:
        """Notes when the track's first packet arrived (the wall clock of its RTP time
        zero), then hands the publication the deque's own append: nothing in Python runs
        per packet on the event loop after this."""
        if self.first is None:
            self.first = (time.time(), (pkt[4] << 24) | (pkt[5] << 16) | (pkt[6] << 8) | pkt[7])
        self.packets_in.append(pkt)
        if self._swap_tap is not None and self.tap == self.first_packet:
            self.tap = self.packets_in.append
            self._swap_tap(self.first_packet, self.tap)

    def ask_keyframe(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone at shutdown
            self._loop.call_soon_threadsafe(self._request_keyframe)

    def stats(self) -> dict[str, Any]:
        return {"track_id": self.meta.track_id, "packets": self.packets, "packet_drops": self.packet_drops,
                "frames_dropped": self.frames_dropped, "segments": len(self.segments)}


class RecordingWorker:
    """The one thread that writes every track this node records."""

    def __init__(self, period_s: float = 0.1) -> None:
        self._period = period_s
        self._tracks: list[TrackRecorder] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.busy_s = 0.0

    def add(self, track: TrackRecorder) -> None:
        with self._lock:
            self._tracks.append(track)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._work, name="recorder", daemon=True)
                self._thread.start()

    async def finish(self, track: TrackRecorder) -> list[SegmentInfo]:
        """Writes what is left of the track and closes its segment."""
        track.closing = True
        await asyncio.to_thread(track.closed.wait, 30.0)
        return track.segments

    def stop(self) -> None:
        with self._lock:
            for track in self._tracks:
                track.closing = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30.0)

    def _work(self) -> None:
        while True:
            stopping = self._stop.wait(self._period)
            started = time.perf_counter()
            with self._lock:
                tracks = list(self._tracks)
            for track in tracks:
                try:
                    self._drain(track)
                except Exception:
                    log.exception("track recording failed", extra={"track_id": track.meta.track_id,
                                                                   "session": track.meta.session_id})
                    track.closing = True
                if track.closing:
                    with contextlib.suppress(Exception):
                        track.assembly.finish()
                    track.closed.set()
                    with self._lock:
                        if track in self._tracks:
                            self._tracks.remove(track)
            self.busy_s += time.perf_counter() - started
            if stopping:
                return

    @staticmethod
    def _drain(track: TrackRecorder) -> None:
        packets = track.packets_in
        add = track.assembly.add
        while packets:
            add(packets.popleft())
        segment = track.assembly.segment
        if segment is not None and segment.writer.due(time.monotonic()):
            segment.writer.flush_cluster()


class _Assembly:
    """Reorders packets, assembles frames and rotates segments (worker thread only)."""

    def __init__(self, recorder: TrackRecorder) -> None:
        self.r = recorder
        self.pending: dict[int, bytes] = {}
        self.next_seq: int | None = None
        self.ts_cycles = 0
        self.last_ts = -1
        self.frame_ts: int | None = None
        self.frame_parts: list[bytes] = []
        self.frame_ok = True
        self.frame_key = False
        self.expect_seq: int | None = None
        self.fu: list[bytes] | None = None
        self.need_keyframe = recorder.video
        self.segment: _Segment | None = None
        self.rotate = False
        self.last_frame_ts = 0
        self.detector = keyframe_detector(recorder.meta.codec) if recorder.video else None
        codec = recorder.codec
        self.depacketize = self._vp8 if codec == "vp8" else self._h264 if codec == "h264" else None

    def add(self, pkt: bytes) -> None:
        if len(pkt) < 12:
            return
        self.r.packets += 1
        seq = (pkt[2] << 8) | pkt[3]
        next_seq = self.next_seq
        if seq == next_seq and not self.pending:  # in order: the common case
            self.next_seq = (seq + 1) & 0xFFFF
            self._packet(pkt, seq)
            return
        if next_seq is None:
            self.next_seq = (seq + 1) & 0xFFFF
            self._packet(pkt, seq)
            return
        if ((seq - next_seq) & 0xFFFF) >= 0x8000:
            return  # older than what was already written: a late duplicate
        pending = self.pending
        pending[seq] = pkt
        while next_seq in pending:
            self._packet(pending.pop(next_seq), next_seq)
            next_seq = (next_seq + 1) & 0xFFFF
        if len(pending) > REORDER_PACKETS:
            # Give up on the missing packet(s): go on from the oldest one held.
            base = next_seq
            next_seq = min(pending, key=lambda s: (s - base) & 0xFFFF)
            self.frame_ok = False
            while next_seq in pending:
                self._packet(pending.pop(next_seq), next_seq)
                next_seq = (next_seq + 1) & 0xFFFF
        self.next_seq = next_seq

    def _packet(self, pkt: bytes, seq: int) -> None:
        raw = (pkt[4] << 24) | (pkt[5] << 16) | (pkt[6] << 8) | pkt[7]
        last = self.last_ts
        if last < 0 or last - 0x80000000 <= raw <= last + 0x80000000:
            if raw > last:
                self.last_ts = raw
        elif raw < last:  # the 32-bit timestamp wrapped
            self.ts_cycles += 1 << 32
            self.last_ts = raw
        else:  # a late packet from before the wrap
            raw -= 1 << 32
        ts = raw + self.ts_cycles
        first = pkt[0]
        offset = 12 + 4 * (first & 0x0F)
        if first & 0x10:
            offset += 4 + 4 * ((pkt[offset + 2] << 8) | pkt[offset + 3])
        end = len(pkt) - pkt[-1] if first & 0x20 else len(pkt)
        if offset >= end:
            return
        if self.depacketize is None:
            segment = self.segment
            if segment is not None and ts - segment.ts0 < segment.max_ts:
                segment.writer.write(int((ts - segment.ts0) / segment.rate), pkt[offset:end], True)
            else:
                self._frame(ts, pkt[offset:end], True)
            self.last_frame_ts = ts
            return
        if ts != self.frame_ts:
            if self.frame_parts:
                self.frame_ok = False  # the previous frame never saw its marker
                self._end_frame()
            self.frame_ts = ts
            self.frame_parts = []
            self.fu = None
            self.frame_ok = self.expect_seq is None or seq == self.expect_seq
            self.frame_key = False
        elif seq != self.expect_seq:
            self.frame_ok = False
        self.expect_seq = (seq + 1) & 0xFFFF
        if self.detector is not None and self.detector(pkt, offset):
            self.frame_key = True
        if not self.depacketize(pkt, offset, end):
            self.frame_ok = False
        if pkt[1] & 0x80:
            self._end_frame()

    def _vp8(self, pkt: bytes, offset: int, end: int) -> bool:
        """RFC 7741 payload descriptor: skipped, the rest is VP8 data."""
        i = offset + 1
        if pkt[offset] & 0x80:
            x = pkt[i]
            i += 1
            if x & 0x80:
                i += 2 if pkt[i] & 0x80 else 1
            if x & 0x40:
                i += 1
            if x & 0x30:
                i += 1
        if i > end:
            return False
        self.frame_parts.append(pkt[i:end])
        return True

    def _h264(self, pkt: bytes, offset: int, end: int) -> bool:
        """RFC 6184 to length-prefixed NAL units (what Matroska's V_MPEG4/ISO/AVC holds)."""
        nal_type = pkt[offset] & 0x1F
        parts = self.frame_parts
        if 1 <= nal_type <= 23:
            self._nal(pkt[offset:end])
        elif nal_type == 24:  # STAP-A
            i = offset + 1
            while i + 2 <= end:
                n = (pkt[i] << 8) | pkt[i + 1]
                if n == 0 or i + 2 + n > end:
                    return False
                self._nal(pkt[i + 2 : i + 2 + n])
                i += 2 + n
        elif nal_type == 28:  # FU-A
            if offset + 2 > end:
                return False
            fu = pkt[offset + 1]
            if fu & 0x80:
                self.fu = [bytes([(pkt[offset] & 0xE0) | (fu & 0x1F)]), pkt[offset + 2 : end]]
            elif self.fu is None:
                return False
            else:
                self.fu.append(pkt[offset + 2 : end])
            if fu & 0x40 and self.fu is not None:
                self._nal(b"".join(self.fu))
                self.fu = None
        else:
            return False
        return bool(parts) or self.fu is not None

    def _nal(self, nal: bytes) -> None:
        if nal and nal[0] & 0x1F in (7, 8):
            kind = nal[0] & 0x1F
            self.r.parameter_sets = [n for n in self.r.parameter_sets if n[0] & 0x1F != kind] + [nal]
        self.frame_parts.append(len(nal).to_bytes(4, "big") + nal)

    def _end_frame(self) -> None:
        parts, self.frame_parts = self.frame_parts, []
        ts = self.frame_ts if self.frame_ts is not None else 0
        if not parts:
            return
        if not self.frame_ok or (self.need_keyframe and not self.frame_key):
            self.r.frames_dropped += 1
            if not self.need_keyframe or self.segment is not None:
                self.need_keyframe = True
                self.r.ask_keyframe()
            elif self.r.frames_dropped % 30 == 1:
                self.r.ask_keyframe()
            return
        self.need_keyframe = False
        self._frame(ts, b"".join(parts), self.frame_key)

    def _frame(self, ts: int, data: bytes, keyframe: bool) -> None:
        segment = self.segment
        if segment is not None and segment.ms(ts) >= self.r.segment_max_s * 1000:
            if keyframe or not self.r.video:
                self._close_segment(ts)
                segment = None
            elif not self.rotate:
                self.rotate = True
                self.r.ask_keyframe()
        if segment is None:
            if self.r.video and not keyframe:
                return
            segment = self._open_segment(ts, data)
        elif ts - self.last_frame_ts > GAP_S * self.r.meta.clock_rate:
            segment.info.gaps.append([round(self._wall(self.last_frame_ts), 3), round(self._wall(ts), 3)])
        segment.writer.write(segment.ms(ts), data, keyframe)
        self.last_frame_ts = ts

    def _wall(self, ts: int) -> float:
        first_wall, first_ts = self.r.first or (time.time(), ts)
        return first_wall + (ts - first_ts) / self.r.meta.clock_rate

    def _open_segment(self, ts: int, first: bytes) -> _Segment:
        r = self.r
        self.rotate = False
        self.segment = _Segment(r, len(r.segments), self._wall(ts), ts, first)
        r.segments.append(self.segment.info)
        return self.segment

    def _close_segment(self, ts: int) -> None:
        if self.segment is not None:
            self.segment.close(self._wall(ts))
            self.segment = None

    def finish(self) -> None:
        packets = self.r.packets_in
        while packets:
            self.add(packets.popleft())
        if self.frame_parts:
            self._end_frame()
        if self.segment is not None:
            self._close_segment(self.last_frame_ts + self.r.meta.clock_rate // 50)
