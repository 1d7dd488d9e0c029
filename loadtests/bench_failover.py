"""Failover benchmark: how long a call is without media when its SFU node dies.

    python loadtests/bench_failover.py [--kills 10] [--calls 10] [--mode kill|freeze]

A local cluster (real redis-server, two signalling processes, two SFU nodes) carries
`--calls` 1:1 calls of pre-encoded VP8 + Opus from SDK clients. Each round kills with
SIGKILL the node carrying the most calls, measures for every call the time from the
kill to the first complete video frame on the new node in both directions, then
starts a replacement node so the next round has two nodes again. Prints one JSON
object per round and a summary: recovery p50/p95/max and calls lost (a call is lost
when a side gives up or no frame arrives within --give-up seconds).

`--mode freeze` stops the node with SIGSTOP instead: nothing is refused or closed,
as when a machine hangs or drops off the network, so only the heartbeat's expiry
(cluster.node_ttl_s, 2 s here) tells the cluster; the frozen node is killed after
the round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.media import encode_audio, encode_video, percentile
from tests.cluster import LocalCluster
from tests.test_cluster import Call, end_calls, start_call


async def wait_recovered(calls: list[Call], since: float, give_up: float) -> dict[str, float | None]:
    """Per call: seconds from `since` to the later of its two sides' first new frame."""
    deadline = time.monotonic() + give_up
    while time.monotonic() < deadline:
        if all(side.first_frame_after(since) is not None for c in calls for side in c.sides):
            break
        await asyncio.sleep(0.02)
    out: dict[str, float | None] = {}
    for call in calls:
        firsts = [side.first_frame_after(since) for side in call.sides]
        lost = any(f is None for f in firsts) or any(side.client.closed.is_set() for side in call.sides)
        out[call.room] = None if lost else max(firsts) - since  # type: ignore[type-var,operator]
    return out


async def run(kills: int, n_calls: int, give_up: float, mode: str = "kill") -> dict[str, object]:
    media = {"video": encode_video(320, 240, 15, seconds=2.0, bitrate=250_000), "audio": encode_audio(1.0)}
    tmp = Path(tempfile.mkdtemp(prefix="teller-failover-"))
    cluster = LocalCluster(tmp)
    urls = cluster.signal_urls
    calls: list[Call] = []
    recoveries: list[float] = []
    lost_total = 0
    moved_total = 0
    try:
        for i in range(n_calls):
            calls.append(await start_call(cluster, f"fo-{i}", urls[i % 2:] + urls[: i % 2], media))
        await wait_recovered(calls, 0, give_up)
        for round_no in range(1, kills + 1):
            rooms = cluster.rooms()
            alive = [n for n in cluster.nodes if n.alive]
            victim = max(alive, key=lambda n: sum(1 for c in calls if rooms[c.room]["node_id"] == n.node_id))
            moved = [c for c in calls if rooms[c.room]["node_id"] == victim.node_id]
            await asyncio.sleep(1.0)  # steady media before the kill
            killed_at = time.monotonic()
            if mode == "freeze":
                victim.pause()
            else:
                victim.kill()
            result = await wait_recovered(moved, killed_at, give_up)
            if mode == "freeze":
                victim.kill()
            times = [t for t in result.values() if t is not None]
            lost = [room for room, t in result.items() if t is None]
            recoveries += times
            lost_total += len(lost)
            moved_total += len(moved)
            print(json.dumps({
                "round": round_no,
                "killed": victim.node_id,
                "calls_moved": len(moved),
                "calls_lost": len(lost),
                "recovery_s_p50": round(percentile(times, 50), 3),
                "recovery_s_max": round(max(times), 3) if times else None,
            }), flush=True)
            cluster.nodes = [n for n in cluster.nodes if n.alive]
            cluster.add_node()
            cluster.wait_nodes(2)
        return {
            "benchmark": "failover",
            "mode": mode,
            "kills": kills,
            "calls": n_calls,
            "calls_moved": moved_total,
            "calls_lost": lost_total,
            "recovery_s": {
                "p50": round(percentile(recoveries, 50), 3),
                "p95": round(percentile(recoveries, 95), 3),
                "max": round(max(recoveries), 3) if recoveries else None,
            },
            "node_ttl_s": 2.0,
            "measure": f"{'SIGSTOP' if mode == 'freeze' else 'SIGKILL'} of the node -> first complete video frame on the new node, later of both directions per call",
        }
    finally:
        await end_calls(calls)
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--give-up", type=float, default=30.0, help="seconds after which a call counts as lost")
    parser.add_argument("--mode", choices=("kill", "freeze"), default="kill")
    args = parser.parse_args()
    summary = asyncio.run(run(args.kills, args.calls, args.give_up, args.mode))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
