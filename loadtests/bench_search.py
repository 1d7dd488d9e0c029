"""Search benchmark: how fast compliance searches are over a year of recorded sessions.

    python loadtests/bench_search.py [--sessions 100000] [--runs 50] [--path index.sqlite3]

Fills a recording index (through the same upsert ops the log carries, in batches of
5,000) with sessions spread over 365 days: 200 agents, 50,000 customers (some call
often), 7 businesses, five outcomes, 2% flagged, lognormal durations. Loading is not
timed as a search; its rate is reported. Then each typical search runs `--runs` times
with varying arguments, timed as a handler sees it (the await, thread hop included),
and one JSON object is printed with p50/p95 milliseconds per search.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.media import percentile
from teller.recording.index import RecordingIndex, SearchQuery

DAY = 86400.0
YEAR_START = 1_704_067_200.0  # 2024-01-01T00:00:00Z
AGENTS = 200
CUSTOMERS = 50_000
BUSINESSES = {
    "card_activation": 30, "account_opening": 20, "general_enquiry": 18, "loan_application": 12,
    "identity_verification": 10, "wealth_advisory": 6, "complaint": 4,
}  # fmt: skip
OUTCOMES = {"completed": 70, "follow_up": 12, "abandoned": 8, "transferred": 6, "rejected": 4}
FLAGS = {"risk_keyword": 0.010, "poor_quality": 0.007, "identity_override": 0.004}
SURNAMES = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun",
            "Ma", "Zhu", "Hu", "Guo", "He", "Lin", "Luo", "Gao", "Smith", "Jones", "Brown", "Tan", "Lee",
            "Ng", "Wong", "Lim", "Kumar", "Singh"]  # fmt: skip
GIVEN = ["Wei", "Fang", "Na", "Min", "Jing", "Lei", "Yan", "Jun", "Hui", "Tao", "Ming", "Chao", "Xin",
         "Ying", "Hao", "Jie", "Lan", "Ping", "Qiang", "Yu", "Anna", "David", "Grace", "Ken", "Mary",
         "Peter", "Ravi", "Sara", "Tom", "Vivian"]  # fmt: skip


def customer_name(n: int) -> str:
    return f"{SURNAMES[n % len(SURNAMES)]} {GIVEN[(n // len(SURNAMES)) % len(GIVEN)]} {n // 900}"


def sessions(count: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    """Entries in start order, as the recorder would publish them over the year."""
    agent_weight = [rng.uniform(0.5, 1.5) for _ in range(AGENTS)]
    businesses, business_w = list(BUSINESSES), list(BUSINESSES.values())
    outcomes, outcome_w = list(OUTCOMES), list(OUTCOMES.values())
    step = 365 * DAY / count
    for i in range(count):
        # Calls cluster in office hours: shift the even spread towards 08:00-20:00.
        t = YEAR_START + i * step
        day = math.floor((t - YEAR_START) / DAY)
        t = YEAR_START + day * DAY + 8 * 3600 + ((t - YEAR_START) % DAY) / 2 + rng.random() * step
        duration = min(7200.0, rng.lognormvariate(math.log(360), 0.7))
        customer = int(CUSTOMERS * rng.random() ** 2)
        agent = rng.choices(range(AGENTS), agent_weight)[0]
        flags = [f for f, p in FLAGS.items() if rng.random() < p]
        yield {
            "session_id": f"s-{i:08d}-{rng.getrandbits(32):08x}",
            "room": f"room-{i}",
            "started_at": round(t, 3),
            "ended_at": round(t + duration, 3),
            "duration_s": round(duration, 1),
            "business": rng.choices(businesses, business_w)[0],
            "agent_id": f"agent-{agent:03d}",
            "agent_name": f"Agent {agent}",
            "customer_id": f"cust-{customer:05d}",
            "customer_name": customer_name(customer),
            "outcome": rng.choices(outcomes, outcome_w)[0],
            "flags": flags,
            "status": "failed" if rng.random() < 0.01 else "ready",
            "call_id": f"call-{i}",
            "node_id": f"node-{i % 4}",
            "size_bytes": int(duration * 120_000),
            "retention_until": t + 5 * 365 * DAY,
            "legal_hold": rng.random() < 0.001,
            "composite": True,
            "tracks": 4,
            "extra": {"language": rng.choice(["zh", "en"])},
        }


async def fill(index: RecordingIndex, count: int, rng: random.Random) -> float:
    start = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for entry in sessions(count, rng):
        batch.append({"op": "upsert", "entry": entry})
        if len(batch) == 5000:
            await index.apply_many(batch)
            batch = []
    if batch:
        await index.apply_many(batch)
    await index.optimize()
    return time.perf_counter() - start


async def deep_cursors(index: RecordingIndex, pages: int) -> list[SearchQuery]:
    """Queries positioned `pages` pages deep into quarter-long time ranges."""
    out = []
    for quarter in range(4):
        q = SearchQuery(time_from=YEAR_START + quarter * 91 * DAY, time_to=YEAR_START + (quarter + 1) * 91 * DAY)
        for _ in range(pages):
            page = await index.search(q)
            assert page.next_cursor is not None
            q = SearchQuery(time_from=q.time_from, time_to=q.time_to, cursor=page.next_cursor)
        out.append(q)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--path", type=Path, help="keep the index here (reused when it exists)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--plans", action="store_true", help="also print each search's query plan")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.path or Path(tmp) / "index.sqlite3"
        reuse = path.exists()
        index = RecordingIndex(path)
        load_s = 0.0 if reuse else await fill(index, args.sessions, rng)
        depth = max(1, min(100, args.sessions // 4 // 50 - 1))
        deep = await deep_cursors(index, depth)
        month = 30 * DAY

        def window(length: float) -> tuple[float, float]:
            start = YEAR_START + rng.random() * (365 * DAY - length)
            return start, start + length

        def customer() -> str:
            return f"cust-{int(CUSTOMERS * rng.random() ** 2):05d}"

        searches: dict[str, Callable[[int], SearchQuery]] = {
            "time_range_month": lambda i: SearchQuery(*window(month)),
            "agent_month": lambda i: SearchQuery(*window(month), agent=f"agent-{rng.randrange(AGENTS):03d}"),
            "customer_id": lambda i: SearchQuery(customer=customer()),
            "customer_name_prefix": lambda i: SearchQuery(customer=customer_name(rng.randrange(CUSTOMERS))[:-2]),
            # The worst customer search: a bare surname matches one session in 30.
            "customer_surname_only": lambda i: SearchQuery(customer=rng.choice(SURNAMES)),
            "business_outcome_flag": lambda i: SearchQuery(
                business=rng.choice(list(BUSINESSES)), outcome=rng.choice(list(OUTCOMES)), flags=["risk_keyword"]
            ),
            "min_duration_30min": lambda i: SearchQuery(min_duration_s=1800),
            "min_duration_90min_quarter": lambda i: SearchQuery(*window(91 * DAY), min_duration_s=5400),
            "legal_hold": lambda i: SearchQuery(legal_hold=True),
            "status_failed": lambda i: SearchQuery(status="failed"),
            f"deep_page_{depth}": lambda i: deep[i % len(deep)],
        }
        results: dict[str, dict[str, float]] = {}
        plans: dict[str, list[str]] = {}
        for name, make in searches.items():
            timings = []
            hits = 0
            for i in range(args.runs):
                q = make(i)
                start = time.perf_counter()
                page = await index.search(q)
                timings.append(1000 * (time.perf_counter() - start))
                hits += len(page.items)
            results[name] = {
                "p50_ms": round(percentile(timings, 50), 2),
                "p95_ms": round(percentile(timings, 95), 2),
                "mean_rows": round(hits / args.runs, 1),
            }
            if args.plans:
                plans[name] = await index.explain(make(0))
        await index.close()
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        out: dict[str, Any] = {
            "benchmark": "search",
            "sessions": args.sessions,
            "load_s": round(load_s, 1),
            "load_sessions_per_s": round(args.sessions / load_s) if load_s else None,
            "file_mb": round(size / 1e6, 1),
            "queries": results,
        }
        if plans:
            out["plans"] = plans
        print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
