"""Capacity: how many concurrent 1:1 video calls one node process carries, and a soak.

    python loadtests/bench_capacity.py [--calls 10,20,30,40,50,60] [--duration 20] [--generators 2]
    python loadtests/bench_capacity.py --soak 1800 --calls 25 [--call-seconds 120]

A call is two parties in a room; each publishes pre-encoded VP8 (about 500 kbps,
640x480, 30 fps) and Opus and subscribes to the other, so a call is four forwarded
tracks, all four recorded (WebM segments; the composite is built after a session and
is off). The server is one `teller serve` process. Stages are off unless
`--stages default` keeps the configured ones (ASR and the liveness watch): the
capacity of the media path is the figure, and what stages add is measured beside it.

**Stepping.** Calls are added in steps, arriving `--arrival-interval` apart while the
earlier calls go on, so every join happens under the load of the step before. After
each step: a warm-up, then a window of `--duration` seconds over which the server's
CPU (every thread, from /proc), the load generators' CPU and the machine's are read,
and every subscriber's video delivery is counted from RTP headers (frames received
against frames sent, by RTP timestamp). A step passes with delivery >= 99 % for every
subscriber and join p95 <= 1 s (join: from a party's first signalling request to the
first complete keyframe of the other party's video). The capacity is the last step
that passes. Where the machine runs out of CPU before the server does (the load
generators need about as much CPU as the server), the summary says so and gives the
figure the server's own CPU per call projects for a whole core.

**Soak** (`--soak SECONDS`): `--calls` concurrent calls for that long, each lasting
about `--call-seconds` before it hangs up and a new call takes its place, so joins
and leaves go on all the time. Every `--soak-window` seconds: the server's RSS, open
file descriptors, threads and event-loop tasks (from its /metrics), delivery and
joins. Growth is measured from the first window after `--soak-settle` seconds: empty
rooms outlive their calls by `[rooms] empty_timeout_s`, so the process takes a few
minutes to reach its steady state.

Prints one JSON line per step (or soak window), then a summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.bench_forward import Child, cpu_seconds  # noqa: E402
from loadtests.media import (  # noqa: E402
    AUDIO_TIME_BASE,
    VIDEO_TIME_BASE,
    FrameCounter,
    PreEncodedTrack,
    count_frames,
    encode_audio,
    encode_video,
    frame_delivery,
    percentile,
)
from teller.client import RoomClient  # noqa: E402
from teller.signaling.tokens import TokenIssuer  # noqa: E402

SECRET = "benchmark-secret-0123456789abcdef"
DELIVERY_TARGET = 0.99
JOIN_P95_TARGET_MS = 1000.0


# -- the load generator (a child process) ------------------------------------------------


@dataclass
class Party:
    client: RoomClient
    counter: FrameCounter | None = None
    started_at: float = 0.0


@dataclass
class Call:
    room: str
    parties: list[Party] = field(default_factory=list)
    join_ms: list[float] = field(default_factory=list)
    failed: str | None = None


class Generator:
    """Holds calls on one asyncio loop; the orchestrator drives it with JSON lines on stdin."""

    def __init__(self, url: str, bitrate: int, index: int) -> None:
        self.url = url
        self.index = index
        self.issuer = TokenIssuer(SECRET)
        self.video = encode_video(bitrate=bitrate)
        self.audio = encode_audio()
        self.calls: dict[str, Call] = {}
        self.retired: list[FrameCounter] = []  # counters of calls that ended inside a soak window
        self.serial = itertools.count()
        self.errors: list[str] = []
        self.window_start = 0.0
        self._slots: list[asyncio.Task[None]] = []

    def emit(self, event: dict[str, Any]) -> None:
        print(json.dumps(event), flush=True)

    async def party(self, room: str, role: str) -> Party:
        started = time.monotonic()
        client = RoomClient(self.url, self.issuer.issue(room=room, role=role, name=f"{role}-{room}"))
        party = Party(client, started_at=started)
        await client.connect()
        video = PreEncodedTrack("video", self.video, 30, 3000, VIDEO_TIME_BASE)
        audio = PreEncodedTrack("audio", self.audio, 50, 960, AUDIO_TIME_BASE)
        publication = await client.publish([audio, video], data_channel=False, video_codec="VP8")
        for transceiver in publication.pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.sender._send_keyframe = video.request_keyframe  # PLI -> the loop restarts on its keyframe
        await publication.wait_connected()
        return party

    async def subscribe(self, party: Party) -> None:
        client = party.client
        deadline = time.monotonic() + 30
        while True:
            others = [pid for pid, p in client.participants.items() if p.get("tracks") and pid != client.participant_id]
            if others:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the other party never published")
            await asyncio.sleep(0.02)
        party.counter = FrameCounter(joined_at=party.started_at)
        subscription = await client.subscribe(others[0])
        for transceiver in subscription.pc.getTransceivers():
            count_frames(transceiver.receiver, party.counter, transceiver.kind)

    async def start_call(self) -> Call:
        call = Call(room=f"g{self.index}-c{next(self.serial)}")
        self.calls[call.room] = call
        try:
            call.parties = list(await asyncio.gather(self.party(call.room, "customer"), self.party(call.room, "agent")))
            await asyncio.gather(*(self.subscribe(p) for p in call.parties))
            deadline = time.monotonic() + 20
            while any(p.counter is None or p.counter.first_keyframe_at is None for p in call.parties):
                if time.monotonic() > deadline:
                    raise TimeoutError("no keyframe within 20 s")
                await asyncio.sleep(0.01)
            call.join_ms = [1000 * (p.counter.first_keyframe_at - p.started_at) for p in call.parties]  # type: ignore[union-attr,operator]
        except Exception as exc:  # noqa: BLE001 - a failed join is a result to report, not a crash
            call.failed = f"{type(exc).__name__}: {exc}"
            self.errors.append(call.failed)
        return call

    async def end_call(self, call: Call) -> None:
        self.calls.pop(call.room, None)
        for party in call.parties:
            if party.counter is not None and self.window_start:
                self.retired.append(party.counter)
        await asyncio.gather(*(p.client.close() for p in call.parties), return_exceptions=True)

    async def add(self, count: int, interval: float) -> None:
        tasks = []
        for _ in range(count):
            tasks.append(asyncio.create_task(self.start_call()))
            await asyncio.sleep(interval)
        calls = await asyncio.gather(*tasks)
        self.emit({
            "event": "added",
            "join_ms": [ms for c in calls for ms in c.join_ms],
            "failed": [c.failed for c in calls if c.failed],
        })

    async def churn(self, count: int, interval: float, call_seconds: float) -> None:
        """Keep `count` calls up, each replaced by a new one after about `call_seconds`."""

        async def slot(k: int) -> None:
            await asyncio.sleep(k * interval)
            while True:
                call = await self.start_call()
                self.emit({"event": "joined", "join_ms": call.join_ms, "failed": call.failed})
                await asyncio.sleep(call_seconds * random.uniform(0.8, 1.2))
                await self.end_call(call)

        self._slots = [asyncio.create_task(slot(k)) for k in range(count)]
        self.emit({"event": "churning", "calls": count})

    def window(self, start: float, end: float) -> dict[str, Any]:
        counters = [p.counter for c in self.calls.values() for p in c.parties if p.counter is not None]
        counters += self.retired
        ratios, gaps, frames = [], [], 0
        for counter in counters:
            seen = [(t, ts) for t, ts in counter.frames if start <= t <= end]
            if len(seen) < 2:
                continue
            received, expected = frame_delivery(ts for _, ts in seen)
            ratios.append(min(1.0, received / expected))
            gaps += [1000 * (b[0] - a[0]) for a, b in itertools.pairwise(seen)]
            frames += received
        for counter in counters:  # what is counted is not kept: a soak runs for hours
            counter.frames = [f for f in counter.frames if f[0] > end]
        self.retired = []
        return {"event": "window", "ratios": ratios, "gap_p99_ms": percentile(gaps, 99), "frames": frames,
                "subscribers": len(ratios), "errors": self.errors[-5:], "error_count": len(self.errors)}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self.emit({"event": "ready"})
        while line := await reader.readline():
            command = json.loads(line)
            name = command["cmd"]
            if name == "add":
                await self.add(command["calls"], command["interval"])
            elif name == "churn":
                await self.churn(command["calls"], command["interval"], command["call_seconds"])
            elif name == "window_start":
                self.window_start = time.monotonic()
                self.emit({"event": "window_started"})
            elif name == "window_end":
                self.emit(self.window(self.window_start, time.monotonic()))
                self.window_start = time.monotonic()
            elif name == "stop":
                break
        for task in self._slots:
            task.cancel()
        await asyncio.gather(*(self.end_call(c) for c in list(self.calls.values())), return_exceptions=True)
        self.emit({"event": "stopped"})


# -- the orchestrator ----------------------------------------------------------------------


class Driven(Child):
    """A generator child: commands on stdin, events on stdout."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "wb"), env=env, cwd=ROOT)

        self.joins: list[float] = []  # soak: joins reported since the last window
        self.failed: list[str] = []

    def read_event(self, want: str, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"a generator exited waiting for {want}")
            event = json.loads(line)
            if event.get("event") == "joined":
                self.joins += event["join_ms"]
                if event["failed"]:
                    self.failed.append(event["failed"])
            elif event.get("event") == want:
                return event
        raise TimeoutError(want)

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "stop"})
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of every CPU, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def process_figures(pid: int, metrics_url: str) -> dict[str, Any]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    figures: dict[str, Any] = {
        "rss_mb": round(rss_kb / 1024, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
    }
    try:
        text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        for name, key in (("teller_event_loop_tasks", "tasks"), ("teller_rooms", "rooms"),
                          ("teller_participants", "participants"), ("teller_video_frames_sent_total", "video_frames_sent")):
            match = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.MULTILINE)
            if match:
                figures[key] = int(float(match.group(1)))
        for name, key in (("teller_malloc_heap_bytes", "heap_mb"), ("teller_malloc_in_use_bytes", "heap_in_use_mb")):
            match = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.MULTILINE)
            if match:  # glibc only: heap growing with in-use flat is fragmentation, not a leak
                figures[key] = round(float(match.group(1)) / 2**20, 1)
    except OSError as exc:
        figures["metrics_error"] = str(exc)
    return figures


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.children: list[Child] = []

    def start(self) -> None:
        args = self.args
        stages = "" if args.stages == "default" else "[stages]\nenabled = []\n"
        config = self.workdir / "capacity.toml"
        config.write_text(
            f'[server]\nport = 0\n[auth]\nsecret = "{SECRET}"\n[storage]\ndata_dir = "{self.workdir}/data"\n'
            f'[log]\nlevel = "WARNING"\n[signaling]\nmessages_per_second = 1000\nmessage_burst = 1000\n'
            '[digital_human]\nprepare = false\n'
            '[recording]\nenabled = true\ncomposite = false\n' + stages
        )
        self.server = Child([sys.executable, "-m", "teller", "serve", "--config", str(config)], self.workdir / "server.log", self.env)
        self.children.append(self.server)
        self.url = self.server.read_event("url")["url"]
        self.metrics_url = self.url.replace("ws://", "http://").rstrip("/") + "/metrics"
        self.generators: list[Driven] = []
        for k in range(args.generators):
            g = Driven([sys.executable, str(Path(__file__).resolve()), "--role", "generator", "--url", self.url,
                        "--bitrate", str(args.bitrate), "--index", str(k)], self.workdir / f"generator-{k}.log", self.env)
            self.children.append(g)
            self.generators.append(g)
        for g in self.generators:
            g.read_event("ready", timeout=120)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def cpu(self) -> dict[str, float]:
        return {
            "server": cpu_seconds(self.server.proc.pid),
            "generators": sum(cpu_seconds(g.proc.pid) for g in self.generators),
            "t": time.monotonic(),
            "busy": machine_busy()[0],
            "total": machine_busy()[1],
        }

    def add(self, calls: int) -> dict[str, Any]:
        shares = [calls // len(self.generators) + (1 if k < calls % len(self.generators) else 0) for k in range(len(self.generators))]
        interval = self.args.arrival_interval * len(self.generators)
        for g, share in zip(self.generators, shares):
            g.send({"cmd": "add", "calls": share, "interval": interval})
        joins, failed = [], []
        for g, share in zip(self.generators, shares):
            event = g.read_event("added", timeout=60 + share * (interval + 20))
            joins += event["join_ms"]
            failed += event["failed"]
        return {"join_ms": joins, "failed": failed}

    def measure(self, duration: float) -> dict[str, Any]:
        for g in self.generators:
            g.send({"cmd": "window_start"})
        for g in self.generators:
            g.read_event("window_started")
        before = self.cpu()
        time.sleep(duration)
        for g in self.generators:
            g.send({"cmd": "window_end"})
        windows = [g.read_event("window", timeout=60) for g in self.generators]
        after = self.cpu()
        span = after["t"] - before["t"]
        ratios = [r for w in windows for r in w["ratios"]]
        cores = os.cpu_count() or 1
        return {
            "window_s": round(span, 2),
            "server_cpu_percent": round(100 * (after["server"] - before["server"]) / span, 1),
            "generators_cpu_percent": round(100 * (after["generators"] - before["generators"]) / span, 1),
            "machine_busy_percent": round(100 * cores * (after["busy"] - before["busy"]) / max(1, after["total"] - before["total"]), 1),
            "subscribers": len(ratios),
            "video_delivery_ratio_min": round(min(ratios), 4) if ratios else 0.0,
            "video_delivery_ratio_mean": round(statistics.fmean(ratios), 4) if ratios else 0.0,
            "frame_gap_p99_ms": round(max(w["gap_p99_ms"] for w in windows), 1),
            "frames_counted": sum(w["frames"] for w in windows),
            "generator_errors": sum(w["error_count"] for w in windows),
        }


def step_line(calls: int, joined: dict[str, Any], window: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    joins = joined["join_ms"]
    line = {
        "calls": calls,
        **window,
        "join_p50_ms": round(percentile(joins, 50), 1) if joins else None,
        "join_p95_ms": round(percentile(joins, 95), 1) if joins else None,
        "joins_failed": len(joined["failed"]),
        **figures,
    }
    line["server_cpu_ms_per_call_s"] = round(10 * line["server_cpu_percent"] / calls, 2)
    line["passed"] = (
        line["video_delivery_ratio_min"] >= DELIVERY_TARGET
        and line["subscribers"] == 2 * calls
        and line["join_p95_ms"] is not None and line["join_p95_ms"] <= JOIN_P95_TARGET_MS
        and not joined["failed"]
    )
    return line


def run_steps(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    current = 0
    for target in (int(x) for x in args.calls.split(",")):
        joined = bench.add(target - current)
        current = target
        time.sleep(args.warmup)
        window = bench.measure(args.duration)
        line = step_line(current, joined, window, process_figures(bench.server.proc.pid, bench.metrics_url))
        steps.append(line)
        print(json.dumps({"event": "step", **line}), flush=True)
        if not line["passed"]:
            break
    passed = [s for s in steps if s["passed"]]
    best = passed[-1] if passed else None
    cores = os.cpu_count() or 1
    last = steps[-1] if steps else None
    # The generators need more CPU than the server: on a small machine they run out first.
    machine_full = last is not None and last["machine_busy_percent"] >= 90 * cores
    if last is None:
        limited_by = "no step ran"
    elif machine_full:
        limited_by = "the machine: the load generators share its cores with the server"
    elif last["passed"]:
        limited_by = "none: every step passed"
    else:
        limited_by = "the server: delivery or join time missed the target"
    per_call = statistics.fmean(s["server_cpu_ms_per_call_s"] for s in passed) if passed else None
    summary: dict[str, Any] = {
        "benchmark": "capacity",
        "video_bitrate": args.bitrate,
        "stages": args.stages,
        "recording": True,
        "steps": steps,
        "capacity_calls": best["calls"] if best else None,
        "limited_by": limited_by,
        "server_cpu_ms_per_call_s": round(per_call, 2) if per_call else None,
        # A call costs the server this many ms of CPU per second: a whole core carries 1000 / that.
        "calls_per_core": round(1000 / per_call, 1) if per_call else None,
        "target_calls_per_core": 50,
        "cpus": cores,
        "workdir": str(bench.workdir),
    }
    if best:
        summary["calls_per_core_at_capacity"] = round(100 * best["calls"] / max(best["server_cpu_percent"], 1e-9), 1)
    return summary


def run_soak(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    interval = args.arrival_interval * len(bench.generators)
    shares = [args.calls // len(bench.generators) + (1 if k < args.calls % len(bench.generators) else 0) for k in range(len(bench.generators))]
    for g, share in zip(bench.generators, shares):
        g.send({"cmd": "churn", "calls": share, "interval": interval, "call_seconds": args.call_seconds})
    for g in bench.generators:
        g.read_event("churning")
    time.sleep(args.warmup + args.calls * args.arrival_interval)
    windows: list[dict[str, Any]] = []
    started = time.monotonic()
    while time.monotonic() - started < args.soak:
        window = bench.measure(min(args.soak_window, max(1.0, args.soak - (time.monotonic() - started))))
        joins = [ms for g in bench.generators for ms in g.joins]
        failed = sum(len(g.failed) for g in bench.generators)
        for g in bench.generators:
            g.joins, g.failed = [], []
        line = {
            "elapsed_s": round(time.monotonic() - started), **window,
            "joins": len(joins), "join_p95_ms": round(percentile(joins, 95), 1) if joins else None, "joins_failed": failed,
            **process_figures(bench.server.proc.pid, bench.metrics_url),
        }
        windows.append(line)
        print(json.dumps({"event": "soak_window", **line}), flush=True)
    # Rooms outlive their last party by [rooms] empty_timeout_s and calls churn, so the
    # process grows to a steady state first: the baseline is the first window after it.
    settled = [w for w in windows if w["elapsed_s"] >= args.soak_settle] or windows
    first, last = settled[0], windows[-1]

    def growth(key: str) -> float | None:
        return round(100 * (last[key] - first[key]) / first[key], 2) if first.get(key) else None

    deliveries = [w["video_delivery_ratio_mean"] for w in settled]
    half = max(1, len(deliveries) // 2)
    summary = {
        "benchmark": "soak",
        "calls": args.calls,
        "call_seconds": args.call_seconds,
        "seconds": round(time.monotonic() - started),
        "windows": windows,
        "settle_s": args.soak_settle,
        "rss_mb_first": first["rss_mb"], "rss_mb_last": last["rss_mb"], "rss_mb_max": max(w["rss_mb"] for w in settled),
        "rss_growth_percent": growth("rss_mb"),
        "heap_mb_first": first.get("heap_mb"), "heap_mb_last": last.get("heap_mb"),
        "heap_in_use_mb_first": first.get("heap_in_use_mb"), "heap_in_use_mb_last": last.get("heap_in_use_mb"),
        "heap_in_use_growth_percent": growth("heap_in_use_mb"),
        "fds_first": first["fds"], "fds_last": last["fds"], "fds_max": max(w["fds"] for w in settled),
        "tasks_first": first.get("tasks"), "tasks_last": last.get("tasks"),
        "threads_first": first["threads"], "threads_last": last["threads"],
        "delivery_mean_first_half": round(statistics.fmean(deliveries[:half]), 4),
        "delivery_mean_second_half": round(statistics.fmean(deliveries[half:] or deliveries), 4),
        "delivery_min": min(w["video_delivery_ratio_min"] for w in windows),
        "server_cpu_percent_first": first["server_cpu_percent"], "server_cpu_percent_last": last["server_cpu_percent"],
        "generator_errors": last["generator_errors"],
        "joins": sum(w["joins"] for w in windows),
        "joins_failed": sum(w["joins_failed"] for w in windows),
        "join_p95_ms_max": max((w["join_p95_ms"] for w in windows if w["join_p95_ms"] is not None), default=None),
        "targets": {"rss_growth_percent": 5, "fds": "no growth", "tasks": "no growth", "delivery": "no decay"},
        "workdir": str(bench.workdir),
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["orchestrator", "generator"], default="orchestrator")
    parser.add_argument("--calls", default="10,20,30,40,50,60", help="steps (total concurrent calls), or the soak's calls")
    parser.add_argument("--duration", type=float, default=20.0, help="measuring window per step, seconds")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--bitrate", type=int, default=500_000, help="each party's video bitrate")
    parser.add_argument("--generators", type=int, default=2, help="load-generator processes")
    parser.add_argument("--arrival-interval", type=float, default=0.1, help="seconds between arriving calls")
    parser.add_argument("--stages", choices=["none", "default"], default="none")
    parser.add_argument("--soak", type=float, default=0.0, help="soak for this many seconds instead of stepping")
    parser.add_argument("--soak-window", type=float, default=60.0)
    parser.add_argument("--soak-settle", type=float, default=240.0,
                        help="soak: seconds before the baseline (rooms linger empty_timeout_s after a call)")
    parser.add_argument("--call-seconds", type=float, default=120.0, help="soak: how long a call lasts")
    parser.add_argument("--workdir")
    parser.add_argument("--url")
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args()
    if args.role == "generator":
        asyncio.run(Generator(args.url, args.bitrate, args.index).run())
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="teller-bench-capacity-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, workdir)
    try:
        bench.start()
        if args.soak:
            args.calls = int(args.calls)
            summary = run_soak(bench, args)
        else:
            summary = run_steps(bench, args)
    finally:
        bench.stop()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
