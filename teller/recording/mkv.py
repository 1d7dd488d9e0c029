"""A small streaming WebM/Matroska writer for already-encoded frames.

Muxing through PyAV cost more per frame than the rest of recording together, so
the recorder writes EBML itself: a frame is one SimpleBlock appended to the
cluster in memory, and a cluster goes to the file, whole and with its size, every
`cluster_ms`. The segment's size stays "unknown" until close, which players read
as a live stream: a file a crash cut short plays up to its last whole cluster.
Close writes the duration, the cues (keyframe positions, for seeking) and the size.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass

EBML = b"\x1a\x45\xdf\xa3"
SEGMENT = b"\x18\x53\x80\x67"
SEEK_HEAD = b"\x11\x4d\x9b\x74"
SEEK = b"\x4d\xbb"
SEEK_ID = b"\x53\xab"
SEEK_POSITION = b"\x53\xac"
VOID = b"\xec"
INFO = b"\x15\x49\xa9\x66"
TIMECODE_SCALE = b"\x2a\xd7\xb1"
DURATION = b"\x44\x89"
DATE_UTC = b"\x44\x61"
MUXING_APP = b"\x4d\x80"
WRITING_APP = b"\x57\x41"
TRACKS = b"\x16\x54\xae\x6b"
TRACK_ENTRY = b"\xae"
CLUSTER = b"\x1f\x43\xb6\x75"
CLUSTER_TIMECODE = b"\xe7"
SIMPLE_BLOCK = b"\xa3"
CUES = b"\x1c\x53\xbb\x6b"
# SimpleBlock ID, its size (1 or 2 bytes), then track 1, relative time, flags.
BLOCK_HEAD = struct.Struct(">BBBhB")
BLOCK_HEAD2 = struct.Struct(">BHBhB")
BLOCK_TAIL = struct.Struct(">BhB")
UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"
# Seconds between the Unix epoch and Matroska's 2001-01-01T00:00:00 UTC.
MATROSKA_EPOCH = 978307200
SEEK_HEAD_RESERVED = 64
OPUS_HEAD = b"OpusHead" + bytes([1, 2]) + (312).to_bytes(2, "little") + (48000).to_bytes(4, "little") + bytes(3)
CODEC_IDS = {"vp8": "V_VP8", "vp9": "V_VP9", "h264": "V_MPEG4/ISO/AVC", "opus": "A_OPUS"}


def size(n: int) -> bytes:
    """An EBML data size, in as few bytes as it takes."""
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return (n | (1 << (7 * length))).to_bytes(length, "big")
    raise ValueError("element too large")


def element(element_id: bytes, payload: bytes) -> bytes:
    return element_id + size(len(payload)) + payload


def uint(element_id: bytes, value: int) -> bytes:
    return element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def sint(element_id: bytes, value: int) -> bytes:
    return element(element_id, value.to_bytes(8, "big", signed=True))


def float64(element_id: bytes, value: float) -> bytes:
    return element(element_id, struct.pack(">d", value))


def string(element_id: bytes, value: str) -> bytes:
    return element(element_id, value.encode("utf-8"))


def void(total: int) -> bytes:
    """A Void element of exactly `total` bytes (at least 2), to be overwritten later."""
    payload = total - 1 - 8
    return VOID + (payload | (1 << 56)).to_bytes(8, "big") + bytes(payload)


@dataclass(frozen=True)
class TrackSpec:
    codec: str  # "vp8" | "vp9" | "h264" | "opus"
    width: int = 0
    height: int = 0
    sample_rate: int = 48000
    channels: int = 2
    codec_private: bytes | None = None

    @property
    def video(self) -> bool:
        return self.codec != "opus"


class MkvWriter:
    """One track, one file. Not thread-safe: one recorder thread owns it."""

    def __init__(self, path: str, spec: TrackSpec, *, start_wall: float, cluster_ms: int = 1000) -> None:
        if spec.codec not in CODEC_IDS:
            raise ValueError(f"cannot write {spec.codec!r} to Matroska here")
        self.path = path
        self.spec = spec
        self.cluster_ms = cluster_ms
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        self._position = 0
        self._buf = bytearray()
        self._video = spec.video
        self._cluster_start = -(1 << 40)
        self._cluster_opened = 0.0
        self._cluster_keyframe = False
        self._cues: list[tuple[int, int]] = []  # (time ms, cluster offset in the segment)
        self._last_ms = 0
        self.frames = 0
        self.bytes = 0
        doc_type = "webm" if spec.codec in ("vp8", "vp9", "opus") else "matroska"
        header = element(EBML, b"".join([
            uint(b"\x42\x86", 1), uint(b"\x42\xf7", 1), uint(b"\x42\xf2", 4), uint(b"\x42\xf3", 8),
            string(b"\x42\x82", doc_type), uint(b"\x42\x87", 4), uint(b"\x42\x85", 2),
        ]))
        self._write(header + SEGMENT + UNKNOWN_SIZE)
        self._segment_start = self._position
        self._write(void(SEEK_HEAD_RESERVED))
        date = int((start_wall - MATROSKA_EPOCH) * 1e9)
        self._duration_at = self._position + len(INFO) + 1 + len(uint(TIMECODE_SCALE, 1_000_000)) + len(DURATION) + 1
        info = b"".join([
            uint(TIMECODE_SCALE, 1_000_000), float64(DURATION, 0.0), sint(DATE_UTC, date),
            string(MUXING_APP, "teller"), string(WRITING_APP, "teller recorder"),
        ])
        self._write(element(INFO, info) + element(TRACKS, element(TRACK_ENTRY, self._track_entry())))

    def _track_entry(self) -> bytes:
        spec = self.spec
        parts = [uint(b"\xd7", 1), uint(b"\x73\xc5", int.from_bytes(os.urandom(7), "big") or 1),
                 uint(b"\x83", 1 if spec.video else 2), string(b"\x86", CODEC_IDS[spec.codec]),
                 uint(b"\x9c", 0)]  # FlagLacing off
        private = spec.codec_private if spec.codec_private is not None else (OPUS_HEAD if spec.codec == "opus" else None)
        if private:
            parts.append(element(b"\x63\xa2", private))
        if spec.video:
            parts.append(element(b"\xe0", uint(b"\xb0", spec.width or 640) + uint(b"\xba", spec.height or 480)))
        else:
            parts.append(uint(b"\x56\xaa", 6_500_000))  # CodecDelay: Opus pre-skip, ns
            parts.append(uint(b"\x56\xbb", 80_000_000))  # SeekPreRoll, ns
            parts.append(element(b"\xe1", float64(b"\xb5", float(spec.sample_rate)) + uint(b"\x9f", spec.channels)))
        return b"".join(parts)

    def write(self, ms: int, data: bytes, keyframe: bool) -> None:
        """One frame at `ms` milliseconds from the start of the file (non-decreasing)."""
        rel = ms - self._cluster_start
        if rel >= self.cluster_ms or rel < 0 or (keyframe and self._video and rel >= 500):
            ms = max(ms, self._last_ms)
            self.flush_cluster()
            self._cluster_start = ms
            self._cluster_keyframe = keyframe
            self._cluster_opened = time.monotonic()
            rel = 0
        self._last_ms = ms
        n = len(data) + 4
        buf = self._buf
        if n < 0x7F:
            buf += BLOCK_HEAD.pack(0xA3, 0x80 | n, 0x81, rel, 0x80 if keyframe else 0)
        elif n < 0x3FFF:
            buf += BLOCK_HEAD2.pack(0xA3, 0x4000 | n, 0x81, rel, 0x80 if keyframe else 0)
        else:
            buf += SIMPLE_BLOCK + size(n) + BLOCK_TAIL.pack(0x81, rel, 0x80 if keyframe else 0)
        buf += data
        self.frames += 1
        self.bytes += len(data)

    def flush_cluster(self) -> None:
        """Writes the cluster in memory, if any, to the file (the OS has it from here on)."""
        buf = self._buf
        if not buf:
            return
        self._buf = bytearray()
        timecode = uint(CLUSTER_TIMECODE, self._cluster_start)
        position = self._position - self._segment_start
        if self._cluster_keyframe or not self._video:
            self._cues.append((self._cluster_start, position))
        self._write(CLUSTER + size(len(timecode) + len(buf)) + timecode, buf)

    def _write(self, *chunks: bytes | bytearray) -> None:
        """One writev, no copies; the file is unbuffered, so the kernel has it on return."""
        total = sum(len(c) for c in chunks)
        written = os.writev(self._fd, chunks)
        if written < total:  # rare: a short write; finish it plainly
            rest = b"".join(chunks)[written:]
            while rest:
                rest = rest[os.write(self._fd, rest):]
        self._position += total

    def due(self, now: float) -> bool:
        """True when the cluster in memory has been open for `cluster_ms` of wall time:
        a track whose media stalls still reaches the file."""
        return bool(self._buf) and (now - self._cluster_opened) * 1000 >= self.cluster_ms

    def close(self, duration_ms: float | None = None) -> None:
        self.flush_cluster()
        cues_at = self._position - self._segment_start
        if self._cues:
            points = b"".join(
                element(b"\xbb", uint(b"\xb3", t) + element(b"\xb7", uint(b"\xf7", 1) + uint(b"\xf1", pos)))
                for t, pos in self._cues
            )
            self._write(element(CUES, points))
        end = self._position
        seek = element(SEEK_HEAD, element(SEEK, element(SEEK_ID, CUES) + uint(SEEK_POSITION, cues_at)))
        head = seek + void(SEEK_HEAD_RESERVED - len(seek)) if self._cues else void(SEEK_HEAD_RESERVED)
        os.pwrite(self._fd, head, self._segment_start)
        os.pwrite(self._fd, struct.pack(">d", float(duration_ms if duration_ms is not None else self._last_ms)),
                  self._duration_at)
        os.pwrite(self._fd, ((end - self._segment_start) | (1 << 56)).to_bytes(8, "big"), self._segment_start - 8)
        os.close(self._fd)


def vp8_dimensions(frame: bytes) -> tuple[int, int]:
    """Width and height from a VP8 keyframe header (RFC 6386, 9.1)."""
    if len(frame) >= 10 and not frame[0] & 1 and frame[3:6] == b"\x9d\x01\x2a":
        return (frame[6] | frame[7] << 8) & 0x3FFF, (frame[8] | frame[9] << 8) & 0x3FFF
    return 0, 0


def avc_config(sps: bytes, pps: bytes) -> bytes:
    """avcC (ISO 14496-15) from one SPS and one PPS NAL unit."""
    return bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]) + len(sps).to_bytes(2, "big") + sps + b"\x01" \
        + len(pps).to_bytes(2, "big") + pps

