"""The cluster state store: one Redis shared by every node.

Failure policy: a call completes or raises StateUnavailable within about
op_timeout_s. Nothing retries a failure inside a request (a request waiting on a
dead store only delays the client's own retry; an optimistic update that lost a
race to another writer is redone, but that is not a failure); the connection pool
reconnects on the next call, so a Redis restart needs no Teller restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, ReadOnlyError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import BusSubscription, LockLost, Record, StateStore, StateUnavailable
from .common import (
    check_kind,
    PRIORITY_SPAN,
    QueueSubscription,
    check_priority,
    check_scalar,
    ttl_ms,
)

log = logging.getLogger("teller.state")

P = ParamSpec("P")
T = TypeVar("T")

# asyncio.TimeoutError is OSError's TimeoutError on 3.11; both named for clarity.
BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    asyncio.TimeoutError,
    OSError,
)
# Optimistic updates retry only while other writers keep winning; past this many
# lost races the store is too contended to promise an answer in time.
MAX_UPDATE_ATTEMPTS = 1000
BUS_BACKOFF_START_S = 0.1
BUS_BACKOFF_MAX_S = 2.0
# A bus connection that stays silent this long is PINGed; a second silent period
# means it died without a FIN (a partition) and it is rebuilt.
BUS_IDLE_PING_S = 5.0

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_TRY_LEASE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_REMOVE_WHERE = """
local removed = 0
local wanted = cjson.decode(ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, record = pcall(cjson.decode, all[i + 1])
  if ok and type(record) == 'table' and record[ARGV[1]] == wanted then
    redis.call('HDEL', KEYS[1], all[i])
    removed = removed + 1
  end
end
return removed
"""

# KEYS[1] is the node-id set, KEYS[2..] the node keys of ARGV[1..]: an id goes only
# if its key is still gone, so a node that heartbeats meanwhile stays listed.
_PRUNE_NODES = """
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('SREM', KEYS[1], ARGV[i - 1])
  end
end
return 0
"""

# The seq goes in by splicing text, not cjson: cjson would rewrite every number in
# the event with 14 significant digits. ARGV[1] is a JSON object with >= 1 field.
_APPEND_EVENT = """
local seq = redis.call('LLEN', KEYS[1]) + 1
redis.call('RPUSH', KEYS[1], '{"seq":' .. seq .. ',' .. string.sub(ARGV[1], 2))
return seq
"""

# Item value: "order|priority|enqueued_at|record-json". The arrival order comes from
# a counter, not a clock, so first come is first served even within a millisecond
# and across nodes with skewed clocks; re-enqueueing keeps order and enqueued_at.
_ENQUEUE = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
local order, since
if old then
  local o, s = string.match(old, '^(%d+)|[^|]*|([^|]*)|')
  order = tonumber(o)
  since = s
else
  order = redis.call('INCR', KEYS[3])
  since = ARGV[3]
end
redis.call('HSET', KEYS[2], ARGV[1], order .. '|' .. ARGV[2] .. '|' .. since .. '|' .. ARGV[4])
redis.call('ZADD', KEYS[1], order - tonumber(ARGV[2]) * tonumber(ARGV[5]), ARGV[1])
return redis.call('ZRANK', KEYS[1], ARGV[1]) + 1
"""

_DEQUEUE = """
local head = redis.call('ZRANGE', KEYS[1], 0, 0)
if #head == 0 then
  return false
end
redis.call('ZREM', KEYS[1], head[1])
local value = redis.call('HGET', KEYS[2], head[1])
redis.call('HDEL', KEYS[2], head[1])
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
end
return {head[1], value}
"""

_REMOVE_FROM_QUEUE = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
end
return removed
"""


@contextlib.contextmanager
def _unreachable() -> Iterator[None]:
    """Backend failures become one error; the address stays out of client replies."""
    try:
        yield
    except BACKEND_ERRORS as exc:
        raise StateUnavailable("the state store is unreachable", backend="redis") from exc


def _translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with _unreachable():
            return await fn(*args, **kwargs)

    return wrapper


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _queue_item(item_id: str, value: str) -> Record:
    _order, priority, since, record = value.split("|", 3)
    return {**json.loads(record), "item_id": item_id, "priority": int(priority), "enqueued_at": float(since)}


async def _close_quietly(pubsub: PubSub | None) -> None:
    if pubsub is not None:
        with contextlib.suppress(Exception):
            await pubsub.aclose()


class RedisSubscription(QueueSubscription):
    """A pub/sub subscription that survives Redis outages.

    Pub/sub is for "now" notifications: messages published while the connection is
    down are lost, not replayed. Anything a node must not miss lives in keys (rooms,
    participants, timelines), which a resubscribed node re-reads.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        channels: tuple[str, ...],
        op_timeout_s: float,
        on_close: Callable[[QueueSubscription], None],
    ) -> None:
        super().__init__(channels, on_close=on_close)
        self._client = client
        self._prefix = prefix
        self._op_timeout_s = op_timeout_s
        self._reader: asyncio.Task[None] | None = None
        self.reconnects = 0

    async def open(self) -> None:
        """Returns once Redis confirmed every channel, so later publishes are seen."""
        pubsub = await self._connect()
        self._reader = asyncio.create_task(self._run(pubsub), name=f"bus:{','.join(sorted(self.channels))}")

    async def close(self) -> None:
        if self.closed:
            return
        await super().close()
        if self._reader is not None:
            self._reader.cancel()
            # redis-py can swallow a cancellation inside get_message: never wait forever.
            done, _ = await asyncio.wait({self._reader}, timeout=READER_STOP_S)
            if not done:
                log.warning("a bus reader did not stop; left behind", extra={"channels": sorted(self.channels)})
            else:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    self._reader.result()

    async def _connect(self) -> PubSub:
        pubsub = self._client.pubsub()
        try:
            pending = {self._prefix + c for c in self.channels}
            await pubsub.subscribe(*pending)
            deadline = time.monotonic() + self._op_timeout_s
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RedisTimeoutError("no subscribe confirmation from Redis")
                message = await pubsub.get_message(timeout=remaining)
                if message is not None:
                    if message["type"] == "subscribe":
                        pending.discard(message["channel"])
                    self._handle(message)
        except BaseException:
            await _close_quietly(pubsub)
            raise
        return pubsub

    def _handle(self, message: dict[str, Any]) -> None:
        if message["type"] != "message":
            return
        channel: str = message["channel"]
        try:
            data = json.loads(message["data"])
        except (TypeError, ValueError):
            log.warning("ignored a bus message that is not JSON", extra={"channel": channel})
            return
        self.deliver(channel.removeprefix(self._prefix), data)

    async def _run(self, pubsub: PubSub | None) -> None:
        backoff = BUS_BACKOFF_START_S
        awaiting_pong = False
        try:
            while True:
                try:
                    if pubsub is None:
                        pubsub = await self._connect()
                        self.reconnects += 1
                        backoff, awaiting_pong = BUS_BACKOFF_START_S, False
                        log.info("bus subscription restored", extra={"channels": sorted(self.channels)})
                    message = await pubsub.get_message(timeout=BUS_IDLE_PING_S)
                    if message is None:
                        if awaiting_pong:
                            raise RedisConnectionError("the bus connection stopped answering")
                        await pubsub.ping()
                        awaiting_pong = True
                        continue
                    awaiting_pong = False
                    self._handle(message)
                except Exception as exc:  # noqa: BLE001 - the iterator must outlive any failure
                    if pubsub is not None:
                        log.warning(
                            "bus subscription lost; resubscribing",
                            extra={"channels": sorted(self.channels), "error": repr(exc)},
                        )
                    await _close_quietly(pubsub)
                    pubsub = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BUS_BACKOFF_MAX_S)
        finally:
            await _close_quietly(pubsub)


READER_STOP_S = 2.0


class RedisStore(StateStore):
    """State shared by every node of a cluster through one Redis."""

    backend = "redis"

    def __init__(self, url: str, key_prefix: str = "teller", op_timeout_s: float = 1.0) -> None:
        self._prefix = f"{key_prefix}:"
        self._op_timeout_s = op_timeout_s
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=op_timeout_s,
            socket_timeout=op_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._subscriptions: set[QueueSubscription] = set()
        script = self._redis.register_script
        self._release_lock = script(_RELEASE_LOCK)
        self._try_lease = script(_TRY_LEASE)
        self._remove_where = script(_REMOVE_WHERE)
        self._prune_nodes = script(_PRUNE_NODES)
        self._append_event = script(_APPEND_EVENT)
        self._enqueue = script(_ENQUEUE)
        self._dequeue = script(_DEQUEUE)
        self._remove_from_queue = script(_REMOVE_FROM_QUEUE)

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    async def start(self) -> None:
        if not await self.ping():
            log.warning("the state store does not answer yet; calls fail until it does")

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._op_timeout_s * 2):
                return bool(await self._redis.ping())
        except Exception:  # noqa: BLE001 - a health probe answers, it does not raise
            return False

    # -- shared helpers ----------------------------------------------------------------
    async def _get_json(self, key: str) -> Record | None:
        return _load(await self._redis.get(key))

    async def _list_json(self, index: str, key_of: Callable[[str], str]) -> list[Record]:
        ids = sorted(await self._redis.smembers(index))
        if not ids:
            return []
        values = await self._redis.mget([key_of(i) for i in ids])
        return [json.loads(v) for v in values if v is not None]

    async def _update(
        self, key: str, index: str, member: str, change: Callable[[Record | None], Record | None]
    ) -> Record | None:
        """WATCH/MULTI/EXEC: a write that raced another is thrown away and redone."""
        for attempt in range(MAX_UPDATE_ATTEMPTS):
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    await pipe.watch(key)
                    new = change(_load(await pipe.get(key)))
                    pipe.multi()
                    if new is None:
                        pipe.delete(key)
                        pipe.srem(index, member)
                        text = None
                    else:
                        text = _dump(new)
                        pipe.set(key, text)
                        pipe.sadd(index, member)
                    await pipe.execute()
                    return _load(text)
            except WatchError:
                # Jitter spreads the losers out so they do not collide again at once.
                await asyncio.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))
        raise StateUnavailable("the state store is too contended to apply the change", backend="redis")

    # -- rooms -----------------------------------------------------------------------
    @_translated
    async def get_room(self, name: str) -> Record | None:
        return await self._get_json(self._key("room", name))

    @_translated
    async def list_rooms(self) -> list[Record]:
        return await self._list_json(self._key("rooms"), lambda n: self._key("room", n))

    @_translated
    async def put_room(self, name: str, record: Record) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("room", name), _dump(record))
            pipe.sadd(self._key("rooms"), name)
            await pipe.execute()

    @_translated
    async def update_room(self, name: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        return await self._update(self._key("room", name), self._key("rooms"), name, change)

    @_translated
    async def delete_room(self, name: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key("room", name), self._key("participants", name))
            pipe.srem(self._key("rooms"), name)
            await pipe.execute()

    # -- participants ----------------------------------------------------------------
    @_translated
    async def put_participant(self, room: str, participant_id: str, record: Record) -> None:
        await self._redis.hset(self._key("participants", room), participant_id, _dump(record))

    @_translated
    async def remove_participant(self, room: str, participant_id: str) -> None:
        await self._redis.hdel(self._key("participants", room), participant_id)

    @_translated
    async def list_participants(self, room: str) -> list[Record]:
        members = await self._redis.hgetall(self._key("participants", room))
        return [json.loads(members[pid]) for pid in sorted(members)]

    @_translated
    async def remove_participants_where(self, room: str, field: str, value: Any) -> int:
        check_scalar(value)
        removed = await self._remove_where(keys=[self._key("participants", room)], args=[field, _dump(value)])
        return int(removed)

    # -- node registry ---------------------------------------------------------------
    @_translated
    async def heartbeat(self, node_id: str, record: Record, ttl_s: float) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("node", node_id), _dump(record), px=ttl_ms(ttl_s), get=True)
            pipe.sadd(self._key("nodes"), node_id)
            previous, _ = await pipe.execute()
        return previous is not None

    @_translated
    async def get_node(self, node_id: str) -> Record | None:
        return await self._get_json(self._key("node", node_id))

    @_translated
    async def list_nodes(self) -> list[Record]:
        index = self._key("nodes")
        ids = sorted(await self._redis.smembers(index))
        if not ids:
            return []
        values = await self._redis.mget([self._key("node", i) for i in ids])
        gone = [i for i, v in zip(ids, values, strict=True) if v is None]
        if gone:
            await self._prune_nodes(keys=[index, *(self._key("node", i) for i in gone)], args=gone)
        return [json.loads(v) for v in values if v is not None]

    @_translated
    async def remove_node(self, node_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key("node", node_id))
            pipe.srem(self._key("nodes"), node_id)
            await pipe.execute()

    # -- locks -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lock(self, name: str, ttl_s: float = 5.0, wait_s: float = 5.0) -> AsyncIterator[None]:
        """ttl_s bounds how long a crashed holder blocks others; keep the body shorter."""
        key, token = self._key("lock", name), secrets.token_hex(16)
        deadline = time.monotonic() + wait_s
        delay = 0.005
        with _unreachable():
            while not await self._redis.set(key, token, nx=True, px=ttl_ms(ttl_s)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockLost(f"could not take the lock {name!r} within {wait_s} s", lock=name)
                await asyncio.sleep(min(delay * random.uniform(0.5, 1.5), remaining))
                delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            await self._release(key, token, name)

    async def _release(self, key: str, token: str, name: str) -> None:
        """Never raises: the body's outcome matters more, and the TTL frees the lock anyway."""
        try:
            with _unreachable():
                released = await self._release_lock(keys=[key], args=[token])
        except StateUnavailable:
            log.warning("could not release a lock; it expires by its TTL", extra={"lock": name})
            return
        if not released:
            log.warning("a lock expired before its holder released it", extra={"lock": name})

    @_translated
    async def try_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        held = await self._try_lease(keys=[self._key("lease", name)], args=[owner, ttl_ms(ttl_s)])
        return bool(held)

    # -- message bus -----------------------------------------------------------------
    @_translated
    async def publish(self, channel: str, message: Record) -> None:
        await self._redis.publish(self._key("bus", channel), _dump(message))

    @_translated
    async def subscribe(self, *channels: str) -> BusSubscription:
        if not channels:
            raise ValueError("subscribe needs at least one channel")
        subscription = RedisSubscription(
            self._redis, self._key("bus", ""), channels, self._op_timeout_s, on_close=self._subscriptions.discard
        )
        await subscription.open()
        self._subscriptions.add(subscription)
        return subscription

    # -- session timeline --------------------------------------------------------------
    @_translated
    async def append_event(self, session_id: str, event: Record) -> int:
        stored = {k: v for k, v in event.items() if k != "seq"}
        stored.setdefault("ts", time.time())
        seq = await self._append_event(keys=[self._key("timeline", session_id)], args=[_dump(stored)])
        return int(seq)

    @_translated
    async def read_events(self, session_id: str, after: int = 0, limit: int = 1000) -> list[Record]:
        if limit <= 0:
            return []
        after = max(after, 0)
        values = await self._redis.lrange(self._key("timeline", session_id), after, after + limit - 1)
        return [json.loads(v) for v in values]

    @_translated
    async def expire_events(self, session_id: str, ttl_s: float) -> None:
        key = self._key("timeline", session_id)
        if ttl_s <= 0:
            await self._redis.delete(key)
        else:
            await self._redis.pexpire(key, ttl_ms(ttl_s))

    # -- sessions ------------------------------------------------------------------------
    @_translated
    async def put_session(self, session_id: str, record: Record, ttl_s: float) -> None:
        await self._redis.set(self._key("session", session_id), _dump(record), px=ttl_ms(ttl_s))

    @_translated
    async def get_session(self, session_id: str) -> Record | None:
        return await self._get_json(self._key("session", session_id))

    @_translated
    async def delete_session(self, session_id: str) -> None:
        await self._redis.delete(self._key("session", session_id))

    # -- queues ----------------------------------------------------------------------------
    def _queue_keys(self, queue: str) -> list[str]:
        return [self._key("queue", queue), self._key("queue-items", queue), self._key("queue-order", queue)]

    @_translated
    async def enqueue(self, queue: str, item_id: str, record: Record, priority: int = 0) -> int:
        check_priority(priority)
        args = [item_id, str(priority), repr(time.time()), _dump(record), repr(PRIORITY_SPAN)]
        return int(await self._enqueue(keys=self._queue_keys(queue), args=args))

    @_translated
    async def dequeue(self, queue: str) -> Record | None:
        head = await self._dequeue(keys=self._queue_keys(queue))
        if not head or head[1] is None:
            return None
        return _queue_item(head[0], head[1])

    @_translated
    async def queue_position(self, queue: str, item_id: str) -> int | None:
        rank = await self._redis.zrank(self._key("queue", queue), item_id)
        return None if rank is None else int(rank) + 1

    @_translated
    async def remove_from_queue(self, queue: str, item_id: str) -> bool:
        return bool(await self._remove_from_queue(keys=self._queue_keys(queue), args=[item_id]))

    @_translated
    async def queue_items(self, queue: str) -> list[Record]:
        ids = await self._redis.zrange(self._key("queue", queue), 0, -1)
        if not ids:
            return []
        values = await self._redis.hmget(self._key("queue-items", queue), ids)
        # An item dequeued between the two reads is simply gone.
        return [_queue_item(i, v) for i, v in zip(ids, values, strict=True) if v is not None]

    # -- agents ----------------------------------------------------------------------------
    @_translated
    async def get_agent(self, agent_id: str) -> Record | None:
        return await self._get_json(self._key("agent", agent_id))

    @_translated
    async def list_agents(self) -> list[Record]:
        return await self._list_json(self._key("agents"), lambda a: self._key("agent", a))

    @_translated
    async def update_agent(self, agent_id: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        return await self._update(self._key("agent", agent_id), self._key("agents"), agent_id, change)

    # -- documents -----------------------------------------------------------------------
    @_translated
    async def get_doc(self, kind: str, key: str) -> Record | None:
        return await self._get_json(self._key("doc", check_kind(kind), key))

    @_translated
    async def list_docs(self, kind: str) -> list[Record]:
        check_kind(kind)
        return await self._list_json(self._key("docs", kind), lambda k: self._key("doc", kind, k))

    @_translated
    async def update_doc(self, kind: str, key: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        return await self._update(self._key("doc", check_kind(kind), key), self._key("docs", kind), key, change)
