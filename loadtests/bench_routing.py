"""Routing benchmark: what one ACD decision costs as queues grow, on Redis and in memory.

    python loadtests/bench_routing.py [--calls 50,200,500] [--agents 20]

For each queue size: that many calls queue (nobody available), then `--agents` agents
sign in and each accepts its offer and hangs up, so every call is offered, answered
and ended. Prints per backend and size the mean and p95 milliseconds of `request`
(queue a call), `accept` and `set_state` (which runs a dispatch), as JSON lines.
Every decision holds the one store-wide ACD lock, so these are also the serial
throughput limits of the whole contact centre.
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

from loadtests.media import percentile  # noqa: E402
from teller.config.settings import ContactSettings, StateSettings  # noqa: E402
from teller.signaling.contact import Router, load_catalogue  # noqa: E402
from teller.state import open_store  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


async def one(backend: str, url: str, calls: int, agents: int) -> dict[str, object]:
    settings = StateSettings(backend=backend, redis_url=url, key_prefix=f"bench-{calls}-{time.time_ns()}")
    store = open_store(settings)
    await store.start()
    router = Router(store, ContactSettings(max_wait_s=1e9), load_catalogue())
    timings: dict[str, list[float]] = {"request": [], "accept": [], "available": []}

    async def timed(name: str, coro):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        result = await coro
        timings[name].append(1000 * (time.perf_counter() - start))
        return result

    for i in range(calls):
        await timed("request", router.request({"identity": f"c{i}"}, "card_activation"))
    for a in range(agents):
        await router.register(f"a{a}", f"A{a}", {"cards": 1}, ["zh"])
    answered = 0
    while answered < calls:
        for a in range(agents):
            agent = await router.agent(f"a{a}")
            if agent["state"] in ("offline", "wrap_up"):
                await timed("available", router.set_state(f"a{a}", "available"))
                agent = await router.agent(f"a{a}")
            if agent["state"] == "ringing":
                await timed("accept", router.accept(f"a{a}", agent["offered_call"]))
                await router.hang_up(agent["offered_call"])
                answered += 1
    await store.close()
    return {
        "benchmark": "routing",
        "backend": backend,
        "queued_calls": calls,
        "agents": agents,
        **{f"{k}_ms_mean": round(sum(v) / len(v), 2) for k, v in timings.items() if v},
        **{f"{k}_ms_p95": round(percentile(v, 95), 2) for k, v in timings.items() if v},
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="50,200,500")
    parser.add_argument("--agents", type=int, default=20)
    args = parser.parse_args()
    with RedisServer() as redis:
        for backend in ("memory", "redis"):
            for calls in (int(c) for c in args.calls.split(",")):
                print(json.dumps(await one(backend, redis.url, calls, args.agents)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
