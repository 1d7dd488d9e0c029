"""Forwarding benchmark: one publisher, N subscribers, server CPU per stream-second.

    python loadtests/bench_forward.py [--subscribers 1,5,15] [--duration 10] [--join batch|staggered]

Prints one JSON object per N, then a summary. The server runs as `teller serve` in its
own process; its CPU time is read from /proc over a measuring window that starts once
every subscriber shows video. The publisher loops pre-encoded VP8 (about 1 Mbps,
30 fps) and Opus; subscribers count complete frames from RTP headers, never decoding.
A "stream-second" is one subscriber receiving the publisher's audio and video for one
second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.media import (  # noqa: E402
    AUDIO_TIME_BASE,
    VIDEO_TIME_BASE,
    FrameCounter,
    PreEncodedTrack,
    count_frames,
    encode_audio,
    encode_video,
    measure_window,
    report,
)
from teller.client import RoomClient  # noqa: E402
from teller.signaling.tokens import TokenIssuer  # noqa: E402

SECRET = "benchmark-secret-0123456789abcdef"
ROOM = "bench"


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid`, in nanosecond resolution (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that just ended
    return total / 1e9


# -- roles run as child processes -------------------------------------------------------


async def run_publisher(url: str, token: str, bitrate: int) -> None:
    video = PreEncodedTrack("video", encode_video(bitrate=bitrate), 30, 3000, VIDEO_TIME_BASE)
    audio = PreEncodedTrack("audio", encode_audio(), 50, 960, AUDIO_TIME_BASE)
    client = RoomClient(url, token)
    await client.connect()
    publication = await client.publish([audio, video], data_channel=False, video_codec="VP8")
    for transceiver in publication.pc.getTransceivers():
        if transceiver.kind == "video":
            transceiver.sender._send_keyframe = video.request_keyframe  # PLI -> loop restarts on its keyframe
    await publication.wait_connected()
    size = sum(len(p) for p in video._packets) * 8 / (len(video._packets) / 30)
    print(json.dumps({"event": "publishing", "video_bps": round(size)}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print(json.dumps({"event": "stopped", "keyframes_forced": video.keyframes_forced}), flush=True)
    await client.close()


async def run_subscribers(url: str, tokens: list[str], duration: float, warmup: float, join: str) -> None:
    clients = [RoomClient(url, t) for t in tokens]
    counters: list[FrameCounter] = []

    async def join_one(client: RoomClient) -> None:
        await client.connect()
        publisher = next(pid for pid, p in client.participants.items() if p.get("tracks"))
        counter = FrameCounter(joined_at=time.monotonic())
        counters.append(counter)
        subscription = await client.subscribe(publisher)
        for transceiver in subscription.pc.getTransceivers():
            count_frames(transceiver.receiver, counter, transceiver.kind)

    if join == "batch":
        await asyncio.gather(*(join_one(c) for c in clients))
    else:
        for client in clients:
            await join_one(client)
            await asyncio.sleep(0.25)
    await measure_window(counters, duration, warmup)
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# -- the orchestrator ----------------------------------------------------------------------


class Child:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(log, "wb"), env=env, cwd=ROOT)

    def read_event(self, want: str, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"child exited waiting for {want}")
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                if want == "url" and "is running at" in line:
                    return {"url": line.split("is running at", 1)[1].strip().rstrip("/")}
                continue
            if event.get("event") == want:
                return event
        raise TimeoutError(want)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def bench_one(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    config = workdir / f"bench-{n}.toml"
    config.write_text(
        f'[server]\nport = 0\n[auth]\nsecret = "{SECRET}"\n[storage]\ndata_dir = "{workdir}/data"\n'
        f'[log]\nlevel = "WARNING"\n[signaling]\nmessages_per_second = 1000\nmessage_burst = 1000\n'
        '[digital_human]\nprepare = false\n'  # its start-up synthesis would skew the CPU figures
        '[stages]\nenabled = []\n'  # the media path alone: stages are measured by their own benchmarks
    )
    issuer = TokenIssuer(SECRET)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server_cmd = [sys.executable, "-m", "teller", "serve", "--config", str(config)]
    server = Child(server_cmd, workdir / f"server-{n}.log", env)
    children = [server]
    try:
        url = server.read_event("url")["url"]
        pid = server.proc.pid
        me = [sys.executable, str(Path(__file__).resolve())]
        publisher = Child(
            [*me, "--role", "publisher", "--url", url, "--token", issuer.issue(room=ROOM, role="agent", name="publisher"), "--bitrate", str(args.bitrate)],
            workdir / f"publisher-{n}.log",
            env,
        )
        children.append(publisher)
        published = publisher.read_event("publishing")
        tokens = [issuer.issue(room=ROOM, role="customer", name=f"s{i}") for i in range(n)]
        subscribers = Child(
            [*me, "--role", "subscribers", "--url", url, "--duration", str(args.duration), "--warmup", str(args.warmup), "--join", args.join, "--tokens", ",".join(tokens)],
            workdir / f"subscribers-{n}.log",
            env,
        )
        children.append(subscribers)
        subscribers.read_event("window_start", timeout=60)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        profiler = None
        if args.profile:  # sampling costs the server a little CPU: profile runs are not for numbers
            profiler = subprocess.Popen(
                ["py-spy", "record", "--pid", str(pid), "--duration", str(int(args.duration)), "--rate", "250",
                 "--nonblocking", "--format", "raw", "-o", str(workdir / f"profile-{n}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        subscribers.read_event("window_end", timeout=args.duration + 30)
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        result = subscribers.read_event("result")
        if profiler is not None:
            profiler.wait(30)
        line = report(n, args.join, published["video_bps"], cpu1 - cpu0, t1 - t0, result)
        return line
    finally:
        for child in reversed(children):
            child.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["orchestrator", "publisher", "subscribers"], default="orchestrator")
    parser.add_argument("--subscribers", default="1,5,15")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--bitrate", type=int, default=1_000_000)
    parser.add_argument("--join", choices=["batch", "staggered"], default="staggered")
    parser.add_argument("--profile", action="store_true", help="record the server with py-spy (speedscope JSON)")
    parser.add_argument("--workdir", help="where logs and profiles go (default: a temp dir)")
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--tokens")
    args = parser.parse_args()
    if args.role == "publisher":
        asyncio.run(run_publisher(args.url, args.token, args.bitrate))
        return
    if args.role == "subscribers":
        asyncio.run(run_subscribers(args.url, args.tokens.split(","), args.duration, args.warmup, args.join))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="teller-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(x) for x in args.subscribers.split(",")):
        result = bench_one(n, args, workdir)
        results.append(result)
        print(json.dumps(result), flush=True)
    print(json.dumps({"summary": results, "workdir": str(workdir), "cpus": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    main()
