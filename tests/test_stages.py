"""The stage host: a shared decoder started lazily for decoded taps, released after."""

from __future__ import annotations

import asyncio
import threading

import pytest

from teller.client import RoomClient, TestPatternTrack, ToneTrack

from .conftest import start_in_process, wait_until

pytestmark = pytest.mark.media


async def test_frame_counter_stage_decodes_once_and_stops(tmp_path, room_name: str) -> None:
    server, runner = await start_in_process(
        tmp_path,
        stages={"enabled": ["frame_counter"], "options": {"frame_counter": {"report_interval_s": 0.5}}},
    )
    host = RoomClient(server.url, server.token(room_name, "agent", "host"))
    viewer = RoomClient(server.url, server.token(room_name, "customer", "viewer"))
    reports: list[dict] = []
    try:
        await host.connect()
        await viewer.connect()
        viewer.on("data", lambda m: m["topic"] == "stage.frame_counter" and reports.append(m))
        video = TestPatternTrack(320, 240, 30)
        await host.publish([ToneTrack(), video])
        await wait_until(lambda: len(reports) >= 3, timeout=10)
        last = reports[-1]
        assert last["from_participant_id"] is None
        assert (last["payload"]["width"], last["payload"]["height"]) == (320, 240)
        assert last["payload"]["frames"] >= 0.7 * 30 * 1.0
        assert last["payload"]["frames"] <= video.frames_sent
        stats = server.node.stats()
        assert stats["codecs"]["decoders_active"] == 1  # one video track, one shared decoder
        assert stats["stages"]["taps"] == 1
        taps = [t for t in threading.enumerate() if t.name.startswith("tap-")]
        assert len(taps) == 1

        await host.leave()
        await wait_until(lambda: server.node.stats()["codecs"]["decoders_active"] == 0, timeout=5)
        await wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("tap-")], timeout=5)
        assert server.node.stats()["stages"]["taps"] == 0
        count = len(reports)
        await asyncio.sleep(1.0)
        assert len(reports) == count
    finally:
        await viewer.leave()
        await host.close()
        await runner.cleanup()


async def test_unknown_stage_is_a_startup_error(tmp_path) -> None:
    from teller.sfu.stages import UnknownStage

    with pytest.raises(UnknownStage):
        await start_in_process(tmp_path, stages={"enabled": ["no_such_stage"]})


async def test_encoded_stage_gets_assembled_frames_without_a_decoder(server, room_name: str) -> None:
    """A stage that wants encoded frames gets whole frames, keyframes marked, and no decoder runs."""
    from teller.config import StageSettings
    from teller.sfu.stages import FrameStream, Stage, StageContext, StageHost, StageSpec

    seen: list = []

    class KeyframeProbe(Stage):
        name = "keyframe_probe"
        spec = StageSpec(kinds=frozenset({"video"}), form="encoded", roles=frozenset({"officer"}))

        async def run(self, ctx: StageContext, frames: FrameStream) -> None:
            async for frame in frames:
                seen.append(frame)

    server.node.stages = StageHost(StageSettings(enabled=["keyframe_probe"]), registry={"keyframe_probe": KeyframeProbe})
    officer = RoomClient(server.url, server.token(room_name, "officer", "cam"))
    agent = RoomClient(server.url, server.token(room_name, "agent", "agent"))
    await officer.connect()
    await agent.connect()
    try:
        await agent.publish([TestPatternTrack(160, 120, 15)])  # not an officer: no stage
        await officer.publish([TestPatternTrack(320, 240, 30)])
        await wait_until(lambda: len(seen) >= 30, timeout=10)
        assert seen[0].keyframe and seen[0].mime_type == "video/VP8"
        assert all(f.kind == "video" and f.data for f in seen)
        stamps = [f.timestamp for f in seen[:30]]
        assert stamps == sorted(stamps) and len(set(stamps)) == 30
        stats = server.node.stats()
        assert stats["stages"]["taps"] == 1
        assert stats["codecs"]["decoders_active"] == 0
    finally:
        await officer.leave()
        await agent.leave()
