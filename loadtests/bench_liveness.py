"""Identity checks: what the liveness analysis costs, per frame and per stream, how long
a customer takes to pass, and how the analysis rate gives way under load.

    python loadtests/bench_liveness.py [--parts frame,stream,decision,load] [--seconds 10] [--repeat 5]

frame: MediaPipe face mesh as the stage runs it (tracking, room for two faces, iris
refinement) on 640x480 frames of a real face photo doing the challenge's actions, and
on frames with no face (the detector then runs on every frame). Process CPU per
analysed frame (MediaPipe's own threads included; nothing else runs), I420 to RGB
conversion included.

stream: an in-process server and N customers publishing 640x480 VP8 at 15 fps of the
face (teller/identity/synthetic.py). Process CPU per second with the "liveness" stage
against the same customers without it: the difference per stream is what the watch
costs, the shared decoder included.

decision: a customer in a call who does what it is prompted to; seconds from the
agent's POST .../identity/liveness to "passed", over --repeat attempts.

load: 4 customers with the watch asked for 10 fps each and cpu_budget 0.1: the
governor's rate factor and the analyses per second each stream got.

Prints one JSON line per part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp
import cv2
import numpy as np
from skimage import data as skimage_data

from teller.client import RoomClient
from teller.identity.analysis import FaceAnalyzer, copy_frame, frame_to_rgb
from teller.identity.challenge import STEPS
from teller.identity.rest import IDENTITY_NODE
from teller.identity.synthetic import ActingFace, ActingTrack, Look, action
from tests.conftest import start_in_process
from tests.test_contact_rest import customer_token
from tests.test_identity_call import answered_call, identity
from tests.test_rest import call


def _print(body: dict[str, Any]) -> None:
    print(json.dumps(body), flush=True)


def _ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"mean": round(statistics.fmean(values), 2), "p50": round(values[len(values) // 2], 2),
            "p95": round(values[int(len(values) * 0.95)], 2), "max": round(values[-1], 2)}


def frame_part(face: ActingFace) -> None:
    import av

    looks = [Look()] * 10
    for step in STEPS:
        looks += action(step, 10.0) + [Look()] * 3
    pictures = [face.frame(look) for look in looks] * 3
    blank = [np.full((480, 640, 3), 90, np.uint8)] * 60
    for name, frames in (("face", pictures), ("no_face", blank)):
        planes = [copy_frame(av.VideoFrame.from_ndarray(cv2.cvtColor(f, cv2.COLOR_RGB2YUV_I420), format="yuv420p"))
                  for f in frames]
        analyser = FaceAnalyzer()
        for p in planes[:5]:
            analyser.analyse(frame_to_rgb(p), 0.0)
        cpu = []
        for i, p in enumerate(planes):
            started = time.process_time()  # MediaPipe works in threads of its own: count them all
            analyser.analyse(frame_to_rgb(p), i / 10)
            cpu.append((time.process_time() - started) * 1000)
        analyser.close()
        _print({"part": "frame", "picture": name, "frames": len(planes), "size": "640x480", "cpu_ms": _ms(cpu)})


async def _customers(server: Any, face: ActingFace, count: int, fps: int = 15) -> list[RoomClient]:
    clients = []
    for i in range(count):
        client = RoomClient(server.url, customer_token(server, f"bench-{i}"))
        await client.connect()
        await client.publish([ActingTrack(face, fps=fps)], data_channel=False)
        clients.append(client)
    return clients


async def stream_part(face: ActingFace, seconds: float, counts: list[int]) -> None:
    for count in counts:
        results: dict[str, float] = {}
        stats: dict[str, Any] = {}
        for stages in ([], ["liveness"]):
            with tempfile.TemporaryDirectory() as tmp:
                server, runner = await start_in_process(Path(tmp), stages={"enabled": stages})
                clients = await _customers(server, face, count)
                try:
                    await asyncio.sleep(3.0)  # joined, decoder started, analysers built
                    node = server.app.get(IDENTITY_NODE)
                    analysed0 = node.governor.analysed if node else 0
                    cpu0, wall0 = time.process_time(), time.monotonic()
                    await asyncio.sleep(seconds)
                    wall = time.monotonic() - wall0
                    results["with" if stages else "without"] = (time.process_time() - cpu0) / wall
                    if node is not None:
                        stats = {**node.stats(), "analysed_per_s_per_stream": round((node.governor.analysed - analysed0) / wall / count, 2)}
                finally:
                    for client in clients:
                        await client.close()
                    await runner.cleanup()
        per_stream = (results["with"] - results["without"]) / count
        _print({"part": "stream", "streams": count, "video": "640x480 VP8 15 fps", "seconds": seconds,
                "process_cores_without": round(results["without"], 3), "process_cores_with": round(results["with"], 3),
                "liveness_cores_per_stream": round(per_stream, 4), "watch": stats})


async def decision_part(face: ActingFace, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server, runner = await start_in_process(Path(tmp), stages={"enabled": ["liveness"]})
        clients: list[RoomClient] = []
        try:
            async with aiohttp.ClientSession() as http:
                cust, ag, accepted = await answered_call(http, server, "bench-kyc", "ag-bench")
                call_id = accepted["call_id"]
                customer = RoomClient(server.url, cust)
                clients.append(customer)
                await customer.connect()
                track = ActingTrack(face, fps=15)

                def on_data(message: dict[str, Any]) -> None:
                    payload = message.get("payload") or {}
                    if message.get("topic") == "identity.prompt" and payload.get("step") != "position":
                        track.perform(payload["step"])

                customer.on("data", on_data)
                await customer.publish([track], data_channel=False)
                await asyncio.sleep(3.0)
                seconds, steps, outcomes = [], [], []
                for _ in range(repeat):
                    started = time.monotonic()
                    status, body = await call(http, server, "POST", f"/v1/calls/{call_id}/identity/liveness", token=ag)
                    assert status == 202, body
                    while True:
                        body = await identity(http, server, call_id, ag)
                        if body["liveness"]["state"] in ("passed", "failed"):
                            break
                        await asyncio.sleep(0.05)
                    seconds.append(time.monotonic() - started)
                    steps.append(len(body["liveness"]["steps"]))
                    outcomes.append(body["liveness"]["state"] if body["liveness"]["state"] == "passed" else body["liveness"]["reason"])
                    await asyncio.sleep(1.0)
                _print({"part": "decision", "attempts": repeat, "outcomes": outcomes, "steps": steps,
                        "seconds_to_decision": {"p50": round(statistics.median(seconds), 2), "max": round(max(seconds), 2)},
                        "note": "each step's action takes about 1.1 s at 15 fps; the rest is positioning (0.5 s) and latency"})
        finally:
            for client in clients:
                await client.close()
            await runner.cleanup()


async def load_part(face: ActingFace, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server, runner = await start_in_process(Path(tmp), stages={"enabled": ["liveness"]},
                                                identity={"watch_fps": 10.0, "cpu_budget": 0.1, "min_fps": 1.0})
        clients = await _customers(server, face, 4)
        try:
            await asyncio.sleep(3.0)
            node = server.app[IDENTITY_NODE]
            analysed0, wall0 = node.governor.analysed, time.monotonic()
            factors = []
            for _ in range(int(seconds)):
                await asyncio.sleep(1.0)
                factors.append(round(node.governor.factor, 3))
            wall = time.monotonic() - wall0
            _print({"part": "load", "streams": 4, "asked_fps_per_stream": 10.0, "cpu_budget": 0.1,
                    "rate_factor_each_second": factors,
                    "analysed_per_s_per_stream": round((node.governor.analysed - analysed0) / wall / 4, 2),
                    "analysis_cpu_ms_p50": node.stats()["cpu_ms_p50"]})
        finally:
            for client in clients:
                await client.close()
            await runner.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="frame,stream,decision,load")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--streams", default="1,4")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    face = ActingFace(skimage_data.astronaut())
    if "frame" in parts:
        frame_part(face)
    if "stream" in parts:
        await stream_part(face, args.seconds, [int(n) for n in args.streams.split(",")])
    if "decision" in parts:
        await decision_part(face, args.repeat)
    if "load" in parts:
        await load_part(face, args.seconds)


if __name__ == "__main__":
    asyncio.run(main())
