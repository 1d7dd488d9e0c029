"""The recording search index: filters and paging against a brute-force reference, the
replication ops, and the feeder tailing the log on both state backends."""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from multidict import MultiDict

from teller.errors import BadRequest
from teller.recording.index import (
    LOG_KEY,
    IndexClosed,
    IndexFeeder,
    RecordingIndex,
    SearchQuery,
    SessionEntry,
    encode_cursor,
    publish_op,
)
from teller.state import MemoryStore, Record, StateStore, StateUnavailable

from .state_backends import Backend

T0 = 1_717_200_000.0  # 2024-06-01T00:00:00Z
CUSTOMERS = [
    ("c1", "Wang Wei"), ("c2", "Wang Fang"), ("c3", "Li Na"), ("c4", "Chen Jie"),
    ("c5", "Smith Ann"), ("c6", "wang xiu"), ("c7", None),
]  # fmt: skip
FLAGS = ["risk_keyword", "poor_quality", "identity_override"]


def make_entries(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """Sessions with many ties on started_at (few distinct minutes), every field varied."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        customer_id, customer_name = rng.choice(CUSTOMERS)
        out.append(
            {
                "session_id": f"s{i:04d}-{rng.getrandbits(16):04x}",
                "room": f"room-{i}",
                "started_at": T0 + rng.randrange(40) * 60.0,
                "ended_at": None,
                "duration_s": float(rng.randrange(0, 3600)),
                "business": rng.choice(["cards", "loans", "wealth"]),
                "agent_id": rng.choice(["a1", "a2", "a3", "a4", None]),
                "agent_name": "Agent",
                "customer_id": customer_id,
                "customer_name": customer_name,
                "outcome": rng.choice(["completed", "follow_up", "abandoned", None]),
                "flags": [f for f in FLAGS if rng.random() < 0.3],
                "status": rng.choice(["ready", "ready", "ready", "failed", "recording"]),
                "size_bytes": rng.randrange(10**6),
                "retention_until": T0 + rng.randrange(-10, 10) * 86400.0,
                "legal_hold": rng.random() < 0.15,
                "tracks": 2,
                "extra": {"n": i},
            }
        )
    return out


def matches(entry: dict[str, Any], q: SearchQuery) -> bool:
    """What a search means, written the obvious way."""
    name = (entry["customer_name"] or "").casefold()
    return all(
        [
            q.time_from is None or entry["started_at"] >= q.time_from,
            q.time_to is None or entry["started_at"] < q.time_to,
            q.agent is None or entry["agent_id"] == q.agent,
            q.customer is None or entry["customer_id"] == q.customer or name.startswith(q.customer.casefold()),
            q.business is None or entry["business"] == q.business,
            q.outcome is None or entry["outcome"] == q.outcome,
            q.status is None or entry["status"] == q.status,
            q.min_duration_s is None or entry["duration_s"] >= q.min_duration_s,
            q.max_duration_s is None or entry["duration_s"] <= q.max_duration_s,
            set(q.flags) <= set(entry["flags"]),
            q.legal_hold is None or entry["legal_hold"] == q.legal_hold,
        ]
    )


def expected_ids(entries: list[dict[str, Any]], q: SearchQuery) -> list[str]:
    hits = [e for e in entries if matches(e, q)]
    hits.sort(key=lambda e: (e["started_at"], e["session_id"]), reverse=True)
    return [e["session_id"] for e in hits]


async def all_pages(index: RecordingIndex, q: SearchQuery) -> list[str]:
    ids: list[str] = []
    cursor = q.cursor
    for _ in range(10_000):
        page = await index.search(SearchQuery(**{**vars(q), "cursor": cursor}))
        assert len(page.items) <= q.limit
        ids += [e.session_id for e in page.items]
        if page.next_cursor is None:
            return ids
        assert len(page.items) == q.limit, "only the last page may be short"
        cursor = page.next_cursor
    raise AssertionError("paging did not end")


async def dump(index: RecordingIndex) -> list[dict[str, Any]]:
    rows = []
    cursor = None
    while True:
        page = await index.search(SearchQuery(cursor=cursor, limit=200))
        rows += [e.to_json() for e in page.items]
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[RecordingIndex]:
    idx = RecordingIndex(tmp_path / "index.sqlite3")
    yield idx
    await idx.close()


@pytest.fixture
async def filled(index: RecordingIndex) -> tuple[RecordingIndex, list[dict[str, Any]]]:
    entries = make_entries(150)
    await index.apply_many({"op": "upsert", "entry": e} for e in entries)
    return index, entries


# -- entries ---------------------------------------------------------------------------------


def test_entry_round_trips_and_checks_types() -> None:
    entry = SessionEntry.from_json(make_entries(1)[0])
    assert SessionEntry.from_json(entry.to_json()) == entry
    assert SessionEntry.from_json({"session_id": "x", "unknown_future_field": 1}).status == "recording"
    for bad in (
        {"session_id": ""},
        {"session_id": "x", "started_at": "yesterday"},
        {"session_id": "x", "started_at": float("nan")},
        {"session_id": "x", "legal_hold": 1},
        {"session_id": "x", "flags": "risk"},
        {"session_id": "x", "status": "lost"},
        {"session_id": "x", "size_bytes": -1},
        {"session_id": "x", "room": None},
    ):
        with pytest.raises(BadRequest) as caught:
            SessionEntry.from_json(bad)
        assert caught.value.code == "invalid_entry"


# -- search ------------------------------------------------------------------------------------

QUERIES: list[dict[str, Any]] = [
    {},
    {"time_from": T0 + 600, "time_to": T0 + 1800},
    {"time_from": T0 + 1200},
    {"time_to": T0 + 300},
    {"agent": "a2"},
    {"customer": "c3"},
    {"customer": "wang"},
    {"customer": "WANG F"},
    {"customer": "nobody"},
    {"business": "loans"},
    {"outcome": "follow_up"},
    {"min_duration_s": 1800},
    {"max_duration_s": 600},
    {"min_duration_s": 600, "max_duration_s": 1200},
    {"flags": ["risk_keyword"]},
    {"flags": ["risk_keyword", "poor_quality"]},
    {"status": "failed"},
    {"legal_hold": True},
    {"legal_hold": False},
    {"agent": "a1", "time_from": T0 + 300, "time_to": T0 + 2000},
    {"business": "cards", "outcome": "completed", "flags": ["poor_quality"]},
    {"customer": "wang", "agent": "a3", "min_duration_s": 300},
    {"flags": ["identity_override"], "time_from": T0 + 600, "legal_hold": False},
    {"business": "wealth", "status": "ready", "max_duration_s": 2400, "time_to": T0 + 2000},
]


@pytest.mark.parametrize("filters", QUERIES, ids=[",".join(q) or "none" for q in QUERIES])
async def test_search_pages_through_exactly_the_matching_sessions(
    filled: tuple[RecordingIndex, list[dict[str, Any]]], filters: dict[str, Any]
) -> None:
    index, entries = filled
    q = SearchQuery(**filters, limit=7)
    want = expected_ids(entries, q)
    got = await all_pages(index, q)
    assert got == want  # newest first, ties by session id, no duplicate, no gap
    assert await index.count(q) == len(want)


async def test_paging_is_stable_when_sessions_arrive_between_pages(index: RecordingIndex) -> None:
    entries = make_entries(40)
    await index.apply_many({"op": "upsert", "entry": e} for e in entries)
    first = await index.search(SearchQuery(limit=10))
    # A session newer than all, and one tied with the page's last row that sorts before
    # it, belong to the page already handed out: the next pages must not shift.
    last = first.items[-1]
    newer = {**entries[0], "session_id": "zz-new", "started_at": T0 + 10**6}
    tied_before = {**entries[0], "session_id": last.session_id + "~", "started_at": last.started_at}
    await index.apply_many({"op": "upsert", "entry": e} for e in (newer, tied_before))
    rest = await all_pages(index, SearchQuery(cursor=first.next_cursor, limit=10))
    everything = [e.session_id for e in first.items] + rest
    assert len(everything) == len(set(everything)) == 40
    assert everything == expected_ids(entries, SearchQuery())


async def test_a_common_customer_prefix_reads_in_page_order_with_the_same_results(index: RecordingIndex) -> None:
    # Enough matches to pass the bound (1000) that switches from sorting to page order.
    entries = make_entries(1200, seed=3)
    for i, e in enumerate(entries):
        e["customer_name"] = "Wang " + ("Wei" if i % 2 else "Fang")
        e["duration_s"] = 7200.0 if i % 400 == 0 else 60.0 + i
    await index.apply_many({"op": "upsert", "entry": e} for e in entries)
    for filters in (
        {"customer": "wang"},
        {"customer": "Wang W", "time_from": T0 + 600},
        {"min_duration_s": 60},
        {"min_duration_s": 7000},
        {"min_duration_s": 7000, "time_to": T0 + 1200},
        {"customer": "wang", "min_duration_s": 7000},
    ):
        q = SearchQuery(**filters, limit=50)
        assert await all_pages(index, q) == expected_ids(entries, q), filters
    assert "sessions_time" in " ".join(await index.explain(SearchQuery(customer="wang")))
    assert "sessions_duration" in " ".join(await index.explain(SearchQuery(min_duration_s=7000)))


async def test_every_filter_reads_through_an_index(filled: tuple[RecordingIndex, list[dict[str, Any]]]) -> None:
    index, _ = filled
    await index.optimize()
    for filters in QUERIES:
        for step in await index.explain(SearchQuery(**filters)):
            assert not (step.startswith("SCAN s") and "INDEX" not in step), (filters, step)


async def test_a_bad_cursor_is_refused(filled: tuple[RecordingIndex, list[dict[str, Any]]]) -> None:
    index, _ = filled
    for cursor in ("not-base64!", "bm90IGpzb24", encode_cursor(1.0, "x")[:-3], "WzEsMiwzXQ", "WyJhIiwiYiJd", "x" * 2000):
        with pytest.raises(BadRequest) as caught:
            await index.search(SearchQuery(cursor=cursor))
        assert caught.value.code == "invalid_cursor", cursor
        with pytest.raises(BadRequest) as caught:
            SearchQuery.from_params({"cursor": cursor})
        assert caught.value.code in ("invalid_cursor", "invalid_query"), cursor


# -- query strings -----------------------------------------------------------------------------


def test_query_strings_parse() -> None:
    q = SearchQuery.from_params(
        {
            "time_from": "2024-06-01T08:00:00Z",
            "time_to": "2024-06-02",
            "agent": " a1 ",
            "customer": "Wang",
            "min_duration_s": "60",
            "max_duration_s": "3600",
            "flags": "risk_keyword, poor_quality,,",
            "status": "ready",
            "legal_hold": "false",
            "limit": "200",
            "business": "",
        }
    )
    assert q.time_from == datetime.datetime(2024, 6, 1, 8, tzinfo=datetime.UTC).timestamp()
    assert q.time_to == datetime.datetime(2024, 6, 2, tzinfo=datetime.UTC).timestamp()
    assert (q.agent, q.customer, q.business) == ("a1", "Wang", None)
    assert (q.min_duration_s, q.max_duration_s) == (60, 3600)
    assert q.flags == ["risk_keyword", "poor_quality"]
    assert (q.status, q.legal_hold, q.limit, q.cursor) == ("ready", False, 200, None)
    assert SearchQuery.from_params({"time_from": "1717200000.5"}).time_from == 1717200000.5
    assert SearchQuery.from_params({"time_from": "2024-06-01T10:00:00+02:00"}).time_from == T0 + 8 * 3600
    assert SearchQuery.from_params({}).limit == 50
    # aiohttp hands handlers a MultiDictProxy: a repeated name counts every time.
    assert SearchQuery.from_params(MultiDict([("flags", "a"), ("flags", "b,a")])).flags == ["a", "b"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"time_from": "last tuesday"}, "time_from"),
        ({"time_to": "nan"}, "time_to"),
        ({"time_from": "2024-06-02", "time_to": "2024-06-01"}, "time_to"),
        ({"min_duration_s": "1.5"}, "min_duration_s"),
        ({"min_duration_s": "-1"}, "min_duration_s"),
        ({"min_duration_s": "600", "max_duration_s": "60"}, "max_duration_s"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "lost"}, "status"),
        ({"legal_hold": "maybe"}, "legal_hold"),
        ({"flags": ",".join(f"f{i}" for i in range(9))}, "flags"),
        ({"agent": "a" * 201}, "agent"),
        ({"agnet": "a1"}, "agnet"),
    ],
)
def test_bad_query_strings_name_the_field(params: dict[str, str], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        SearchQuery.from_params(params)
    assert caught.value.code == "invalid_query"
    assert caught.value.details["field"] == field
    assert caught.value.status == 400


# -- ops -----------------------------------------------------------------------------------------


async def test_a_partial_upsert_merges_into_the_row(index: RecordingIndex) -> None:
    await index.apply(
        {"op": "upsert", "entry": {"session_id": "s1", "room": "r", "started_at": T0, "agent_id": "a1",
                                   "flags": ["poor_quality"], "extra": {"language": "zh"}}}
    )  # fmt: skip
    await index.apply(
        {"op": "upsert", "entry": {"session_id": "s1", "status": "ready", "duration_s": 90.0, "outcome": "completed",
                                   "extra": {"transcript": True}}, "add_flags": ["risk_keyword"]}
    )  # fmt: skip
    entry = await index.get("s1")
    assert entry is not None
    assert (entry.room, entry.agent_id, entry.status, entry.duration_s) == ("r", "a1", "ready", 90.0)
    assert entry.flags == ["poor_quality", "risk_keyword"]
    assert entry.extra == {"language": "zh", "transcript": True}
    assert await all_pages(index, SearchQuery(flags=["risk_keyword", "poor_quality"])) == ["s1"]
    # Flags replaced, and started_at moved: the flag rows follow.
    await index.apply({"op": "upsert", "entry": {"session_id": "s1", "started_at": T0 + 5, "flags": ["risk_keyword"]}})
    assert await all_pages(index, SearchQuery(flags=["poor_quality"])) == []
    assert await all_pages(index, SearchQuery(flags=["risk_keyword"], time_from=T0 + 1)) == ["s1"]
    assert await index.get("missing") is None


async def test_hold_evaluation_and_deleted_ops(index: RecordingIndex) -> None:
    entry = {"session_id": "s1", "started_at": T0, "status": "ready", "retention_until": T0 + 10}
    await index.apply({"op": "upsert", "entry": entry})
    await index.apply({"op": "hold", "session_id": "s1", "hold": True, "reason": "case 42", "by": "o1", "at": T0 + 1})
    held = await index.get("s1")
    assert held is not None and held.legal_hold and held.hold_reason == "case 42"
    assert held.extra["hold"] == {"hold": True, "reason": "case 42", "by": "o1", "at": T0 + 1}
    # A stale full entry replayed later neither releases the hold nor revives a deletion.
    await index.apply({"op": "upsert", "entry": {**entry, "legal_hold": False, "hold_reason": None}})
    assert (await index.get("s1")).legal_hold  # type: ignore[union-attr]
    await index.apply({"op": "hold", "session_id": "s1", "hold": False, "by": "o2", "at": T0 + 2})
    released = await index.get("s1")
    assert released is not None and not released.legal_hold and released.hold_reason is None

    evaluation = {"id": "e1", "by": "rev", "at": T0 + 5, "scores": {"greeting": 3}, "comments": "ok", "total": 3}
    await index.apply({"op": "evaluation", "session_id": "s1", "evaluation": evaluation})
    await index.apply({"op": "evaluation", "session_id": "s1", "evaluation": {**evaluation, "total": 4}})
    await index.apply({"op": "evaluation", "session_id": "s1", "evaluation": {**evaluation, "id": "e0", "at": T0}})
    assert [(e["id"], e["total"]) for e in await index.evaluations("s1")] == [("e0", 3), ("e1", 4)]
    assert await index.evaluations("s2") == []

    await index.apply({"op": "deleted", "session_id": "s1", "at": T0 + 9})
    await index.apply({"op": "upsert", "entry": {"session_id": "s1", "status": "ready"}})
    deleted = await index.get("s1")
    assert deleted is not None and deleted.status == "deleted" and deleted.extra["deleted_at"] == T0 + 9
    assert await all_pages(index, SearchQuery(status="deleted")) == ["s1"]


async def test_a_hold_before_the_session_is_indexed_is_kept(index: RecordingIndex) -> None:
    await index.apply({"op": "hold", "session_id": "early", "hold": True, "reason": "r", "by": "o", "at": T0})
    await index.apply({"op": "hold", "session_id": "never", "hold": False, "by": "o", "at": T0})
    await index.apply({"op": "upsert", "entry": {"session_id": "early", "started_at": T0, "retention_until": T0}})
    early = await index.get("early")
    assert early is not None and early.legal_hold and early.started_at == T0
    assert await index.get("never") is None
    assert await index.expired(T0 + 1) == []


async def test_expired_skips_held_deleted_and_undecided(index: RecordingIndex) -> None:
    rows = {
        "old": {"retention_until": T0 - 100},
        "older": {"retention_until": T0 - 200},
        "held": {"retention_until": T0 - 300, "legal_hold": True},
        "gone": {"retention_until": T0 - 400},
        "young": {"retention_until": T0 + 100},
        "undecided": {},
    }
    await index.apply_many({"op": "upsert", "entry": {"session_id": k, "started_at": T0, **v}} for k, v in rows.items())
    await index.apply({"op": "deleted", "session_id": "gone", "at": T0})
    assert [e.session_id for e in await index.expired(T0)] == ["older", "old"]
    assert [e.session_id for e in await index.expired(T0, limit=1)] == ["older"]
    await index.apply({"op": "hold", "session_id": "held", "hold": False, "by": "o", "at": T0})
    assert [e.session_id for e in await index.expired(T0)] == ["held", "older", "old"]


async def test_sessions_for_spot_check_are_the_weeks_ready_sessions_by_agent(
    filled: tuple[RecordingIndex, list[dict[str, Any]]],
) -> None:
    index, entries = filled
    start, end = T0 + 300, T0 + 1500
    want: dict[str, list[str]] = {}
    for e in sorted(entries, key=lambda e: (e["started_at"], e["session_id"])):
        if start <= e["started_at"] < end and e["status"] == "ready" and e["agent_id"]:
            want.setdefault(e["agent_id"], []).append(e["session_id"])
    assert await index.sessions_for_spot_check(start, end) == want


async def test_bad_and_unknown_ops_are_skipped_and_the_rest_applied(
    index: RecordingIndex, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "teller.recording.index")
    applied = await index.apply_many(
        [
            {"op": "upsert", "entry": {"session_id": "s1", "started_at": T0}},
            {"op": "upsert", "entry": {"session_id": "s2", "started_at": "noon"}},
            {"op": "frobnicate", "session_id": "s1"},
            {"op": "hold", "session_id": "s1"},
            {"op": "evaluation", "session_id": "s1", "evaluation": {"total": 3}},
            ["not", "an", "op"],  # type: ignore[list-item]
            {"op": "upsert", "entry": {"session_id": "s3", "started_at": T0}},
        ]
    )
    assert applied == 2
    assert [e["session_id"] for e in await dump(index)] == ["s3", "s1"]
    assert "frobnicate" in caplog.text and "started_at" in caplog.text


async def test_publish_refuses_a_malformed_op(store: StateStore) -> None:
    for op in (
        {"op": "frobnicate"},
        {"op": "upsert", "entry": {"started_at": T0}},
        {"op": "hold", "session_id": "s1", "hold": "yes"},
        {"op": "deleted"},
    ):
        with pytest.raises(BadRequest):
            await publish_op(store, op)
    assert await store.read_events(LOG_KEY) == []


async def test_the_index_survives_a_reopen_and_rebuilds_an_unknown_schema(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    index = RecordingIndex(path)
    await index.apply({"op": "upsert", "entry": {"session_id": "s1", "started_at": T0}})
    await index.meta_set("feeder.cursor", "7")
    await index.close()
    await index.close()
    index = RecordingIndex(path)
    assert (await index.get("s1")) is not None and await index.meta_get("feeder.cursor") == "7"
    await index.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    index = RecordingIndex(path)
    assert await index.get("s1") is None and await index.meta_get("feeder.cursor") is None
    await index.close()


async def test_calls_after_close_fail_cleanly(index: RecordingIndex) -> None:
    await index.close()
    with pytest.raises(IndexClosed):
        await index.get("s1")


# -- the feeder, on both backends ------------------------------------------------------------------


def ops_for(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for e in entries:
        ops.append({"op": "upsert", "entry": {**e, "status": "recording"}})
    for e in entries[::3]:
        ops.append({"op": "upsert", "entry": {"session_id": e["session_id"], "status": "ready", "outcome": "completed"}})
    ops.append({"op": "hold", "session_id": entries[0]["session_id"], "hold": True, "reason": "r", "by": "o", "at": T0})
    ops.append({"op": "deleted", "session_id": entries[1]["session_id"], "at": T0})
    ops.append({"op": "evaluation", "session_id": entries[2]["session_id"], "evaluation": {"id": "e1", "total": 5}})
    return ops


async def test_sync_applies_everything_published(store: StateStore, tmp_path: Path) -> None:
    index = RecordingIndex(tmp_path / "a.sqlite3")
    feeder = IndexFeeder(store, index, persist_cursor=store.backend != "memory", batch=7)
    entries = make_entries(20)
    ops = ops_for(entries)
    seqs = [await publish_op(store, op) for op in ops]
    assert seqs == list(range(1, len(ops) + 1))
    assert await feeder.sync() == len(ops)
    assert feeder.cursor == len(ops)
    assert await feeder.sync() == 0
    assert len(await dump(index)) == 20
    assert (await index.get(entries[0]["session_id"])).legal_hold  # type: ignore[union-attr]
    assert (await index.get(entries[1]["session_id"])).status == "deleted"  # type: ignore[union-attr]
    assert await index.evaluations(entries[2]["session_id"]) == [{"id": "e1", "total": 5}]
    # A REST call that publishes and syncs sees its own change at once.
    await publish_op(store, {"op": "hold", "session_id": entries[3]["session_id"], "hold": True, "by": "o", "at": T0})
    await feeder.sync()
    assert (await index.get(entries[3]["session_id"])).legal_hold  # type: ignore[union-attr]
    await index.close()


async def test_two_indexes_fed_by_one_log_converge(backend: Backend, store: StateStore, tmp_path: Path) -> None:
    peer = await backend.open()  # another Redis client: another process's view
    a, b = RecordingIndex(tmp_path / "a.sqlite3"), RecordingIndex(tmp_path / "b.sqlite3")
    feeders = [
        IndexFeeder(store, a, persist_cursor=False, batch=5, poll_s=0.01),
        IndexFeeder(peer, b, persist_cursor=False, batch=500, poll_s=0.01),
    ]
    for feeder in feeders:
        await feeder.start()
    ops = ops_for(make_entries(30, seed=5))
    # Both processes publish, interleaved, while both feeders run.
    for i, op in enumerate(ops):
        await publish_op(store if i % 2 else peer, op)
    await eventually(lambda: _at(feeders, len(ops)))
    assert await dump(a) == await dump(b)
    assert len(await dump(a)) == 30
    for feeder in feeders:
        await feeder.close()
    await a.close()
    await b.close()


async def _at(feeders: list[IndexFeeder], seq: int) -> bool:
    return all(f.cursor == seq for f in feeders)


class CountingStore:
    """Records where each read of the log starts."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.reads: list[int] = []

    async def read_events(self, session_id: str, after: int = 0, limit: int = 1000) -> list[Record]:
        if session_id == LOG_KEY and limit > 1:
            self.reads.append(after)
        return await self.store.read_events(session_id, after, limit)


async def test_a_persisted_cursor_resumes_after_a_restart(store: StateStore, tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    ops = ops_for(make_entries(15))
    for op in ops[:20]:
        await publish_op(store, op)
    index = RecordingIndex(path)
    assert await IndexFeeder(store, index, persist_cursor=True).sync() == 20
    before = await dump(index)
    await index.close()

    for op in ops[20:]:
        await publish_op(store, op)
    index = RecordingIndex(path)
    counting = CountingStore(store)
    feeder = IndexFeeder(counting, index, persist_cursor=True)  # type: ignore[arg-type]
    assert await feeder.sync() == len(ops) - 20
    assert counting.reads[0] == 20
    after = await dump(index)

    # Replaying the whole log into the same file changes nothing.
    replay = IndexFeeder(store, index, persist_cursor=False)
    assert await replay.sync() == len(ops)
    assert await dump(index) == after != before
    await index.close()


async def test_a_wiped_log_is_replayed_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    old = MemoryStore()
    for i in range(5):
        await publish_op(old, {"op": "upsert", "entry": {"session_id": f"old{i}", "started_at": T0}})
    index = RecordingIndex(path)
    assert await IndexFeeder(old, index, persist_cursor=True).sync() == 5
    # The store lost its data and has since been refilled past the old cursor.
    new = MemoryStore()
    for i in range(7):
        await publish_op(new, {"op": "upsert", "entry": {"session_id": f"new{i}", "started_at": T0 + 1}})
    feeder = IndexFeeder(new, index, persist_cursor=True)
    assert await feeder.sync() == 7
    assert feeder.cursor == 7
    assert len(await dump(index)) == 12
    await index.close()


class FlakyStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.failed_reads = 0

    async def read_events(self, session_id: str, after: int = 0, limit: int = 1000) -> list[Record]:
        if self.down:
            self.failed_reads += 1
            raise StateUnavailable("the state store is down")
        return await super().read_events(session_id, after, limit)


async def test_the_feeder_survives_the_store_being_unreachable(tmp_path: Path) -> None:
    store = FlakyStore()
    index = RecordingIndex(tmp_path / "a.sqlite3")
    feeder = IndexFeeder(store, index, persist_cursor=False, poll_s=0.01, max_backoff_s=0.05)
    await feeder.start()
    store.down = True
    await publish_op(store, {"op": "upsert", "entry": {"session_id": "s1", "started_at": T0}})

    async def retried() -> bool:
        return store.failed_reads >= 3

    await eventually(retried)
    with pytest.raises(StateUnavailable):
        await feeder.sync()
    assert await index.get("s1") is None
    store.down = False

    async def applied() -> bool:
        return await index.get("s1") is not None

    await eventually(applied)
    await feeder.close()
    await feeder.close()
    await index.close()


async def test_the_background_feeder_picks_up_new_ops_quickly(store: StateStore, tmp_path: Path) -> None:
    index = RecordingIndex(tmp_path / "a.sqlite3")
    feeder = IndexFeeder(store, index, persist_cursor=False)
    await feeder.start()
    await publish_op(store, {"op": "upsert", "entry": {"session_id": "s1", "started_at": T0}})
    start = time.monotonic()

    async def seen() -> bool:
        return await index.get("s1") is not None

    await eventually(seen, timeout=5)
    assert time.monotonic() - start < 2
    await feeder.close()
    await index.close()
