"""Media through the SFU with real peer connections on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest

from teller.client import RoomClient, TestPatternTrack, ToneTrack

from .conftest import Server
from .media import delivery_ratio, receive

pytestmark = pytest.mark.media


async def test_two_clients_exchange_audio_and_video(server_process: Server, room_name: str) -> None:
    a = RoomClient(server_process.url, server_process.token(room_name, "agent", "Agent A"))
    b = RoomClient(server_process.url, server_process.token(room_name, "customer", "Customer B"))
    await a.connect()
    await b.connect()
    try:
        a_video, b_video = TestPatternTrack(640, 480, 30), TestPatternTrack(640, 480, 30)
        await a.publish([ToneTrack(440), a_video])
        await b.publish([ToneTrack(660), b_video])
        a_sub = await a.subscribe(b.participant_id)
        b_sub = await b.subscribe(a.participant_id)
        results = await asyncio.gather(
            receive(a_sub.track("video"), 5.0),
            receive(a_sub.track("audio"), 5.0),
            receive(b_sub.track("video"), 5.0),
            receive(b_sub.track("audio"), 5.0),
        )
        for video in (results[0], results[2]):
            assert video.sizes == {(640, 480)}
            assert video.frames >= 140
            assert delivery_ratio(video, 3000) >= 0.95
        for audio in (results[1], results[3]):
            assert audio.frames >= 0.95 * 5.0 / 0.02
            assert delivery_ratio(audio, 960) >= 0.95
    finally:
        await a.leave()
        await b.leave()


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_forwarding_builds_no_decoder_or_encoder(server_process: Server, room_name: str, codec: str) -> None:
    """A 1:1 call and a 1->5 fan-out: the server process constructs no codec at all."""
    before = server_process.node_stats()["codecs"]
    publisher = RoomClient(server_process.url, server_process.token(room_name, "agent", "host"))
    await publisher.connect()
    viewers = [RoomClient(server_process.url, server_process.token(room_name, "customer", f"v{i}")) for i in range(5)]
    try:
        publication = await publisher.publish([ToneTrack(), TestPatternTrack(320, 240, 30)], video_codec=codec)
        assert {t["codec"] for t in publication.tracks} == {"audio/opus", f"video/{codec}"}
        for viewer in viewers:
            await viewer.connect()
        # 1:1 first: one viewer publishes back, and each side decodes the other.
        await viewers[0].publish([ToneTrack(), TestPatternTrack(320, 240, 30)], video_codec=codec)
        back = await publisher.subscribe(viewers[0].participant_id)
        subscriptions = [await v.subscribe(publisher.participant_id) for v in viewers]
        results = await asyncio.gather(
            receive(back.track("video"), 2.0),
            *(receive(s.track("video"), 2.0) for s in subscriptions),
            *(receive(s.track("audio"), 2.0) for s in subscriptions),
        )
        assert all(r.frames > 30 for r in results)
        stats = server_process.node_stats()
        assert stats["subscriptions"] >= 6
        assert stats["codecs"]["decoders_created"] == before["decoders_created"] == 0
        assert stats["codecs"]["encoders_created"] == before["encoders_created"] == 0
        assert stats["codecs"]["decoders_active"] == 0
    finally:
        await asyncio.gather(publisher.leave(), *(v.leave() for v in viewers))


async def test_late_joiner_sees_video_within_a_second(server_process: Server, room_name: str) -> None:
    publisher = RoomClient(server_process.url, server_process.token(room_name, "officer", "bodycam"))
    await publisher.connect()
    try:
        publication = await publisher.publish([ToneTrack(), TestPatternTrack(640, 480, 30)])
        await publication.wait_connected()
        await asyncio.sleep(10)
        viewer = RoomClient(server_process.url, server_process.token(room_name, "reviewer", "reviewer"))
        await viewer.connect()
        try:
            started = time.monotonic()
            subscription = await viewer.subscribe(publisher.participant_id)
            frame = await asyncio.wait_for(subscription.track("video").recv(), 5)
            elapsed = time.monotonic() - started
            assert (frame.width, frame.height) == (640, 480)
            assert elapsed < 1.0, f"first frame after {elapsed:.3f} s"
        finally:
            await viewer.leave()
    finally:
        await publisher.leave()
