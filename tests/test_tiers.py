"""Tier encoders with real codecs: decoded frames in, RTP out that decodes again."""

from __future__ import annotations

import asyncio
import threading
import time
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import aiortc.codecs
import av
import numpy as np
import pytest
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from teller.sfu.stages.base import FrameStream
from teller.sfu.tiers import TierEncoder, TierSet, TierSpec

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
H264 = RTCRtpCodecParameters(
    mimeType="video/H264",
    clockRate=90000,
    payloadType=102,
    parameters={"packetization-mode": "1", "level-asymmetry-allowed": "1", "profile-level-id": "42e01f"},
)
# Close below 2**32, so that the publisher's timestamps wrap during a test.
BASE_TS = 0xFFFFFFFF - 10 * 3000 + 1
MASK = 0xFFFFFFFF


def publication(codec: RTCRtpCodecParameters = VP8) -> SimpleNamespace:
    return SimpleNamespace(id="TR_tiers", kind="video", codec=codec, payload_type=codec.payloadType, ended=False)


def frame(i: int, ts: int, width: int = 640, height: int = 480) -> av.VideoFrame:
    """A yuv420p test pattern whose content moves with i, as TrackTap delivers it."""
    data = np.empty((height * 3 // 2, width), np.uint8)
    x = np.arange(width, dtype=np.uint16)
    y = np.arange(height, dtype=np.uint16)[:, None]
    data[:height] = ((x + 4 * i) ^ (y + 2 * i)) & 0xFF
    data[height:] = (128 + 40 * np.sin(i / 5 + np.arange(width) / 40)).astype(np.uint8)
    out = av.VideoFrame.from_ndarray(data, format="yuv420p")
    out.pts = ts & MASK
    out.time_base = Fraction(1, 90000)
    return out


class FakeDownTrack:
    def __init__(self) -> None:
        self.writes: list[tuple[bytes, int, int, bool]] = []
        self.ended = False

    def write(self, pkt: bytes, seq: int, ts: int, keyframe: bool) -> None:
        self.writes.append((pkt, seq, ts, keyframe))

    def publication_ended(self) -> None:
        self.ended = True


class Streams:
    """open_frames/close_frames as the stage host provides them, fed by the test."""

    def __init__(self) -> None:
        self.opened: list[FrameStream[av.VideoFrame]] = []
        self.closed: list[FrameStream[av.VideoFrame]] = []

    def open(self) -> FrameStream[av.VideoFrame]:
        stream: FrameStream[av.VideoFrame] = FrameStream(maxsize=64)
        self.opened.append(stream)
        return stream

    def close(self, stream: FrameStream[av.VideoFrame]) -> None:
        stream.close()
        self.closed.append(stream)


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def feed(encoder: TierEncoder, start: int, count: int, step: int = 3000) -> None:
    """Offer `count` frames (30 fps timestamps) and wait until the tier has taken them all."""
    target = encoder.frames_in + count
    for i in range(start, start + count):
        encoder.frames.offer(frame(i, BASE_TS + i * step))
    await until(lambda: encoder.frames_in == target)
    await until(lambda: encoder.frames_encoded + encoder.frames_skipped + encoder.frames_idle == target)


def by_frame(writes: list[tuple[bytes, int, int, bool]]) -> list[tuple[int, list[bytes]]]:
    frames: list[tuple[int, list[bytes]]] = []
    for pkt, _, ts, _ in writes:
        if not frames or frames[-1][0] != ts:
            frames.append((ts, []))
        frames[-1][1].append(pkt)
    return frames


def decode(codec: RTCRtpCodecParameters, writes: list[tuple[bytes, int, int, bool]]) -> list[av.VideoFrame]:
    factory = getattr(aiortc.codecs.get_decoder, "__wrapped__", aiortc.codecs.get_decoder)
    decoder = factory(codec)
    out: list[av.VideoFrame] = []
    for ts, packets in by_frame(writes):
        data = b"".join(aiortc.codecs.depayload(codec, pkt[12:]) for pkt in packets)
        out.extend(decoder.decode(JitterFrame(data=data, timestamp=ts)))
    return out


@pytest.fixture
def encode_threads(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """Thread ids that ran aiortc's encode (a spy; the real encoder still runs)."""
    threads: set[int] = set()
    for cls in (Vp8Encoder, H264Encoder):
        original = cls.encode

        def spy(self: Any, frame: Any, force_keyframe: bool = False, _original: Any = original) -> Any:
            threads.add(threading.get_ident())
            return _original(self, frame, force_keyframe)

        monkeypatch.setattr(cls, "encode", spy)
    return threads


async def test_scaled_output_keeps_timestamps_and_starts_on_a_keyframe(encode_threads: set[int]) -> None:
    streams = Streams()
    tiers = TierSet(publication(), streams.open, streams.close)
    try:
        tier = tiers.encoder(TierSpec("half", 0.5, 300_000, 30))
        await feed(tier, 0, 3)  # nobody on the tier yet: nothing is encoded
        assert tier.frames_idle == 3 and tier.frames_encoded == 0
        downtrack = FakeDownTrack()
        tier.attach(downtrack)
        await feed(tier, 3, 20)
        assert tier.frames_encoded == 20

        writes = downtrack.writes
        assert writes[0][3] is True  # the first packet it sees starts a keyframe
        assert sum(1 for w in writes if w[3]) == 1
        expected = [(BASE_TS + i * 3000) & MASK for i in range(3, 23)]
        assert [ts for ts, _ in by_frame(writes)] == expected  # the source's, across the wrap
        assert expected[-1] < expected[0]

        seqs = [seq for _, seq, _, _ in writes]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))
        for pkt, seq, ts, _ in writes:
            assert pkt[0] == 0x80  # V=2, no padding, no extension, no CSRC
            assert pkt[1] & 0x7F == 96
            assert (pkt[2] << 8 | pkt[3], int.from_bytes(pkt[4:8], "big")) == (seq, ts)
        for _, packets in by_frame(writes):
            assert [pkt[1] >> 7 for pkt in packets] == [0] * (len(packets) - 1) + [1]
        assert len({pkt[8:12] for pkt, *_ in writes}) == 1

        decoded = decode(VP8, writes)
        assert len(decoded) == 20
        assert {(f.width, f.height) for f in decoded} == {(320, 240)}
        assert [f.pts for f in decoded] == expected
        assert (tier.width, tier.height) == (320, 240)

        assert encode_threads and threading.get_ident() not in encode_threads
        assert len(encode_threads) == 1

        pkt, seq, _, _ = writes[-5]
        assert tier.history_packet(seq) == pkt
        assert tier.history_packet((seq + 1000) & 0xFFFF) is None
        stats = tier.stats()
        assert stats["frames_in"] == 23 and stats["frames_encoded"] == 20 and stats["keyframes"] == 1
        assert stats["packets"] == len(writes) and stats["octets"] == sum(len(w[0]) - 12 for w in writes)
        assert stats["encode_seconds"] > 0 and stats["frames_dropped"] == 0
    finally:
        await tiers.close()
    assert streams.closed == streams.opened


async def test_fps_cap_halves_a_30fps_input() -> None:
    streams = Streams()
    tiers = TierSet(publication(), streams.open, streams.close)
    try:
        tier = tiers.encoder(TierSpec("low", 0.25, 100_000, 15))
        downtrack = FakeDownTrack()
        tier.attach(downtrack)
        await feed(tier, 0, 30)
        assert (tier.frames_encoded, tier.frames_skipped) == (15, 15)
        timestamps = [ts for ts, _ in by_frame(downtrack.writes)]
        assert all((b - a) & MASK == 6000 for a, b in zip(timestamps, timestamps[1:]))
        decoded = decode(VP8, downtrack.writes)
        assert len(decoded) == 15
        assert {(f.width, f.height) for f in decoded} == {(160, 120)}
    finally:
        await tiers.close()


async def test_keyframe_requests_are_served_and_rate_limited() -> None:
    streams = Streams()
    tiers = TierSet(publication(), streams.open, streams.close)
    try:
        tier = tiers.encoder(TierSpec("half", 0.5, 300_000, 30))
        downtrack = FakeDownTrack()
        tier.attach(downtrack)
        await feed(tier, 0, 5)
        assert tier.keyframes == 1
        replay = tier.recent_keyframe()
        assert replay is not None and replay[0] == downtrack.writes[0][0]
        assert replay == [w[0] for w in downtrack.writes]

        await asyncio.sleep(0.5)  # the attach's keyframe is now older than the rate limit
        tier.request_keyframe()
        tier.request_keyframe()  # a burst of PLIs makes one keyframe
        before = len(downtrack.writes)
        await feed(tier, 5, 5)
        new = downtrack.writes[before:]
        assert new[0][3] is True and sum(1 for w in new if w[3]) == 1
        assert tier.keyframes == 2
        assert tier.recent_keyframe()[0] == new[0][0]  # type: ignore[index]

        tier.request_keyframe()  # within the limit: deferred, not dropped
        await feed(tier, 10, 3)
        assert tier.keyframes == 2
        await asyncio.sleep(0.55)
        await feed(tier, 13, 3)
        assert tier.keyframes == 3
        decoded = decode(VP8, downtrack.writes)
        assert len(decoded) == 16
        assert tier.recent_keyframe() is not None
        await asyncio.sleep(0.55)
        assert tier.recent_keyframe() is None  # too old to replay
    finally:
        await tiers.close()


async def test_one_encoder_per_tier_is_shared_and_released_when_idle() -> None:
    streams = Streams()
    tiers = TierSet(publication(), streams.open, streams.close, idle_grace_s=0.2)
    try:
        spec = TierSpec("half", 0.5, 300_000, 30)
        tier = tiers.encoder(spec)
        assert tiers.encoder(spec) is tier and tiers.encoders == 1 and len(streams.opened) == 1
        a, b = FakeDownTrack(), FakeDownTrack()
        tier.attach(a)
        tier.attach(b)
        await feed(tier, 0, 10)
        assert a.writes and a.writes == b.writes
        assert tier.keyframes == 1  # both attached before a frame: one keyframe for both

        # A third subscriber joins mid-stream: it starts on a keyframe, everyone gets it.
        c = FakeDownTrack()
        tier.attach(c)
        await feed(tier, 10, 3)
        assert c.writes[0][3] is True and tier.keyframes == 2
        assert a.writes[-len(c.writes) :] == c.writes

        assert tiers.release_if_idle("half") is False  # still in use
        for downtrack in (a, b, c):
            tier.detach(downtrack)
        tier.attach(a)  # flapping back within the grace period keeps the encoder
        await asyncio.sleep(0.3)
        assert tiers.encoders == 1 and not tier.closed
        tier.detach(a)
        assert tiers.release_if_idle("half") is True
        assert tiers.encoders == 0
        await until(lambda: tier.closed and streams.closed == streams.opened)
        await until(lambda: not [t for t in threading.enumerate() if t.name.startswith("tier-")])

        # Released after the grace period on its own; a new request makes a new one.
        again = tiers.encoder(spec)
        assert again is not tier and tiers.encoders == 1
        again.attach(a)
        again.detach(a)
        await until(lambda: tiers.encoders == 0)
        await until(lambda: again.closed and len(streams.closed) == 2)
    finally:
        await tiers.close()


async def test_publication_end_tells_the_downtracks() -> None:
    streams = Streams()
    pub = publication()
    tiers = TierSet(pub, streams.open, streams.close)
    try:
        tier = tiers.encoder(TierSpec("half", 0.5, 300_000, 30))
        downtrack = FakeDownTrack()
        tier.attach(downtrack)
        await feed(tier, 0, 2)
        pub.ended = True
        tier.frames.close()  # the stage tap closes its streams when the track ends
        await until(lambda: downtrack.ended and tiers.encoders == 0)
        await until(lambda: tier.closed)
    finally:
        await tiers.close()


async def test_h264_tier(encode_threads: set[int]) -> None:
    streams = Streams()
    tiers = TierSet(publication(H264), streams.open, streams.close)
    try:
        tier = tiers.encoder(TierSpec("half", 0.5, 300_000, 30))
        downtrack = FakeDownTrack()
        tier.attach(downtrack)
        await feed(tier, 0, 12)
        writes = downtrack.writes
        assert writes[0][3] is True
        assert all(pkt[1] & 0x7F == 102 for pkt, *_ in writes)
        expected = [(BASE_TS + i * 3000) & MASK for i in range(12)]
        assert [ts for ts, _ in by_frame(writes)] == expected
        decoded = decode(H264, writes)
        assert len(decoded) == 12
        assert {(f.width, f.height) for f in decoded} == {(320, 240)}
        assert [f.pts for f in decoded] == expected
        assert encode_threads and threading.get_ident() not in encode_threads
    finally:
        await tiers.close()


async def test_full_scale_tier_does_not_touch_the_shared_frame() -> None:
    """At scale 1 reformat is a no-op; the encoder would rewrite the tap's own frame."""
    stream: FrameStream[av.VideoFrame] = FrameStream(maxsize=8)
    tier = TierEncoder(publication(), TierSpec("full-slow", 1.0, 800_000, 30), stream)
    tier.start()
    try:
        downtrack = FakeDownTrack()
        tier.attach(downtrack)
        shared = frame(0, BASE_TS)
        pict_type = shared.pict_type
        stream.offer(shared)
        await until(lambda: tier.frames_encoded == 1)
        assert (shared.pts, shared.time_base, shared.pict_type) == (BASE_TS, Fraction(1, 90000), pict_type)
        assert (tier.width, tier.height) == (640, 480)
        [decoded] = decode(VP8, downtrack.writes)
        assert (decoded.width, decoded.height, decoded.pts) == (640, 480, BASE_TS)
    finally:
        await tier.close()


async def test_frames_from_the_stage_tap_keep_the_publishers_timestamps() -> None:
    """The real chain: RTP in, TrackTap's shared decoder, the tier, RTP out."""
    from teller.sfu.rtp import HEADER
    from teller.sfu.stages.tap import TrackTap

    taps: list[Any] = []
    pub = publication()
    pub.mime_type = VP8.mimeType
    pub.add_tap = taps.append
    pub.remove_tap = taps.remove
    pub.request_keyframe = lambda: None
    tap = TrackTap(pub)  # type: ignore[arg-type]
    stream: FrameStream[av.VideoFrame] = FrameStream(maxsize=64)
    tap.add(stream, decoded=True)
    tier = TierEncoder(pub, TierSpec("half", 0.5, 300_000, 30), stream)
    tier.start()
    downtrack = FakeDownTrack()
    tier.attach(downtrack)
    source = Vp8Encoder()
    seq = 1000
    expected = []
    try:
        for i in range(8):
            ts = (MASK - 3 * 3000 + i * 3000) & MASK  # wraps at the fifth frame
            expected.append(ts)
            payloads, _ = source.encode(frame(i, i * 3000))
            for j, payload in enumerate(payloads):
                marker = 0x80 if j == len(payloads) - 1 else 0
                taps[0](HEADER.pack(0x80, marker | 96, seq, ts, 0x1234) + payload)
                seq += 1
        # The jitter buffer hands over a frame once the next one begins: 7 of 8.
        await until(lambda: tier.frames_encoded == 7)
        assert [ts for ts, _ in by_frame(downtrack.writes)] == expected[:7]
        assert expected[4] < expected[3]
        decoded = decode(VP8, downtrack.writes)
        assert [f.pts for f in decoded] == expected[:7]
        assert {(f.width, f.height) for f in decoded} == {(320, 240)}
    finally:
        await tier.close()
        await tap.close()


def test_spec_validation_and_size() -> None:
    assert TierSpec("q", 0.5, 1, 1).size(1281, 721) == (640, 360)
    assert TierSpec("tiny", 0.01, 1, 1).size(640, 480) == (16, 16)
    assert TierSpec("odd", 1 / 3, 1, 1).size(1280, 720) == (426, 240)
    for bad in (0, 1.5):
        with pytest.raises(ValueError):
            TierSpec("x", bad, 1, 1)
    with pytest.raises(ValueError):
        TierSpec("x", 0.5, 0, 1)
