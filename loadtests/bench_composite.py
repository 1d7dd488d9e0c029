"""Composite replay benchmark: how many times faster than real time a session's MP4 is built.

    python loadtests/bench_composite.py [--duration 60] [--height 360] [--fps 15] [--layout side_by_side|pip]

Two parties, each a VP8 .webm (640x480, 20 fps, about 600 kb/s, moving gradients like
Chromium's fake camera) and an Opus .webm (a tone), the second party joining 1 s after
the first. The inputs are encoded first and excluded from the timing; `encode_seconds`
is the wall time of `build_composite` (demux, decode, compose, encode, mux). Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import fractions
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from teller.recording.composite import Clip, CompositeOptions, build_composite

CAMERA_W, CAMERA_H, CAMERA_FPS = 640, 480, 20


def write_camera(path: Path, seconds: float, seed: int) -> None:
    """VP8 at camera settings (realtime, CBR); frames are rolled gradients plus a moving
    block, cheap to make and not trivially compressible."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:CAMERA_H, 0:CAMERA_W]
    base = np.stack(
        [128 + 100 * np.sin(xx / (30 + seed * 7)), 128 + 100 * np.cos(yy / 25), (xx + yy) % 256], axis=-1
    ).astype(np.uint8)
    noise = rng.integers(0, 12, (8, CAMERA_H, CAMERA_W, 1), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=CAMERA_FPS)
        stream.width, stream.height, stream.pix_fmt = CAMERA_W, CAMERA_H, "yuv420p"
        stream.codec_context.bit_rate = 600_000
        stream.codec_context.gop_size = 10 * CAMERA_FPS
        stream.codec_context.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        for i in range(round(seconds * CAMERA_FPS)):
            image = np.roll(base, (i * 3, i * 5), axis=(0, 1)) + noise[i % len(noise)]
            x = (i * 8) % (CAMERA_W - 80)
            image[200:280, x : x + 80] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, CAMERA_FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_microphone(path: Path, seconds: float, hz: float) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        stream.codec_context.bit_rate = 32_000
        n = 960
        for i in range(round(seconds * 50)):
            t = (np.arange(n) + i * n) / 48000
            pcm = (0.2 * np.sin(2 * math.pi * hz * t)).astype(np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * n
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    start = 1_700_000_000.0
    clips = []
    for k, (pid, label, hz) in enumerate((("agent", "Agent 王丽", 440.0), ("customer", "Customer", 660.0))):
        seconds = args.duration - k
        write_camera(workdir / f"{pid}.webm", seconds, seed=k)
        write_microphone(workdir / f"{pid}-audio.webm", seconds, hz)
        clips += [
            Clip(workdir / f"{pid}.webm", "video", pid, label, start + k),
            Clip(workdir / f"{pid}-audio.webm", "audio", pid, label, start + k),
        ]
    out = workdir / "composite.mp4"
    options = CompositeOptions("bench-session", layout=args.layout, height=args.height, fps=args.fps)
    cpu = time.process_time()
    result = build_composite(clips, out, options)
    cpu = time.process_time() - cpu
    return {
        "benchmark": "composite",
        "duration_s": round(result.duration_s, 3),
        "encode_seconds": round(result.encode_seconds, 3),
        "x_realtime": round(result.duration_s / result.encode_seconds, 2),
        "cpu_seconds": round(cpu, 3),
        "layout": args.layout,
        "height": result.height,
        "width": result.width,
        "fps": args.fps,
        "video_frames": result.video_frames,
        "output_bytes": out.stat().st_size,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--layout", choices=["side_by_side", "pip"], default="side_by_side")
    parser.add_argument("--workdir", help="where inputs and the composite go (default: a temp dir, removed)")
    args = parser.parse_args()
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(run(args, workdir)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="teller-bench-composite-") as tmp:
        print(json.dumps(run(args, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
