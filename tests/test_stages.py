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
