"""Contract tests for the state store: every behaviour on both backends.

Memory and Redis must be interchangeable, so each test runs against both; a few
run on Redis only, because only Redis has other processes and outages.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from teller.config import ConfigError
from teller.config.settings import StateSettings
from teller.errors import BadRequest
from teller.state import (
    BusSubscription,
    LockLost,
    MemoryStore,
    Record,
    RedisStore,
    StateStore,
    StateUnavailable,
    open_store,
    redis_store,
)
from teller.state.common import QueueSubscription

from .redis_server import RedisServer, free_port, redis_binary
from .state_backends import Backend

ROOT = Path(__file__).resolve().parents[1]


# -- fixtures and helpers -----------------------------------------------------------------
async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def next_message(subscription: BusSubscription, timeout: float = 10.0) -> tuple[str, Record]:
    return await asyncio.wait_for(anext(aiter(subscription)), timeout)


def ids(records: list[Record], key: str = "id") -> list[Any]:
    return [r[key] for r in records]


# -- open_store ---------------------------------------------------------------------------
async def test_open_store_picks_the_configured_backend() -> None:
    assert isinstance(open_store(StateSettings(backend="memory")), MemoryStore)
    remote = open_store(StateSettings(backend="redis", redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(remote, RedisStore)
    await remote.close()
    with pytest.raises(ConfigError):
        open_store(StateSettings(backend="etcd"))
    with pytest.raises(ConfigError):
        open_store(StateSettings(backend="redis", redis_url="http://127.0.0.1:6379"))


async def test_ping(store: StateStore) -> None:
    assert await store.ping() is True


# -- rooms --------------------------------------------------------------------------------
async def test_rooms_crud(store: StateStore) -> None:
    assert await store.get_room("a") is None
    assert await store.list_rooms() == []
    record = {"id": "a", "max": 5, "meta": {"tags": ["x", "y"], "ratio": 0.1}}
    await store.put_room("a", record)
    record["max"] = 99  # the store keeps its own copy
    assert await store.get_room("a") == {"id": "a", "max": 5, "meta": {"tags": ["x", "y"], "ratio": 0.1}}
    await store.put_room("b", {"id": "b"})
    assert ids(await store.list_rooms()) == ["a", "b"]
    await store.put_room("a", {"id": "a", "max": 6})
    assert await store.get_room("a") == {"id": "a", "max": 6}
    await store.delete_room("a")
    assert await store.get_room("a") is None
    assert ids(await store.list_rooms()) == ["b"]
    await store.delete_room("never-existed")


async def test_update_room_creates_changes_and_deletes(store: StateStore) -> None:
    seen: list[Record | None] = []

    def create(current: Record | None) -> Record:
        seen.append(current)
        return {"id": "u", "count": 1}

    assert await store.update_room("u", create) == {"id": "u", "count": 1}
    assert seen and all(s is None for s in seen)

    def bump(current: Record | None) -> Record:
        assert current is not None
        current["count"] += 1  # mutating the argument is safe: it is a copy
        return current

    assert await store.update_room("u", bump) == {"id": "u", "count": 2}
    assert await store.get_room("u") == {"id": "u", "count": 2}
    assert ids(await store.list_rooms()) == ["u"]

    assert await store.update_room("u", lambda current: None) is None
    assert await store.get_room("u") is None
    assert await store.list_rooms() == []
    assert await store.update_room("ghost", lambda current: None) is None
    assert await store.get_room("ghost") is None


async def test_delete_room_deletes_its_participants(store: StateStore) -> None:
    await store.put_room("r", {"id": "r"})
    await store.put_participant("r", "p1", {"id": "p1"})
    await store.put_participant("other", "p2", {"id": "p2"})
    await store.delete_room("r")
    assert await store.list_participants("r") == []
    assert ids(await store.list_participants("other")) == ["p2"]


# -- participants -------------------------------------------------------------------------
async def test_participants(store: StateStore) -> None:
    assert await store.list_participants("r") == []
    await store.put_participant("r", "p2", {"id": "p2", "node": "n2"})
    await store.put_participant("r", "p1", {"id": "p1", "node": "n1"})
    assert ids(await store.list_participants("r")) == ["p1", "p2"]
    await store.put_participant("r", "p1", {"id": "p1", "node": "n3"})
    assert (await store.list_participants("r"))[0] == {"id": "p1", "node": "n3"}
    await store.remove_participant("r", "p1")
    await store.remove_participant("r", "nobody")
    assert ids(await store.list_participants("r")) == ["p2"]


async def test_remove_participants_where_keeps_other_values(store: StateStore) -> None:
    records = [
        {"id": "a", "node": "n1"},
        {"id": "b", "node": "n2"},
        {"id": "c", "node": "n1", "extra": {"nested": [1]}},
        {"id": "d"},  # no such field: never matches
        {"id": "e", "node": None},
        {"id": "f", "node": "n1 "},
    ]
    for record in records:
        await store.put_participant("r", record["id"], record)
    await store.put_participant("elsewhere", "z", {"id": "z", "node": "n1"})

    assert await store.remove_participants_where("r", "node", "n1") == 2
    assert ids(await store.list_participants("r")) == ["b", "d", "e", "f"]
    assert await store.remove_participants_where("r", "node", "n1") == 0
    assert await store.remove_participants_where("r", "node", None) == 1
    assert ids(await store.list_participants("r")) == ["b", "d", "f"]
    assert ids(await store.list_participants("elsewhere")) == ["z"]
    assert await store.remove_participants_where("empty-room", "node", "n1") == 0


async def test_remove_participants_where_compares_json_values(store: StateStore) -> None:
    await store.put_participant("r", "bool", {"id": "bool", "v": True})
    await store.put_participant("r", "int", {"id": "int", "v": 1})
    await store.put_participant("r", "float", {"id": "float", "v": 2.0})
    await store.put_participant("r", "text", {"id": "text", "v": "1"})
    assert await store.remove_participants_where("r", "v", True) == 1
    assert await store.remove_participants_where("r", "v", 2) == 1
    assert await store.remove_participants_where("r", "v", 1) == 1
    assert ids(await store.list_participants("r")) == ["text"]
    with pytest.raises(TypeError):
        await store.remove_participants_where("r", "v", {"a": 1})


# -- node registry ------------------------------------------------------------------------
async def test_heartbeat_and_node_registry(store: StateStore) -> None:
    assert await store.get_node("n1") is None
    assert await store.heartbeat("n1", {"id": "n1", "load": 0}, ttl_s=30) is False
    assert await store.heartbeat("n1", {"id": "n1", "load": 2}, ttl_s=30) is True
    assert await store.get_node("n1") == {"id": "n1", "load": 2}
    assert await store.heartbeat("n2", {"id": "n2"}, ttl_s=30) is False
    assert await store.heartbeat("short", {"id": "short"}, ttl_s=0.3) is False

    async def short_expired() -> bool:
        return await store.get_node("short") is None

    await eventually(short_expired)
    assert ids(await store.list_nodes()) == ["n1", "n2"]
    # An expired entry counts as gone: the node must re-publish its state.
    assert await store.heartbeat("short", {"id": "short"}, ttl_s=30) is False
    assert ids(await store.list_nodes()) == ["n1", "n2", "short"]

    await store.remove_node("n1")
    await store.remove_node("never-there")
    assert await store.get_node("n1") is None
    assert ids(await store.list_nodes()) == ["n2", "short"]
    assert await store.heartbeat("n1", {"id": "n1"}, ttl_s=30) is False


# -- locks and leases ---------------------------------------------------------------------
async def test_lock_is_mutually_exclusive(backend: Backend) -> None:
    handles = [await backend.open() for _ in range(3)]
    state = {"inside": 0, "most": 0, "counter": 0}

    async def worker(handle: StateStore) -> None:
        for _ in range(5):
            async with handle.lock("L", ttl_s=30, wait_s=60):
                state["inside"] += 1
                state["most"] = max(state["most"], state["inside"])
                value = state["counter"]
                await asyncio.sleep(0.002)
                state["counter"] = value + 1
                state["inside"] -= 1

    await asyncio.gather(*(worker(handles[i % 3]) for i in range(6)))
    assert state["counter"] == 30
    assert state["most"] == 1


async def test_lock_wait_times_out_with_lock_lost(store: StateStore, peer: StateStore) -> None:
    async with store.lock("held", ttl_s=30):
        with pytest.raises(LockLost) as raised:
            async with peer.lock("held", ttl_s=30, wait_s=0.2):
                pytest.fail("two holders at once")
        assert raised.value.status == 503
        async with peer.lock("another-name", wait_s=5):
            pass
    async with peer.lock("held", wait_s=10):
        pass


async def test_lock_is_released_when_the_body_fails(store: StateStore, peer: StateStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.lock("boom", ttl_s=30):
            raise RuntimeError("body failed")
    async with peer.lock("boom", wait_s=10):
        pass


async def test_try_lease(store: StateStore, peer: StateStore) -> None:
    assert await store.try_lease("leader", "a", ttl_s=0.3) is True
    assert await peer.try_lease("leader", "b", ttl_s=30) is False
    assert await store.try_lease("leader", "a", ttl_s=30) is True  # renewed for longer
    await asyncio.sleep(0.5)
    assert await peer.try_lease("leader", "b", ttl_s=30) is False
    assert await store.try_lease("leader", "a", ttl_s=30) is True

    assert await store.try_lease("leader", "a", ttl_s=0.3) is True  # renewed short, then let go

    async def b_takes_over() -> bool:
        return await peer.try_lease("leader", "b", ttl_s=30)

    await eventually(b_takes_over)
    assert await store.try_lease("leader", "a", ttl_s=30) is False
    assert await store.try_lease("other-lease", "a", ttl_s=30) is True


# -- message bus --------------------------------------------------------------------------
async def test_bus_delivers_messages_published_after_subscribe(store: StateStore, peer: StateStore) -> None:
    await peer.publish("c1", {"n": 0})  # before the subscription: never seen
    subscription = await store.subscribe("c1", "c2")
    await peer.publish("c1", {"n": 1})
    await peer.publish("c3", {"n": 2})  # not subscribed
    await peer.publish("c2", {"n": 3, "body": {"nested": [1, "x"]}})
    await peer.publish("c1", {"n": 4})
    got = [await next_message(subscription) for _ in range(3)]
    assert got == [("c1", {"n": 1}), ("c2", {"n": 3, "body": {"nested": [1, "x"]}}), ("c1", {"n": 4})]
    await subscription.close()


async def test_bus_fans_out_to_every_subscriber(store: StateStore, peer: StateStore) -> None:
    first = await store.subscribe("room-events")
    second = await peer.subscribe("room-events", "other")
    await store.publish("room-events", {"n": 1})
    await store.publish("other", {"n": 2})
    await store.publish("room-events", {"n": 3})
    assert await next_message(first) == ("room-events", {"n": 1})
    assert await next_message(first) == ("room-events", {"n": 3})
    assert await next_message(second) == ("room-events", {"n": 1})
    assert await next_message(second) == ("other", {"n": 2})
    assert await next_message(second) == ("room-events", {"n": 3})
    await first.close()
    await peer.publish("room-events", {"n": 4})
    assert await next_message(second) == ("room-events", {"n": 4})


async def test_bus_close_ends_iteration(store: StateStore) -> None:
    subscription = await store.subscribe("c")
    received: list[tuple[str, Record]] = []

    async def read_all() -> None:
        async for item in subscription:
            received.append(item)

    reader = asyncio.create_task(read_all())
    await store.publish("c", {"n": 1})

    async def got_one() -> bool:
        return len(received) == 1

    await eventually(got_one)
    await subscription.close()
    await asyncio.wait_for(reader, 10)
    await store.publish("c", {"n": 2})
    async for _ in subscription:
        pytest.fail("a closed subscription yielded")
    assert received == [("c", {"n": 1})]


async def test_a_slow_subscriber_loses_its_oldest_messages(caplog: pytest.LogCaptureFixture) -> None:
    subscription = QueueSubscription(("c",), maxsize=3)
    with caplog.at_level(logging.WARNING, logger="teller.state"):
        for n in range(5):
            subscription.deliver("c", {"n": n})
    assert subscription.dropped == 2
    assert "dropped its oldest message" in caplog.text
    assert [(await next_message(subscription))[1]["n"] for _ in range(3)] == [2, 3, 4]
    await subscription.close()


# -- session timeline ---------------------------------------------------------------------
async def test_timeline_append_and_read(store: StateStore) -> None:
    assert await store.read_events("s1") == []
    seqs = [await store.append_event("s1", {"type": "step", "i": i}) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    events = await store.read_events("s1")
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert [e["i"] for e in events] == [0, 1, 2, 3, 4]
    assert all(isinstance(e["ts"], float) and e["ts"] > 0 for e in events)
    assert [e["seq"] for e in await store.read_events("s1", after=2, limit=2)] == [3, 4]
    assert [e["seq"] for e in await store.read_events("s1", after=3)] == [4, 5]
    assert await store.read_events("s1", after=5) == []
    assert await store.read_events("s1", limit=0) == []
    assert await store.read_events("s2") == []

    assert await store.append_event("s1", {"type": "own", "ts": 123.25, "seq": 99, "x": 0.1 + 0.2}) == 6
    (last,) = await store.read_events("s1", after=5)
    assert last == {"type": "own", "ts": 123.25, "seq": 6, "x": 0.1 + 0.2}


async def test_timeline_concurrent_appends_get_distinct_seqs(backend: Backend) -> None:
    handles = [await backend.open() for _ in range(4)]
    seqs = await asyncio.gather(*(handles[i % 4].append_event("s", {"i": i}) for i in range(40)))
    assert sorted(seqs) == list(range(1, 41))
    events = await handles[0].read_events("s")
    assert [e["seq"] for e in events] == list(range(1, 41))
    assert {e["i"]: e["seq"] for e in events} == dict(zip(range(40), seqs, strict=True))


async def test_timeline_expiry(store: StateStore) -> None:
    for sid in ("gone", "later", "kept"):
        await store.append_event(sid, {"type": "x"})
    await store.expire_events("gone", 0)
    assert await store.read_events("gone") == []
    await store.expire_events("never-written", 0)
    await store.expire_events("never-written", 5)
    assert await store.read_events("never-written") == []

    await store.expire_events("later", 60)
    await store.expire_events("later", 2.0)  # a later expiry replaces the earlier one
    await store.append_event("later", {"type": "y"})  # and an append does not extend it
    assert [e["seq"] for e in await store.read_events("later")] == [1, 2]

    async def expired() -> bool:
        return await store.read_events("later") == []

    await eventually(expired)
    assert [e["type"] for e in await store.read_events("kept")] == ["x"]
    assert await store.append_event("gone", {"type": "again"}) == 1  # a new timeline starts at 1


# -- sessions -----------------------------------------------------------------------------
async def test_sessions(store: StateStore) -> None:
    assert await store.get_session("s") is None
    await store.put_session("s", {"room": "r", "participant": "p"}, ttl_s=30)
    assert await store.get_session("s") == {"room": "r", "participant": "p"}
    await store.put_session("s", {"room": "r2"}, ttl_s=30)
    assert await store.get_session("s") == {"room": "r2"}
    await store.delete_session("s")
    await store.delete_session("s")
    assert await store.get_session("s") is None

    await store.put_session("short", {"room": "r"}, ttl_s=0.3)

    async def expired() -> bool:
        return await store.get_session("short") is None

    await eventually(expired)


# -- queues -------------------------------------------------------------------------------
async def test_queue_orders_by_priority_then_arrival(store: StateStore) -> None:
    assert await store.enqueue("q", "a", {"who": "a"}) == 1
    assert await store.enqueue("q", "b", {"who": "b"}) == 2
    assert await store.enqueue("q", "c", {"who": "c"}, priority=5) == 1
    assert await store.enqueue("q", "d", {"who": "d"}) == 4
    assert await store.enqueue("q", "e", {"who": "e"}, priority=-1) == 5
    items = await store.queue_items("q")
    assert ids(items, "item_id") == ["c", "a", "b", "d", "e"]
    assert [i["priority"] for i in items] == [5, 0, 0, 0, -1]
    assert all(i["who"] == i["item_id"] and isinstance(i["enqueued_at"], float) for i in items)
    assert await store.queue_position("q", "b") == 3
    assert await store.queue_position("q", "nobody") is None
    assert await store.queue_position("other-queue", "b") is None

    # Re-prioritising keeps the original arrival time and takes the new fields.
    b_since = items[2]["enqueued_at"]
    assert await store.enqueue("q", "b", {"who": "b", "note": "vip"}, priority=10) == 1
    b = (await store.queue_items("q"))[0]
    assert b == {"who": "b", "note": "vip", "item_id": "b", "priority": 10, "enqueued_at": b_since}
    # Back to 0: b rejoins its peers in its original arrival order, ahead of d.
    assert await store.enqueue("q", "b", {"who": "b"}, priority=0) == 3

    assert await store.remove_from_queue("q", "a") is True
    assert await store.remove_from_queue("q", "a") is False
    assert await store.remove_from_queue("other-queue", "a") is False
    assert ids(await store.queue_items("q"), "item_id") == ["c", "b", "d", "e"]

    dequeued = [await store.dequeue("q") for _ in range(5)]
    assert [d["item_id"] if d else None for d in dequeued] == ["c", "b", "d", "e", None]
    assert dequeued[0] is not None and dequeued[0]["who"] == "c" and dequeued[0]["priority"] == 5
    assert await store.queue_items("q") == []
    assert await store.dequeue("never-used") is None


async def test_queue_refuses_priorities_it_cannot_order(store: StateStore) -> None:
    with pytest.raises(BadRequest):
        await store.enqueue("q", "a", {}, priority=10**6)
    assert await store.enqueue("q", "a", {}, priority=9000) == 1
    assert await store.enqueue("q", "b", {}, priority=-9000) == 2


async def test_fifo_holds_for_many_quick_arrivals(store: StateStore) -> None:
    names = [f"i{n:03}" for n in range(100)]
    for name in reversed(names):  # arrival order differs from name order
        await store.enqueue("fifo", name, {})
    assert ids(await store.queue_items("fifo"), "item_id") == list(reversed(names))


async def test_dequeue_is_atomic_under_concurrency(backend: Backend) -> None:
    producer = await backend.open()
    expected = {f"item-{n:02}" for n in range(50)}
    for n, item_id in enumerate(sorted(expected)):
        await producer.enqueue("work", item_id, {"n": n}, priority=n % 3)
    consumers = [await backend.open() for _ in range(10)]

    async def consume(handle: StateStore) -> list[str]:
        got = []
        while (item := await handle.dequeue("work")) is not None:
            got.append(item["item_id"])
            await asyncio.sleep(0)
        return got

    results = await asyncio.gather(*(consume(c) for c in consumers))
    delivered = [item for got in results for item in got]
    assert len(delivered) == 50
    assert set(delivered) == expected
    assert await producer.queue_items("work") == []


# -- agents -------------------------------------------------------------------------------
async def test_agents(store: StateStore) -> None:
    assert await store.get_agent("ag1") is None
    assert await store.list_agents() == []

    def sign_in(current: Record | None) -> Record:
        return current or {"id": "ag1", "status": "available", "skills": ["loans"]}

    assert await store.update_agent("ag1", sign_in) == {"id": "ag1", "status": "available", "skills": ["loans"]}
    assert await store.update_agent("ag1", lambda c: {**(c or {}), "status": "busy"}) == {
        "id": "ag1", "status": "busy", "skills": ["loans"]
    }
    await store.update_agent("ag0", lambda c: {"id": "ag0", "status": "away"})
    assert await store.get_agent("ag1") == {"id": "ag1", "status": "busy", "skills": ["loans"]}
    assert ids(await store.list_agents()) == ["ag0", "ag1"]
    assert await store.update_agent("ag1", lambda c: None) is None
    assert await store.get_agent("ag1") is None
    assert ids(await store.list_agents()) == ["ag0"]


async def test_documents(store: StateStore) -> None:
    assert await store.get_doc("call", "c1") is None
    assert await store.list_docs("call") == []
    await store.update_doc("call", "c1", lambda c: {"call_id": "c1", "state": "queued"})
    await store.update_doc("call", "c0", lambda c: {"call_id": "c0", "state": "queued"})
    await store.update_doc("wrap_code", "c1", lambda c: {"code": "done"})  # kinds do not mix
    assert await store.update_doc("call", "c1", lambda c: {**(c or {}), "state": "ringing"}) == {"call_id": "c1", "state": "ringing"}
    assert [d["call_id"] for d in await store.list_docs("call")] == ["c0", "c1"]
    assert await store.list_docs("wrap_code") == [{"code": "done"}]
    assert await store.update_doc("call", "c0", lambda c: None) is None
    assert [d["call_id"] for d in await store.list_docs("call")] == ["c1"]
    with pytest.raises(ValueError):
        await store.get_doc("Bad Kind", "x")


# -- no lost updates ----------------------------------------------------------------------
def _updater(store: StateStore, kind: str) -> Callable[..., Awaitable[Record | None]]:
    if kind == "doc":
        return lambda key, change: store.update_doc("call", key, change)
    return store.update_room if kind == "room" else store.update_agent


def _getter(store: StateStore, kind: str) -> Callable[[str], Awaitable[Record | None]]:
    if kind == "doc":
        return lambda key: store.get_doc("call", key)
    return store.get_room if kind == "room" else store.get_agent


def _increment(current: Record | None) -> Record:
    return {"count": (current or {}).get("count", 0) + 1}


@pytest.mark.parametrize("kind", ["room", "agent", "doc"])
async def test_concurrent_updates_lose_nothing(backend: Backend, kind: str) -> None:
    """20 tasks increment one counter. For memory this is the whole contract: it is one
    process by definition. Redis also gets the cross-process test below."""
    handles = [await backend.open() for _ in range(4)]

    async def worker(handle: StateStore) -> None:
        update = _updater(handle, kind)
        for _ in range(10):
            await update("shared", _increment)

    await asyncio.gather(*(worker(handles[i % 4]) for i in range(20)))
    final = await _getter(handles[0], kind)("shared")
    assert final == {"count": 200}


_WORKER = """
import asyncio, sys
from teller.state import RedisStore

async def main(url, prefix, kind, rounds):
    store = RedisStore(url, key_prefix=prefix, op_timeout_s=5.0)
    assert await store.ping()
    update = (store.update_room if kind == "room" else store.update_agent if kind == "agent"
              else (lambda key, change: store.update_doc("call", key, change)))
    calls = 0

    def increment(current):
        nonlocal calls
        calls += 1
        return {"count": (current or {}).get("count", 0) + 1}

    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(rounds):
        await update("shared", increment)
    await store.close()
    print("calls", calls, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


@pytest.mark.parametrize("kind", ["room", "agent", "doc"])
async def test_no_lost_update_across_processes(redis_server: RedisServer, kind: str) -> None:
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, redis_server.url, prefix, kind, "50",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        for _ in range(4)
    ]
    try:
        for worker in workers:  # all connected before any starts, so they really race
            assert worker.stdout is not None
            assert (await asyncio.wait_for(worker.stdout.readline(), 60)).strip() == b"ready"
        outputs = await asyncio.wait_for(asyncio.gather(*(w.communicate(b"go\n") for w in workers)), 120)
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    assert [w.returncode for w in workers] == [0, 0, 0, 0]
    calls = sum(int(out.split()[-1]) for out, _ in outputs)
    assert calls >= 200  # more means some writes lost a race and were redone
    store = RedisStore(redis_server.url, key_prefix=prefix)
    try:
        final = await _getter(store, kind)("shared")
    finally:
        await store.close()
    assert final == {"count": 200}


# -- outages (Redis only) -----------------------------------------------------------------
def _every_call(store: StateStore) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "get_room": lambda: store.get_room("r"),
        "list_rooms": store.list_rooms,
        "put_room": lambda: store.put_room("r", {"id": "r"}),
        "update_room": lambda: store.update_room("r", _increment),
        "delete_room": lambda: store.delete_room("r"),
        "put_participant": lambda: store.put_participant("r", "p", {"id": "p"}),
        "remove_participant": lambda: store.remove_participant("r", "p"),
        "list_participants": lambda: store.list_participants("r"),
        "remove_participants_where": lambda: store.remove_participants_where("r", "node", "n1"),
        "heartbeat": lambda: store.heartbeat("n1", {"id": "n1"}, 30),
        "get_node": lambda: store.get_node("n1"),
        "list_nodes": store.list_nodes,
        "remove_node": lambda: store.remove_node("n1"),
        "try_lease": lambda: store.try_lease("leader", "a", 30),
        "publish": lambda: store.publish("c", {"n": 1}),
        "subscribe": lambda: store.subscribe("c"),
        "append_event": lambda: store.append_event("s", {"type": "x"}),
        "read_events": lambda: store.read_events("s"),
        "expire_events": lambda: store.expire_events("s", 30),
        "put_session": lambda: store.put_session("s", {}, 30),
        "get_session": lambda: store.get_session("s"),
        "delete_session": lambda: store.delete_session("s"),
        "enqueue": lambda: store.enqueue("q", "a", {}),
        "dequeue": lambda: store.dequeue("q"),
        "queue_position": lambda: store.queue_position("q", "a"),
        "remove_from_queue": lambda: store.remove_from_queue("q", "a"),
        "queue_items": lambda: store.queue_items("q"),
        "get_agent": lambda: store.get_agent("a"),
        "list_agents": store.list_agents,
        "update_agent": lambda: store.update_agent("a", _increment),
    }


async def _take_lock(store: StateStore) -> None:
    async with store.lock("L", wait_s=1):
        pass


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of the test's own, for tests that break it."""
    if redis_binary() is None:
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server


async def test_outage_fails_every_call_and_recovers(own_redis: RedisServer) -> None:
    store = RedisStore(own_redis.url, key_prefix="outage", op_timeout_s=0.5)
    try:
        await store.put_room("r", {"id": "r"})
        assert await store.heartbeat("n1", {"id": "n1"}, 30) is False
        subscription = await store.subscribe("events")
        await store.publish("events", {"n": 0})
        assert await next_message(subscription) == ("events", {"n": 0})

        own_redis.stop()
        calls = {**_every_call(store), "lock": lambda: _take_lock(store)}
        for name, call in calls.items():
            with pytest.raises(StateUnavailable) as raised:
                await call()
            assert raised.value.status == 503, name
            assert raised.value.code == "state_unavailable", name
            assert raised.value.message == "the state store is unreachable", name
        assert await store.ping() is False

        own_redis.start()  # same port, no data
        await eventually(store.ping)
        assert await store.get_room("r") is None
        await store.put_room("r", {"id": "r"})
        assert await store.get_room("r") == {"id": "r"}
        assert await store.heartbeat("n1", {"id": "n1"}, 30) is False  # the store lost its data
        for call in _every_call(store).values():
            result = await call()
            if isinstance(result, BusSubscription):
                await result.close()

        async def subscription_heard_restart() -> bool:
            await store.publish("events", {"n": 1})
            try:
                return await next_message(subscription, timeout=0.2) == ("events", {"n": 1})
            except TimeoutError:
                return False

        await eventually(subscription_heard_restart, timeout=30)
    finally:
        own_redis.resume()
        await store.close()


async def test_a_hung_store_times_out_and_recovers(own_redis: RedisServer) -> None:
    store = RedisStore(own_redis.url, key_prefix="hung", op_timeout_s=0.3)
    try:
        await store.put_room("r", {"id": "r"})
        own_redis.pause()
        with pytest.raises(StateUnavailable):
            await store.get_room("r")
        with pytest.raises(StateUnavailable):
            await store.update_room("r", _increment)
        assert await store.ping() is False
        own_redis.resume()
        await eventually(store.ping)
        assert await store.get_room("r") == {"id": "r"}
    finally:
        own_redis.resume()
        await store.close()


async def test_idle_bus_connection_stays_up(own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle subscriptions PING the server; the PONGs must not look like failures."""
    monkeypatch.setattr(redis_store, "BUS_IDLE_PING_S", 0.05)
    store = RedisStore(own_redis.url, key_prefix="idle", op_timeout_s=1.0)
    try:
        subscription = await store.subscribe("c")
        await asyncio.sleep(0.5)  # several idle periods, each answered by a PONG
        await store.publish("c", {"n": 1})
        assert await next_message(subscription) == ("c", {"n": 1})
        assert isinstance(subscription, redis_store.RedisSubscription)
        assert subscription.reconnects == 0
    finally:
        await store.close()


async def test_silent_bus_connection_is_replaced(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection that stops answering (here a hung server; in life, a partition that
    sends no FIN) is noticed by its unanswered PING and rebuilt."""
    monkeypatch.setattr(redis_store, "BUS_IDLE_PING_S", 0.1)
    store = RedisStore(own_redis.url, key_prefix="silent", op_timeout_s=0.3)
    caplog.set_level(logging.WARNING, logger="teller.state")
    try:
        subscription = await store.subscribe("c")
        own_redis.pause()

        async def noticed() -> bool:
            return "bus subscription lost" in caplog.text

        await eventually(noticed)
        own_redis.resume()

        async def heard() -> bool:
            await store.publish("c", {"n": 1})
            try:
                return await next_message(subscription, timeout=0.2) == ("c", {"n": 1})
            except TimeoutError:
                return False

        await eventually(heard, timeout=30)
    finally:
        own_redis.resume()
        await store.close()


async def test_start_tolerates_an_unreachable_store() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", key_prefix="down", op_timeout_s=0.3)
    try:
        await store.start()
        assert await store.ping() is False
        with pytest.raises(StateUnavailable):
            await store.get_room("r")
    finally:
        await store.close()
