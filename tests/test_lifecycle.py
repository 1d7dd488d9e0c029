"""Rooms, participants and tracks release everything they hold."""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import aiohttp
import pytest

from teller.client import RoomClient, TestPatternTrack, ToneTrack
from teller.sfu.track import Publication
from teller.sfu.transport import MAX_DATAGRAM, PeerTransport

from .conftest import Server, wait_until

pytestmark = pytest.mark.media


def live(cls: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, cls))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def one_cycle(server: Server, room: str, i: int, close_room: bool) -> None:
    host = RoomClient(server.url, server.token(room, "agent", f"host{i}"))
    guest = RoomClient(server.url, server.token(room, "customer", f"guest{i}"))
    await host.connect()
    await guest.connect()
    await host.publish([ToneTrack(), TestPatternTrack(160, 120, 15)])
    subscription = await guest.subscribe(host.participant_id)
    await asyncio.wait_for(subscription.track("video").recv(), 5)
    await guest.send_data({"n": i})
    if close_room:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {server.admin_token(room)}"}
            async with http.delete(f"{server.url}/v1/rooms/{room}", headers=headers) as r:
                assert r.status == 200
        await asyncio.wait_for(host.closed.wait(), 5)
        await asyncio.wait_for(guest.closed.wait(), 5)
        await host.close()
        await guest.close()
    else:
        await guest.leave()
        await host.leave()


async def test_no_growth_after_100_join_leave_cycles(server: Server) -> None:
    async def settle() -> tuple[int, int, int, int, int]:
        await asyncio.sleep(0.3)
        await wait_until(lambda: live(PeerTransport) == 0 and live(Publication) == 0, timeout=10)
        return (
            len(asyncio.all_tasks()),
            # The default executor grows lazily up to a fixed bound; every other thread
            # (decoders, stage taps) must be gone.
            sum(1 for t in threading.enumerate() if not t.name.startswith(("ThreadPoolExecutor", "asyncio_"))),
            open_fds(),
            sum(len(r.participants) for r in server.node.rooms.values()),
            sum(len(r.publications) for r in server.node.rooms.values()),
        )

    for i in range(10):  # warm up caches, thread pools, lazily built objects
        await one_cycle(server, f"cycle-{i % 3}", i, close_room=i % 2 == 1)
    baseline = await settle()
    for i in range(10, 110):
        await one_cycle(server, f"cycle-{i % 3}", i, close_room=i % 2 == 1)
    after = await settle()
    tasks, threads, fds, participants, publications = after
    assert participants == 0 and publications == 0
    assert tasks <= baseline[0], f"tasks grew from {baseline[0]} to {tasks}"
    assert threads <= baseline[1], f"threads grew from {baseline[1]} to {threads}"
    assert fds <= baseline[2] + 2, f"open files grew from {baseline[2]} to {fds}"
    stats = server.node.stats()
    assert stats["peer_connections"] == 0


async def test_room_close_frees_peer_connections(server: Server) -> None:
    room = "closing"
    clients = [RoomClient(server.url, server.token(room, "customer", f"c{i}")) for i in range(3)]
    for client in clients:
        await client.connect()
    await clients[0].publish([ToneTrack(), TestPatternTrack(160, 120, 15)])
    subs = [await c.subscribe(clients[0].participant_id) for c in clients[1:]]
    for sub in subs:
        await asyncio.wait_for(sub.track("video").recv(), 5)
    assert live(PeerTransport) == 3
    await server.node.close_room(room, "test")
    for client in clients:
        left = await asyncio.wait_for(client.closed.wait(), 5)
        assert left
        assert client.close_reason == "test"
    assert room not in server.node.rooms
    for client in clients:
        await client.close()
    await wait_until(lambda: live(PeerTransport) == 0, timeout=5)


async def test_server_sockets_read_datagrams_into_small_buffers(server: Server) -> None:
    """asyncio's 256 KiB read buffer per datagram fragmented the heap under call churn."""
    room = "buffers"
    host = RoomClient(server.url, server.token(room, "agent", "host"))
    guest = RoomClient(server.url, server.token(room, "customer", "guest"))
    for client in (host, guest):
        await client.connect()
    await host.publish([ToneTrack(), TestPatternTrack(160, 120, 15)])
    subscription = await guest.subscribe(host.participant_id)
    await asyncio.wait_for(subscription.track("video").recv(), 5)
    gc.collect()
    transports = [o for o in gc.get_objects() if isinstance(o, PeerTransport)]
    sizes = [
        protocol.transport.max_size
        for pt in transports
        for dtls in pt._dtls_transports()
        for protocol in dtls.transport._connection._protocols
        if protocol.transport is not None
    ]
    assert len(transports) == 2 and sizes
    assert max(sizes) <= MAX_DATAGRAM
    for client in (guest, host):
        await client.leave()
