"""The Python SDK's sources and the `teller client` command line."""

from __future__ import annotations

import asyncio
import fractions
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from teller.client import FrameQueueTrack, RoomClient

from .conftest import Server

pytestmark = pytest.mark.media


async def test_publish_frames_from_python(server: Server, room_name: str) -> None:
    """Frames pushed from Python code arrive at a subscriber with their content."""
    source = FrameQueueTrack("video")
    host = RoomClient(server.url, server.token(room_name, "service", "bot"))
    viewer = RoomClient(server.url, server.token(room_name, "customer", "viewer"))
    await host.connect()
    await viewer.connect()

    async def feed() -> None:
        for i in range(200):
            image = np.zeros((240, 320, 3), np.uint8)
            image[:, :, 1] = 200  # green
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i * 3000
            frame.time_base = fractions.Fraction(1, 90000)
            source.push(frame)
            await asyncio.sleep(1 / 30)

    pump = asyncio.create_task(feed())
    try:
        await host.publish([source])
        subscription = await viewer.subscribe(host.participant_id)
        frame = await asyncio.wait_for(subscription.track("video").recv(), 5)
        rgb = frame.to_ndarray(format="rgb24")
        assert (frame.width, frame.height) == (320, 240)
        assert rgb[:, :, 1].mean() > 150 and rgb[:, :, 0].mean() < 60
    finally:
        pump.cancel()
        await host.leave()
        await viewer.leave()


def write_clip(path: Path, seconds: float = 3.0) -> None:
    with av.open(str(path), "w") as container:
        video = container.add_stream("libvpx", rate=30)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = container.add_stream("libopus", rate=48000)
        audio.layout = "mono"
        for i in range(int(30 * seconds)):
            image = np.full((240, 320, 3), (i * 5) % 255, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        samples = 960
        for i in range(int(50 * seconds)):
            pcm = (np.sin(np.arange(samples) / 10) * 8000).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = 48000
            frame.pts = i * samples
            for packet in audio.encode(frame):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)


def test_cli_publishes_a_file_and_subscribes(server_process: Server, room_name: str, tmp_path: Path) -> None:
    clip = tmp_path / "clip.webm"
    write_clip(clip)
    base = [sys.executable, "-m", "teller", "client", "--url", server_process.url]
    publisher = subprocess.Popen(
        [*base, "--token", server_process.token(room_name, "officer", "cam"), "publish", "--file", str(clip), "--loop", "--duration", "15"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert publisher.stdout is not None
        events = [json.loads(publisher.stdout.readline()) for _ in range(2)]
        assert [e["event"] for e in events] == ["joined", "publishing"]
        assert sorted(t["kind"] for t in events[1]["tracks"]) == ["audio", "video"]
        viewer = subprocess.run(
            [*base, "--token", server_process.token(room_name, "reviewer", "rev"), "subscribe", "--duration", "3"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert viewer.returncode == 0, viewer.stderr
        stats = [json.loads(line) for line in viewer.stdout.splitlines() if '"stats"' in line]
        assert stats and stats[-1]["frames"]["video"] > 30 and stats[-1]["frames"]["audio"] > 50
        assert (stats[-1]["width"], stats[-1]["height"]) == (320, 240)
    finally:
        publisher.terminate()
        publisher.wait(10)


def test_cli_reports_a_bad_token(server_process: Server) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "teller", "client", "--url", server_process.url, "--token", "nope", "subscribe"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert json.loads(result.stderr.strip().splitlines()[-1]) == {"error": "token_invalid", "message": "the access token is not valid"}
