"""RTSP pull ingest (`teller ingest`): a camera that only serves RTSP, seen in a room.

The camera is tests/rtsp_server.py: H.264 with SPS/PPS only in the SDP (as many real
cameras do) and a PCMU tone, over TCP interleaved RTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from teller.client import RoomClient, TestPatternTrack, ToneTrack
from teller.field.rtsp_ingest import (
    H264AccessUnits,
    IngestError,
    RtspIngest,
    RtspSource,
)

from .conftest import Server, wait_until
from .rtsp_server import RtspTestServer

pytestmark = pytest.mark.media

WIDTH, HEIGHT = 320, 240


@pytest.fixture
async def camera() -> AsyncIterator[RtspTestServer]:
    cam = RtspTestServer(WIDTH, HEIGHT, fps=15, audio=True)
    await cam.start()
    try:
        yield cam
    finally:
        await cam.stop()


@dataclass
class Pump:
    """Reads a received track in the background: decoded frames and their sizes."""

    frames: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, track: MediaStreamTrack) -> Pump:
        pump = cls()

        async def run() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    pump.frames += 1
                    if hasattr(frame, "width"):
                        pump.sizes.add((frame.width, frame.height))

        pump.task = asyncio.create_task(run())
        return pump

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def _viewer(server: Server, room: str, publisher_id: str) -> tuple[RoomClient, dict[str, Pump]]:
    viewer = RoomClient(server.url, server.token(room, "reviewer", "viewer"))
    await viewer.connect()
    subscription = await viewer.subscribe(publisher_id)
    return viewer, {kind: Pump.start(track) for kind, track in subscription.tracks.items()}


def _published_codecs(server: Server, room: str, participant_id: str) -> dict[str, str]:
    info = server.node.rooms[room].participants[participant_id].info()
    return {t["kind"]: t["codec"] for t in info["tracks"]}


async def test_h264_is_passed_through_with_audio(server: Server, room_name: str, camera: RtspTestServer) -> None:
    events: list[dict[str, Any]] = []
    ingest = RtspIngest(camera.url, server.url, server.token(room_name, "officer", "field camera"), emit=events.append)
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.run(stop=stop))
    viewer = None
    pumps: dict[str, Pump] = {}
    try:
        await asyncio.wait_for(ingest.ingesting.wait(), 20)
        assert ingest.client is not None
        started = next(e for e in events if e["event"] == "ingesting")
        assert started["codec"] == "h264" and started["passthrough"] is True
        assert (started["width"], started["height"]) == (WIDTH, HEIGHT) and started["audio"] == "pcm_mulaw"
        assert _published_codecs(server, room_name, ingest.client.participant_id) == {
            "video": "video/H264", "audio": "audio/opus",
        }

        viewer, pumps = await _viewer(server, room_name, ingest.client.participant_id)
        await wait_until(lambda: pumps["video"].frames >= 10 and pumps["audio"].frames >= 25, timeout=20)
        assert pumps["video"].sizes == {(WIDTH, HEIGHT)}

        stats = ingest.stats
        # Passthrough: packets went to aiortc as they came, no frame was handed to an
        # encoder, and aiortc's H.264 "encoder" only packetised (it never opened libx264).
        assert stats.video_packets > 0 and stats.video_frames_transcoded == 0
        assert ingest.publication is not None
        video_sender = next(t.sender for t in ingest.publication.pc.getTransceivers() if t.kind == "video")
        encoder = video_sender._RTCRtpSender__encoder  # type: ignore[attr-defined]
        assert type(encoder).__name__ == "H264Encoder" and encoder.codec is None
        # The camera never sends SPS/PPS in-band: the viewer decodes only because the
        # ingest put them (from the SDP) before each IDR.
        assert stats.parameter_sets_inserted >= 1 and stats.keyframes >= 1
        assert stats.audio_frames > 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        for pump in pumps.values():
            await pump.stop()
        if viewer is not None:
            await viewer.close()
    assert events[-1]["event"] == "stopped"


async def test_transcodes_to_vp8_when_passthrough_is_off(server: Server, room_name: str, camera: RtspTestServer) -> None:
    """The path a non-H.264 camera (MJPEG, HEVC) takes: decoded here, VP8 from aiortc."""
    events: list[dict[str, Any]] = []
    ingest = RtspIngest(
        camera.url, server.url, server.token(room_name, "officer", "field camera"), emit=events.append,
        transcode=True, audio=False,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.run(stop=stop))
    viewer = None
    pumps: dict[str, Pump] = {}
    try:
        await asyncio.wait_for(ingest.ingesting.wait(), 20)
        assert ingest.client is not None
        started = next(e for e in events if e["event"] == "ingesting")
        assert started["passthrough"] is False and started["published_codec"] == "VP8" and started["audio"] is None
        assert _published_codecs(server, room_name, ingest.client.participant_id) == {"video": "video/VP8"}
        viewer, pumps = await _viewer(server, room_name, ingest.client.participant_id)
        await wait_until(lambda: pumps["video"].frames >= 10, timeout=20)
        assert pumps["video"].sizes == {(WIDTH, HEIGHT)}
        assert ingest.stats.video_frames_transcoded > 0 and ingest.stats.video_packets == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        for pump in pumps.values():
            await pump.stop()
        if viewer is not None:
            await viewer.close()


async def test_reconnects_when_the_source_drops(server: Server, room_name: str, camera: RtspTestServer) -> None:
    events: list[dict[str, Any]] = []
    ingest = RtspIngest(
        camera.url, server.url, server.token(room_name, "officer", "field camera"), emit=events.append,
        backoff_s=(0.2, 1.0), io_timeout_s=3.0,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.run(stop=stop))
    viewer = None
    pumps: dict[str, Pump] = {}
    try:
        await asyncio.wait_for(ingest.ingesting.wait(), 20)
        assert ingest.client is not None
        pid = ingest.client.participant_id
        tracks_before = server.node.rooms[room_name].participants[pid].info()["tracks"]
        viewer, pumps = await _viewer(server, room_name, pid)
        await wait_until(lambda: pumps["video"].frames >= 5, timeout=20)

        await camera.cut()
        await wait_until(lambda: any(e["event"] == "source_lost" for e in events), timeout=15)
        await wait_until(lambda: any(e["event"] == "source_retry" for e in events), timeout=15)
        await camera.restore()
        await wait_until(lambda: any(e["event"] == "source_back" for e in events), timeout=15)
        video_after, audio_after = pumps["video"].frames, pumps["audio"].frames
        await wait_until(
            lambda: pumps["video"].frames >= video_after + 10 and pumps["audio"].frames >= audio_after + 25, timeout=20
        )

        assert pumps["video"].sizes == {(WIDTH, HEIGHT)}
        assert camera.plays == 2 and ingest.stats.reconnects == 1
        # The room never saw the camera leave: same participant, same tracks.
        assert server.node.rooms[room_name].participants[pid].info()["tracks"] == tracks_before
        assert ingest.stats.video_frames_transcoded == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        for pump in pumps.values():
            await pump.stop()
        if viewer is not None:
            await viewer.close()


async def _run_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "teller", "ingest", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def test_cli_ingests_and_stops_on_sigterm(server: Server, room_name: str, camera: RtspTestServer) -> None:
    token = server.token(room_name, "officer", "field camera")
    proc = await _run_cli(camera.url, "--url", server.url, "--token", token, "--room", room_name, "--stats-interval", "1")
    viewer = None
    pumps: dict[str, Pump] = {}
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        started = json.loads(line)
        assert started["event"] == "ingesting" and started["passthrough"] is True and started["codec"] == "h264"
        assert (started["width"], started["height"]) == (WIDTH, HEIGHT)
        pid = started["participant_id"]
        assert _published_codecs(server, room_name, pid) == {"video": "video/H264", "audio": "audio/opus"}
        viewer, pumps = await _viewer(server, room_name, pid)
        await wait_until(lambda: pumps["video"].frames >= 10 and pumps["audio"].frames >= 25, timeout=20)
        assert pumps["video"].sizes == {(WIDTH, HEIGHT)}

        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        lines = [json.loads(x) for x in out.decode().splitlines() if x.strip()]
        assert lines[-1]["event"] == "stopped"
        assert lines[-1]["video_packets"] > 0 and lines[-1]["video_frames_transcoded"] == 0
        assert any(x["event"] == "stats" for x in lines)
        assert b"Traceback" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pump in pumps.values():
            await pump.stop()
        if viewer is not None:
            await viewer.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_bad_input_fails_clearly_and_harms_no_session(server: Server, room_name: str) -> None:
    # A session in another room, publishing and watched, all along.
    other = room_name + "-other"
    host = RoomClient(server.url, server.token(other, "agent", "host"))
    await host.connect()
    await host.publish([ToneTrack(), TestPatternTrack(160, 120, 15)])
    viewer, pumps = await _viewer(server, other, host.participant_id)
    mute = RtspTestServer(audio=True, video=False)
    await mute.start()
    try:
        await wait_until(lambda: pumps["video"].frames >= 5, timeout=20)
        token = server.token(room_name, "officer", "field camera")
        cases = [
            ("http://127.0.0.1/cam", 2, "bad_url"),
            (f"rtsp://127.0.0.1:{_closed_port()}/cam", 1, "source_unreachable"),
            (mute.url, 1, "no_video"),
        ]
        for source, status, code in cases:
            proc = await _run_cli(source, "--url", server.url, "--token", token, "--timeout", "3")
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == status, (source, err.decode())
            lines = err.decode().strip().splitlines()
            assert len(lines) == 1 and json.loads(lines[0])["error"] == code, err.decode()
            assert out == b""
        # In-process too: a typed error, and nobody joined the room.
        with pytest.raises(IngestError) as caught:
            await RtspIngest("rtsp://127.0.0.1:" + str(_closed_port()), server.url, token).run()
        assert caught.value.code == "source_unreachable" and caught.value.exit_code == 1
        assert room_name not in server.node.rooms

        before = pumps["video"].frames
        await wait_until(lambda: pumps["video"].frames >= before + 5, timeout=20)
        assert pumps["video"].sizes == {(160, 120)}
    finally:
        await mute.stop()
        for pump in pumps.values():
            await pump.stop()
        await viewer.close()
        await host.close()


# -- units: what makes an IDR decodable, and one continuous clock ---------------------------


def test_parameter_sets_from_avcc_go_before_each_idr() -> None:
    sps, pps = b"\x67\x42\xc0\x0c\xda", b"\x68\xce\x0f\xc8"
    avcc = bytes([1, 0x42, 0xC0, 0x0C, 0xFF, 0xE1]) + len(sps).to_bytes(2, "big") + sps
    avcc += bytes([1]) + len(pps).to_bytes(2, "big") + pps
    units = H264AccessUnits(avcc)
    aud, idr, slice_ = b"\x09\xf0", b"\x65\x88\x84\x00", b"\x41\x9a\x02"
    data, is_idr = units(b"".join(len(n).to_bytes(4, "big") + n for n in (aud, idr)))
    start = b"\x00\x00\x00\x01"
    assert is_idr and data == start + aud + start + sps + start + pps + start + idr
    data, is_idr = units(start + slice_)
    assert not is_idr and data == start + slice_
    # In-band parameter sets are kept as they are, and the newest win.
    new_sps = b"\x67\x42\xc0\x1f\x01"
    data, _ = units(start + new_sps + start + pps + start + idr)
    assert data.count(new_sps) == 1 and sps not in data
    data, _ = units(start + idr)
    assert data == start + new_sps + start + pps + start + idr and units.inserted == 2


@dataclass
class _Packet:
    pts: int | None
    time_base: Fraction = Fraction(1, 90000)
    dts: int | None = None


def test_timestamps_stay_continuous_across_gaps_wraps_and_reconnects() -> None:
    source = RtspSource("rtsp://camera/")
    source._video_step = 1 / 10
    tb = Fraction(1, 90000)
    clock = [source._media_time(_Packet(p, time_base=tb), "video") for p in (500_000, 509_000, None, 527_000)]
    assert clock == pytest.approx([0.0, 0.1, 0.2, 0.3])
    # A 32-bit wrap that was not unwrapped: the next frame follows the last one.
    assert source._media_time(_Packet(3_000, time_base=tb), "video") == pytest.approx(0.4)
    assert source._media_time(_Packet(12_000, time_base=tb), "video") == pytest.approx(0.5)
    # A new session (reconnect) starts right after, whatever its timestamps.
    source._offset = None
    assert source._media_time(_Packet(77_777_000, time_base=tb), "video") == pytest.approx(0.6)
    assert source.stats.missing_pts == 1 and source.stats.discontinuities == 1
