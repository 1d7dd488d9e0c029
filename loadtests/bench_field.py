"""Field devices: what recording on the device costs, how fast a missed stretch goes
up, how long a snapshot takes, and how soon a reviewer sees video after a link drop.

    python loadtests/bench_field.py [--seconds 10] [--parts local,upload,snapshot,drop] [--drop-s 20]

local: a body camera's own recording (teller/client/device.py): a test pattern and a
tone pulled by a DeviceFeed, encoded by the LocalRecorder's thread into 5 s WebM
segments (VP8 + Opus), nothing published. Process CPU per wall second with and without
the recorder, at 320x240@15 and 640x480@30, and frames dropped.

upload: an in-process server; a 4 s device segment (320x240 VP8 of noise, about 1 MB)
sent by the SDK's resumable upload (1 MiB chunks, SHA-256 checked by the server) N
times: seconds per segment until it has joined the recording, and MB/s.

snapshot: a body camera publishing 640x480 into a field visit; POST snapshots N times:
ms from request to answer (the decoder starts on a keyframe it has to ask for, so each
snapshot waits for one).

drop: the body camera relay-only through coturn behind `teller impair`, signalling
through a TCP proxy; both cut for --drop-s seconds. Seconds from the link's return to
the officer's resumed session, to the first keyframe at the SFU, to the first frame
decoded by an SDK reviewer on its old subscription, and until the device's segments
covering the drop are uploaded. Needs coturn.

Prints one JSON line per part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from teller.client import RoomClient  # noqa: E402
from teller.client.bodycam import BodyCam  # noqa: E402
from teller.client.device import DeviceFeed, LocalRecorder  # noqa: E402
from teller.client.sources import media_tracks  # noqa: E402
from teller.client.uploads import upload_segment  # noqa: E402
from tests.conftest import start_in_process, wait_until  # noqa: E402
from tests.tcp_proxy import TcpProxy  # noqa: E402
from tests.test_field_visit import _bodycam_args, _officer, dev_token, post, start_visit  # noqa: E402


def _print(body: dict[str, Any]) -> None:
    print(json.dumps(body), flush=True)


async def local(seconds: float) -> None:
    for width, height, fps in ((320, 240, 15), (640, 480, 30)):
        figures: dict[str, Any] = {"part": "local", "size": f"{width}x{height}@{fps}"}
        for recording in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                recorder = LocalRecorder(Path(tmp), segment_s=5.0) if recording else None
                feed = DeviceFeed(media_tracks(None, False, width, height, fps), recorder)
                await asyncio.sleep(1.0)
                cpu0, wall0 = time.process_time(), time.monotonic()
                await asyncio.sleep(seconds)
                cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
                await feed.close()
                key = "with_recorder" if recording else "source_only"
                figures[f"{key}_core"] = round(cpu, 3)
                if recorder is not None:
                    figures["segments"] = len(recorder.segments)
                    figures["frames_dropped"] = recorder.dropped
        figures["recorder_core"] = round(figures["with_recorder_core"] - figures["source_only_core"], 3)
        _print(figures)


def _segment(directory: Path, seconds: float) -> tuple[Path, float]:
    """Noise: a test pattern compresses to almost nothing, a farm does not."""
    from tests.test_field_uploads import write_noise_webm

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "segment.webm"
    write_noise_webm(path, seconds=seconds)
    return path, time.time() - 60


async def upload(repeat: int, tmp: Path) -> None:
    server, runner = await start_in_process(tmp, recording={"enabled": True, "composite": False})
    try:
        path, start = await asyncio.to_thread(_segment, tmp / "seg", 4.0)
        async with aiohttp.ClientSession() as http:
            officer = await dev_token(http, server, "officer", "Bench")
            visit = await start_visit(http, server, officer)
        camera = RoomClient(server.url, visit["token"])
        await camera.connect()
        await camera.publish(media_tracks(None, False, 160, 120, 5))
        await asyncio.sleep(1.5)  # the session's recording (and its index entry) exists
        times = []
        for _ in range(repeat):
            started = time.monotonic()
            await upload_segment(server.url, visit["token"], visit["session_id"], path,
                                 {"kind": "video", "codec": "vp8", "start_wall": start, "participant_id": "bench"})
            times.append(time.monotonic() - started)
        size = path.stat().st_size
        times.sort()
        _print({"part": "upload", "segment_bytes": size, "segments": repeat, "p50_s": round(times[len(times) // 2], 3),
                "max_s": round(times[-1], 3), "mb_per_s": round(size / times[len(times) // 2] / 1e6, 1)})
        await camera.leave()
    finally:
        await runner.cleanup()


async def snapshot(repeat: int, tmp: Path) -> None:
    server, runner = await start_in_process(tmp, recording={"enabled": True, "composite": False})
    try:
        async with aiohttp.ClientSession() as http:
            officer = await dev_token(http, server, "officer", "Bench")
            reviewer = await dev_token(http, server, "reviewer", "Bench")
            visit = await start_visit(http, server, officer)
            camera = RoomClient(server.url, visit["token"])
            await camera.connect()
            publication = await camera.publish(media_tracks(None, False, 640, 480, 30))
            await publication.wait_connected()
            await asyncio.sleep(2.0)
            times = []
            for _ in range(repeat):
                started = time.monotonic()
                status, body = await post(http, f"{server.url}/v1/field/sessions/{visit['field_id']}/snapshots", reviewer)
                assert status == 201, body
                times.append((time.monotonic() - started) * 1000)
                await asyncio.sleep(0.5)
            times.sort()
            _print({"part": "snapshot", "size": f"{body['width']}x{body['height']}", "count": repeat,
                    "p50_ms": round(times[len(times) // 2], 1), "max_ms": round(times[-1], 1), "jpeg_bytes": body["bytes"]})
            await camera.leave()
    finally:
        await runner.cleanup()


async def drop(drop_s: float, tmp: Path) -> None:
    from teller.impair import Impairment
    from tests.turn import impaired_turn

    if shutil.which("turnserver") is None:
        _print({"part": "drop", "skipped": "coturn is not installed"})
        return
    async with impaired_turn(tmp, seed=3) as turn, aiohttp.ClientSession() as http:
        server, runner = await start_in_process(tmp, recording={"enabled": True, "composite": False},
                                                ice={"servers": turn.ice_servers()}, sfu={"bind_addresses": ["127.0.0.1"]})
        proxy = TcpProxy(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))).start()
        try:
            officer = await dev_token(http, server, "officer", "Bench")
            reviewer = await dev_token(http, server, "reviewer", "Bench")
            visit = await start_visit(http, server, officer)
            args = _bodycam_args(f"http://{proxy.endpoint}", visit["token"], tmp / "device")
            cam = BodyCam(args, visit["token"], DeviceFeed(media_tracks(None, False, 320, 240, 15),
                                                           LocalRecorder(tmp / "device", segment_s=4)))
            running = asyncio.create_task(cam.run())
            _, joined = await post(http, f"{server.url}/v1/field/sessions/{visit['field_id']}/join", reviewer)
            viewer = RoomClient(server.url, joined["token"])
            await viewer.connect()
            await wait_until(lambda: _officer(viewer) is not None, timeout=30)
            pid = _officer(viewer)
            video = (await viewer.subscribe(pid)).track("video")
            frames: list[float] = []

            async def count() -> None:
                while True:
                    await video.recv()
                    frames.append(time.monotonic())

            counting = asyncio.create_task(count())
            await asyncio.sleep(3)
            pub = next(p for p in server.node.rooms[visit["room"]].participants[pid].publications() if p.kind == "video")
            proxy.cut()
            turn.relay.set(up=Impairment(loss=1.0), down=Impairment(loss=1.0))
            await asyncio.sleep(drop_s)
            turn.relay.set(up=Impairment(), down=Impairment())
            proxy.restore()
            back, back_loop = time.monotonic(), asyncio.get_running_loop().time()
            await wait_until(lambda: cam.gaps and cam.gaps[-1].end is not None, timeout=60)
            resumed = time.monotonic() - back
            try:
                await wait_until(lambda: pub.last_keyframe_at > back_loop, timeout=15)
                keyframe: float | None = round(pub.last_keyframe_at - back_loop, 2)
            except AssertionError:
                # A drop short enough for NACKs to repair (under 128 packets) restarts
                # nobody, so nothing asks the device for a keyframe: no figure, no failure.
                keyframe = None
            await wait_until(lambda: frames and frames[-1] > back, timeout=60)
            first_frame = next(t for t in frames if t > back) - back
            await wait_until(lambda: cam.gaps[-1].uploaded, timeout=120)
            uploaded = time.monotonic() - back
            _print({"part": "drop", "down_s": drop_s, "resumed_s": round(resumed, 2), "first_keyframe_at_sfu_s": keyframe,
                    "first_reviewer_frame_s": round(first_frame, 2), "device_upload_done_s": round(uploaded, 2),
                    "segments_uploaded": cam.uploads, "same_participant": cam.client is not None and cam.client.participant_id == pid,
                    "sfu_restarts": pub.restarts})
            counting.cancel()
            cam.stop()
            await asyncio.wait([running], timeout=60)
            await viewer.close()
        finally:
            proxy.close()
            await runner.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--drop-s", type=float, default=20.0)
    parser.add_argument("--parts", default="local,upload,snapshot,drop")
    args = parser.parse_args()
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "local" in parts:
            await local(args.seconds)
        if "upload" in parts:
            (root / "upload").mkdir()
            await upload(args.repeat, root / "upload")
        if "snapshot" in parts:
            (root / "snapshot").mkdir()
            await snapshot(args.repeat, root / "snapshot")
        if "drop" in parts:
            (root / "drop").mkdir()
            await drop(args.drop_s, root / "drop")


if __name__ == "__main__":
    asyncio.run(main())
