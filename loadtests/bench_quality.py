"""Live quality: what statistics cost, and how fast alerts and tier moves come.

    python loadtests/bench_quality.py cpu   [--calls 10] [--duration 20]
    python loadtests/bench_quality.py alert [--repeat 5]
    python loadtests/bench_quality.py adapt [--repeat 3]

cpu: N 1:1 calls (pre-encoded VP8 ~1 Mbps + Opus, each party subscribing to the
other) against `teller serve` in its own process. Over a measurement window it
reads the server's CPU from /proc and the monitor's own tick CPU from /metrics
(teller_quality_cpu_seconds_total), and times the one thing statistics add to
the per-packet path (a frame-boundary check; `_new_frame` once per video frame)
with timeit. Target: statistics ≤ 2 % of the forwarding cost.

alert: a customer publishing through an impaired TURN relay (`teller impair` in
front of coturn); 5 % loss is switched on and the time until the agent receives
the `network_poor` alert is measured.

adapt: a subscriber through the relay; a 300 kbps cap is switched on, then off;
the times until its video leaves the forwarded stream and until it is back on it.

Each part prints one JSON line per run and one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.bench_forward import Child, cpu_seconds  # noqa: E402
from loadtests.bench_recording import SECRET  # noqa: E402


def scrape(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    raise SystemExit(f"{name} not in /metrics")


def frame_check_cost() -> float:
    """Seconds per call of the per-frame bookkeeping the media path gained."""
    from teller.sfu.track import Publication

    class _Pub:
        freezes = 0
        freeze_time = 0.0
        last_frame_at: float | None = 0.0
        frames = 0
        _frame_ts = -1

    pub = _Pub()
    now = [0.0]

    def one() -> None:
        now[0] += 0.033
        Publication._new_frame(pub, int(now[0] * 90000), now[0])  # type: ignore[arg-type]

    n = 200_000
    return min(timeit.repeat(one, number=n, repeat=5)) / n - min(timeit.repeat(lambda: None, number=n, repeat=5)) / n


def bench_cpu(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="teller-bench-quality-"))
    config = workdir / "server.toml"
    config.write_text(
        f'[server]\nport = 0\n[auth]\nsecret = "{SECRET}"\n[storage]\ndata_dir = "{workdir}/data"\n'
        f'[log]\nlevel = "WARNING"\n[signaling]\nmessages_per_second = 1000\nmessage_burst = 1000\n'
        '[digital_human]\nprepare = false\n'  # its start-up synthesis would skew the CPU figures
        '[stages]\nenabled = []\n'  # the media path alone: stages are measured by their own benchmarks
        f'[recording]\nenabled = false\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = Child([sys.executable, "-m", "teller", "serve", "--config", str(config)], workdir / "server.log", env)
    children = [server]
    try:
        url = server.read_event("url")["url"]
        calls = Child(
            [sys.executable, str(ROOT / "loadtests" / "bench_recording.py"), "--role", "calls", "--url", url,
             "--calls", str(args.calls), "--duration", str(args.duration), "--warmup", "3", "--bitrate", "1000000"],
            workdir / "calls.log", env,
        )
        children.append(calls)
        calls.read_event("window_start", timeout=120)
        cpu0, q0, t0 = cpu_seconds(server.proc.pid), scrape(url, "teller_quality_cpu_seconds_total"), time.monotonic()
        calls.read_event("window_end", timeout=args.duration + 60)
        cpu1, q1, t1 = cpu_seconds(server.proc.pid), scrape(url, "teller_quality_cpu_seconds_total"), time.monotonic()
        result = calls.read_event("result")
    finally:
        for child in reversed(children):
            child.stop()
    window = t1 - t0
    tracks = 4 * args.calls  # published tracks; as many downtracks again are sampled
    server_cpu = cpu1 - cpu0
    tick_cpu = q1 - q0
    per_frame = frame_check_cost()
    video_frames_per_s = 2 * args.calls * 30
    per_packet_cpu = per_frame * video_frames_per_s * window
    share = (tick_cpu + per_packet_cpu) / server_cpu
    print(json.dumps({
        "benchmark": "quality_stats_cpu", "calls": args.calls, "published_tracks": tracks, "downtracks": tracks,
        "window_s": round(window, 1), "server_cpu_percent": round(100 * server_cpu / window, 1),
        "stats_tick_cpu_ms_per_s": round(1000 * tick_cpu / window, 3),
        "stats_tick_cpu_us_per_track_s": round(1e6 * tick_cpu / window / (2 * tracks), 2),
        "frame_check_ns": round(per_frame * 1e9, 1),
        "frame_check_cpu_ms_per_s": round(1000 * per_packet_cpu / window, 3),
        "stats_share_of_server_cpu_percent": round(100 * share, 3), "target_percent": 2.0,
        "video_delivery_ratio_min": round(result["delivery_min"], 4), "cpus": os.cpu_count(),
    }), flush=True)


# -- alert and adapt: in-process server, clients through an impaired TURN relay ---------


@contextlib.asynccontextmanager
async def _server(tmp: Path, turn: Any) -> Any:
    from aiohttp import web

    from teller.config import load_config
    from teller.signaling.app import create_app
    from teller.signaling.tokens import TokenIssuer

    config = load_config(overrides={
        "storage": {"data_dir": str(tmp / "data")}, "auth": {"secret": SECRET}, "log": {"level": "WARNING"}, "digital_human": {"prepare": False},
        "server": {"host": "127.0.0.1", "port": 0}, "recording": {"enabled": False},
        "ice": {"servers": turn.ice_servers()}, "sfu": {"bind_addresses": ["127.0.0.1"]},
    }, env={})
    app = create_app(config, issuer=TokenIssuer(SECRET))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield app, f"http://127.0.0.1:{runner.addresses[0][1]}", TokenIssuer(SECRET)
    finally:
        await runner.cleanup()


async def _wait(predicate: Any, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def _drain(track: Any) -> None:
    async def loop() -> None:
        with contextlib.suppress(Exception):
            while True:
                await track.recv()

    asyncio.ensure_future(loop())


async def alert_once(seed: int) -> dict[str, Any]:
    from teller.client import RoomClient
    from teller.client.sources import TestPatternTrack, ToneTrack
    from teller.impair.model import Impairment
    from tests.turn import impaired_turn

    with tempfile.TemporaryDirectory() as tmp:
        async with impaired_turn(Path(tmp), seed=seed) as turn, _server(Path(tmp), turn) as (app, url, issuer):
            customer = RoomClient(url, issuer.issue(room="bench", role="customer"), relay_only=True)
            agent = RoomClient(url, issuer.issue(room="bench", role="agent"))
            alerts: list[float] = []
            agent.on("data", lambda m: alerts.append(time.monotonic())
                     if m.get("topic") == "quality.alert" and m["payload"].get("kind") == "network_poor" else None)
            try:
                await customer.connect()
                await agent.connect()
                await customer.publish([TestPatternTrack(640, 480, 30), ToneTrack()])
                subscription = await agent.subscribe(customer.participant_id)
                _drain(subscription.track("video"))
                _drain(subscription.track("audio"))
                await asyncio.sleep(6.0)
                started = time.monotonic()
                turn.relay.set(up=Impairment(loss=0.05))
                await _wait(lambda: bool(alerts), 30.0)
                return {"loss": 0.05, "impairment_to_alert_s": round(alerts[0] - started, 2)}
            finally:
                await customer.close()
                await agent.close()


async def adapt_once(seed: int, args_cap_kbps: int = 300, args_capped_s: float = 30.0) -> dict[str, Any]:
    from teller.client import RoomClient
    from teller.client.sources import TestPatternTrack, ToneTrack
    from teller.impair.model import Impairment
    from teller.quality.service import MONITOR
    from tests.turn import impaired_turn

    with tempfile.TemporaryDirectory() as tmp:
        async with impaired_turn(Path(tmp), seed=seed) as turn, _server(Path(tmp), turn) as (app, url, issuer):
            customer = RoomClient(url, issuer.issue(room="bench", role="customer"))
            weak = RoomClient(url, issuer.issue(room="bench", role="agent"), relay_only=True)
            try:
                await customer.connect()
                await weak.connect()
                await customer.publish([TestPatternTrack(640, 480, 30), ToneTrack()])
                subscription = await weak.subscribe(customer.participant_id)
                _drain(subscription.track("video"))
                _drain(subscription.track("audio"))
                room = app[MONITOR].node.rooms["bench"]

                def tier() -> str:
                    p = room.participants.get(weak.participant_id)
                    downtracks = [d for s in p.subscriptions.values() for d in s.downtracks.values() if d.kind == "video"] if p else []
                    return downtracks[0].tier if downtracks else "?"

                await asyncio.sleep(8.0)
                if tier() != "full":
                    raise SystemExit("the subscriber was not on the full stream before the cap")
                history: list[tuple[float, str]] = []

                async def follow() -> None:
                    while True:
                        now = tier()
                        if not history or history[-1][1] != now:
                            history.append((time.monotonic(), now))
                        await asyncio.sleep(0.05)

                follower = asyncio.ensure_future(follow())
                started = time.monotonic()
                turn.relay.set(down=Impairment(rate_kbps=args_cap_kbps))
                down_s = await _wait(lambda: tier() != "full", 60.0)
                await asyncio.sleep(args_capped_s)
                lifted = time.monotonic()
                capped = [(round(t - started, 1), name) for t, name in history if started <= t < lifted]
                turn.relay.set(down=Impairment(rate_kbps=0))
                # Recovered: back on the full stream, and still there 10 s later.
                while True:
                    await _wait(lambda: tier() == "full", 180.0)
                    back = time.monotonic()
                    await asyncio.sleep(10.0)
                    if all(name == "full" for t, name in history if t >= back):
                        break
                follower.cancel()
                return {"cap_kbps": args_cap_kbps, "cap_to_downgrade_s": round(down_s, 2),
                        "capped_for_s": round(lifted - started, 1), "tiers_while_capped": capped,
                        "lift_to_full_s": round(back - lifted, 2)}
            finally:
                await customer.close()
                await weak.close()


def summary(name: str, runs: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"benchmark": name, "runs": len(runs), "cpus": os.cpu_count()}
    for key in keys:
        values = sorted(r[key] for r in runs)
        out[f"{key}_median"] = round(statistics.median(values), 2)
        out[f"{key}_max"] = round(values[-1], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["cpu", "alert", "adapt"])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cap", type=int, default=300, help="adapt: the cap in kbps")
    parser.add_argument("--capped", type=float, default=30.0, help="adapt: seconds under the cap")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    if args.part == "cpu":
        bench_cpu(args)
        return
    runs = []
    for i in range(args.repeat):
        run = asyncio.run(alert_once(100 + i) if args.part == "alert" else adapt_once(200 + i, args.cap, args.capped))
        runs.append(run)
        print(json.dumps(run), flush=True)
    if args.part == "alert":
        print(json.dumps({**summary("quality_alert_time", runs, ["impairment_to_alert_s"]), "target_s": 5.0}), flush=True)
    else:
        print(json.dumps({**summary("quality_adapt_time", runs, ["cap_to_downgrade_s", "lift_to_full_s"]),
                          "target_downgrade_s": 10.0}), flush=True)


if __name__ == "__main__":
    main()
