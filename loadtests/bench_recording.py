"""Recording cost: server CPU for N concurrent 1:1 calls, recording off versus on.

    python loadtests/bench_recording.py [--calls 10] [--duration 15] [--repeat 2]

Each call has two parties; each publishes pre-encoded VP8 (about 1 Mbps, 30 fps) and
Opus and subscribes to the other. The server runs as `teller serve` in its own process
and its CPU time is read from /proc over a window that starts once every subscriber
shows video. With recording on, every one of the 4N tracks is written to WebM
segments; the composite is switched off because it is built after the session, not
during it (its speed is loadtests/bench_composite.py). Prints one JSON line per run
and a summary with the overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.bench_forward import Child, cpu_seconds
from loadtests.media import (
    AUDIO_TIME_BASE,
    VIDEO_TIME_BASE,
    FrameCounter,
    PreEncodedTrack,
    count_frames,
    encode_audio,
    encode_video,
    measure_window,
)
from teller.client import RoomClient
from teller.signaling.tokens import TokenIssuer

SECRET = "benchmark-secret-0123456789abcdef"


async def run_calls(url: str, calls: int, duration: float, warmup: float, bitrate: int) -> None:
    issuer = TokenIssuer(SECRET)
    video_packets = encode_video(bitrate=bitrate)
    audio_packets = encode_audio()
    counters: list[FrameCounter] = []
    clients: list[RoomClient] = []

    async def party(room: str, role: str) -> RoomClient:
        client = RoomClient(url, issuer.issue(room=room, role=role, name=f"{role}-{room}"))
        clients.append(client)
        await client.connect()
        video = PreEncodedTrack("video", video_packets, 30, 3000, VIDEO_TIME_BASE)
        audio = PreEncodedTrack("audio", audio_packets, 50, 960, AUDIO_TIME_BASE)
        publication = await client.publish([audio, video], data_channel=False, video_codec="VP8")
        for transceiver in publication.pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.sender._send_keyframe = video.request_keyframe
        await publication.wait_connected()
        return client

    async def subscribe(client: RoomClient) -> None:
        deadline = time.monotonic() + 20
        while True:
            others = [pid for pid, p in client.participants.items() if p.get("tracks") and pid != client.participant_id]
            if others:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the other party never published")
            await asyncio.sleep(0.05)
        counter = FrameCounter(joined_at=time.monotonic())
        counters.append(counter)
        subscription = await client.subscribe(others[0])
        for transceiver in subscription.pc.getTransceivers():
            count_frames(transceiver.receiver, counter, transceiver.kind)

    for i in range(calls):
        room = f"call-{i}"
        customer, agent = await asyncio.gather(party(room, "customer"), party(room, "agent"))
        await asyncio.gather(subscribe(customer), subscribe(agent))
    await measure_window(counters, duration, warmup)
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def bench_one(recording: bool, args: argparse.Namespace, workdir: Path, run: int) -> dict[str, Any]:
    name = f"{'on' if recording else 'off'}-{run}"
    config = workdir / f"{name}.toml"
    config.write_text(
        f'[server]\nport = 0\n[auth]\nsecret = "{SECRET}"\n[storage]\ndata_dir = "{workdir}/data-{name}"\n'
        f'[log]\nlevel = "WARNING"\n[signaling]\nmessages_per_second = 1000\nmessage_burst = 1000\n'
        '[digital_human]\nprepare = false\n'  # its start-up synthesis would skew the CPU figures
        '[stages]\nenabled = []\n'  # the media path alone: stages are measured by their own benchmarks
        f'[recording]\nenabled = {"true" if recording else "false"}\ncomposite = false\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = Child([sys.executable, "-m", "teller", "serve", "--config", str(config)], workdir / f"server-{name}.log", env)
    children = [server]
    try:
        url = server.read_event("url")["url"]
        pid = server.proc.pid
        calls = Child(
            [sys.executable, str(Path(__file__).resolve()), "--role", "calls", "--url", url, "--calls", str(args.calls),
             "--duration", str(args.duration), "--warmup", str(args.warmup), "--bitrate", str(args.bitrate)],
            workdir / f"calls-{name}.log", env,
        )
        children.append(calls)
        calls.read_event("window_start", timeout=120)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        profiler = None
        if args.profile and recording:  # sampling costs CPU: profile runs are not for numbers
            profiler = subprocess.Popen(
                ["py-spy", "record", "--pid", str(pid), "--duration", str(int(args.duration)), "--rate", "200",
                 "--nonblocking", "--threads", "--format", "raw", "-o", str(workdir / f"profile-{name}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        calls.read_event("window_end", timeout=args.duration + 60)
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        result = calls.read_event("result")
        if profiler is not None:
            profiler.wait(30)
        spool = workdir / f"data-{name}" / "spool"
        written = sum(p.stat().st_size for p in spool.rglob("*.webm")) if spool.exists() else 0
        return {
            "recording": recording,
            "calls": args.calls,
            "window_s": round(t1 - t0, 2),
            "server_cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
            "video_delivery_ratio_min": round(result["delivery_min"], 4),
            "frame_gap_p99_ms": round(result["frame_gap_p99_ms"], 1),
            "segment_bytes_written": written,
        }
    finally:
        for child in reversed(children):
            child.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["orchestrator", "calls"], default="orchestrator")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--bitrate", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="alternating off/on runs of each")
    parser.add_argument("--profile", action="store_true", help="record the server with py-spy (recording-on runs)")
    parser.add_argument("--workdir")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.role == "calls":
        asyncio.run(run_calls(args.url, args.calls, args.duration, args.warmup, args.bitrate))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="teller-bench-rec-"))
    workdir.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for run in range(args.repeat):
        for recording in (False, True):
            line = bench_one(recording, args, workdir, run)
            runs.append(line)
            print(json.dumps(line), flush=True)
    off = statistics.fmean(r["server_cpu_percent"] for r in runs if not r["recording"])
    on = statistics.fmean(r["server_cpu_percent"] for r in runs if r["recording"])
    print(json.dumps({
        "benchmark": "recording_cpu", "calls": args.calls, "tracks_recorded": 4 * args.calls,
        "server_cpu_percent_off": round(off, 1), "server_cpu_percent_on": round(on, 1),
        "overhead_percent": round(100 * (on - off) / off, 1), "target_overhead_percent": 10,
        "runs": len(runs), "workdir": str(workdir), "cpus": os.cpu_count(),
    }), flush=True)


if __name__ == "__main__":
    main()
