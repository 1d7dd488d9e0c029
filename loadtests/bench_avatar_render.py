"""The avatar renderer alone: drawing time per frame, and CPU per avatar with VP8 encoding.

    python loadtests/bench_avatar_render.py [--seconds 10] [--counts 1,2,4] [--frames 600]

render: frames drawn back to back (AvatarRenderer.render: animation state, sprites,
head remap, I420) at 640x480 and 1280x720 from the default portrait; wall ms p50/p99
and CPU ms per frame.

tracks: N AvatarTracks (640x480, 30 fps, the shared 2-thread drawing pool) each
consumed like aiortc's RTCRtpSender does it: recv(), then Vp8Encoder.encode in the
loop's default executor. A synthetic voice (syllables at about 5 Hz, pauses) keeps the
mouth moving. Over the window after a second's warm-up: process CPU (every thread) per
wall second per avatar, frames per second, the interval p99 between frames leaving
recv(), and the tracks' late/resync counts. Target: 30 fps at <= 0.3 core per avatar.

Prints one JSON line per part. No network, no server: bench_digital_human.py measures
the whole bot through the SFU.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from teller.digital_human.renderer import AvatarRenderer, load_rig
from teller.digital_human.rig import AvatarRig
from teller.digital_human.track import AvatarTrack

FPS = 30


class SyntheticVoice:
    """Loudness like speech: syllables at ~5 Hz with a 300 ms pause every ~2 s."""

    def __init__(self, seed: int) -> None:
        self.phase = seed * 0.37

    def level_at(self, t: float) -> float:
        t += self.phase
        if (t % 2.0) > 1.7:
            return 0.0
        syllable = 0.5 + 0.5 * math.sin(2 * math.pi * 4.7 * t)
        return 0.35 + 0.6 * syllable * (0.8 + 0.2 * math.sin(2 * math.pi * 0.6 * t))


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


def bench_render(sizes: list[tuple[int, int]], frames: int) -> dict[str, Any]:
    results = []
    for width, height in sizes:
        started = time.perf_counter()
        rig = load_rig(None, width, height)
        rig_s = time.perf_counter() - started
        renderer = AvatarRenderer(rig, fps=FPS, seed=1)
        voice = SyntheticVoice(0)
        t0 = time.monotonic()
        for k in range(30):  # warm caches
            renderer.render(t0 + k / FPS, voice.level_at(k / FPS))
        wall_ms: list[float] = []
        cpu0 = time.process_time()
        for k in range(30, 30 + frames):
            t = k / FPS
            begin = time.perf_counter()
            renderer.render(t0 + t, voice.level_at(t))
            wall_ms.append((time.perf_counter() - begin) * 1000)
        cpu_ms = (time.process_time() - cpu0) * 1000 / frames
        results.append({"size": f"{width}x{height}", "rig_build_s": round(rig_s, 3),
                        "head_box": [rig.head.width, rig.head.height], "frames": frames,
                        "render_ms_p50": percentile(wall_ms, 50), "render_ms_p99": percentile(wall_ms, 99),
                        "render_ms_mean": round(float(np.mean(wall_ms)), 3), "cpu_ms_per_frame": round(cpu_ms, 3)})
    return {"benchmark": "avatar_render", "results": results, "target_ms_640x480": 3.0, "cpus": os.cpu_count()}


async def consume(track: AvatarTrack, seconds: float, warmup: float, out: dict[str, Any]) -> None:
    """What RTCRtpSender does with a video track: recv, encode in the default executor."""
    from aiortc.codecs.vpx import Vp8Encoder

    encoder = Vp8Encoder()
    loop = asyncio.get_running_loop()
    sent: list[float] = []
    encoded_bytes = 0
    begin = time.monotonic()
    while time.monotonic() - begin < warmup + seconds:
        frame = await track.recv()
        now = time.monotonic()
        if now - begin >= warmup:
            sent.append(now)
        payloads, _timestamp = await loop.run_in_executor(None, encoder.encode, frame)
        if now - begin >= warmup:
            encoded_bytes += sum(len(p) for p in payloads)
    out["sent"] = sent
    out["bytes"] = encoded_bytes


async def bench_tracks(rig: AvatarRig, count: int, seconds: float, warmup: float = 1.0) -> dict[str, Any]:
    tracks = [AvatarTrack(AvatarRenderer(rig, fps=FPS, seed=i), SyntheticVoice(i)) for i in range(count)]
    outs: list[dict[str, Any]] = [{} for _ in tracks]
    tasks = [asyncio.ensure_future(consume(t, seconds, warmup, o)) for t, o in zip(tracks, outs)]
    await asyncio.sleep(warmup)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*tasks)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    for track in tracks:
        track.stop()
    per = []
    for track, out in zip(tracks, outs):
        sent = out["sent"]
        intervals = [(b - a) * 1000 for a, b in itertools.pairwise(sent)]
        span = sent[-1] - sent[0] if len(sent) > 1 else float("nan")
        per.append({"fps": round((len(sent) - 1) / span, 2), "interval_ms_p99": percentile(intervals, 99),
                    "interval_ms_max": round(max(intervals), 2), "kbps": round(out["bytes"] * 8 / span / 1000, 1),
                    **track.stats()})
    return {"avatars": count, "wall_s": round(wall, 2), "cpu_cores": round(cpu / wall, 3),
            "cores_per_avatar": round(cpu / wall / count, 3),
            "fps_min": min(p["fps"] for p in per), "interval_ms_p99_max": max(p["interval_ms_p99"] for p in per),
            "per_avatar": per}


async def bench_all_tracks(counts: list[int], seconds: float) -> dict[str, Any]:
    rig = load_rig(None, 640, 480)
    runs = [await bench_tracks(rig, n, seconds) for n in counts]
    return {"benchmark": "avatar_tracks", "size": "640x480", "fps": FPS, "seconds": seconds, "encoder": "aiortc Vp8Encoder",
            "runs": runs, "target": {"fps": FPS, "cores_per_avatar": 0.3}, "cpus": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--counts", default="1,2,4")
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    print(json.dumps(bench_render([(640, 480), (1280, 720)], args.frames)), flush=True)
    counts = [int(c) for c in args.counts.split(",")]
    print(json.dumps(asyncio.run(bench_all_tracks(counts, args.seconds))), flush=True)


if __name__ == "__main__":
    main()
