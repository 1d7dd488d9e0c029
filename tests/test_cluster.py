"""The cluster on loopback: one Redis, two signalling processes, two SFU nodes.

Every member is a real process; calls are real SDK clients with real peer
connections. Nodes are killed (SIGKILL), frozen (SIGSTOP) and drained (SIGTERM),
signalling processes killed, Redis restarted, and every call must go on.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest

from loadtests.media import (
    AUDIO_TIME_BASE,
    VIDEO_TIME_BASE,
    FrameCounter,
    PreEncodedTrack,
    count_frames,
    encode_audio,
    encode_video,
)
from teller.client import RoomClient
from teller.client.room import ClientError, RemoteSubscription

from .cluster import LocalCluster
from .conftest import wait_until
from .redis_server import redis_binary

pytestmark = [
    pytest.mark.skipif(redis_binary() is None, reason="redis-server is not installed"),
    pytest.mark.timeout(240),
]


@pytest.fixture(scope="module")
def media() -> dict[str, list[bytes]]:
    return {"video": encode_video(320, 240, 15, seconds=2.0, bitrate=250_000), "audio": encode_audio(1.0)}


@dataclass
class Side:
    client: RoomClient
    subscription: RemoteSubscription | None = None
    counters: list[FrameCounter] = field(default_factory=list)

    @property
    def counter(self) -> FrameCounter:
        return self.counters[-1]

    def frames_since(self, t: float) -> int:
        return sum(1 for c in self.counters for at, _ts in c.frames if at > t)

    def first_frame_after(self, t: float) -> float | None:
        times = [at for c in self.counters for at, _ts in c.frames if at > t]
        return min(times) if times else None


@dataclass
class Call:
    room: str
    sides: list[Side]


def _count(side: Side, subscription: RemoteSubscription) -> None:
    counter = FrameCounter(joined_at=time.monotonic())
    for transceiver in subscription.pc.getTransceivers():
        count_frames(transceiver.receiver, counter, transceiver.kind)
    side.counters.append(counter)


async def start_call(cluster: LocalCluster, room: str, urls: list[str], media: dict[str, list[bytes]]) -> Call:
    sides = [Side(RoomClient(urls, cluster.token(room, name))) for name in ("customer", "agent")]
    for side in sides:
        await side.client.connect()
        await side.client.publish(
            [
                PreEncodedTrack("video", media["video"], 15, 6000, VIDEO_TIME_BASE),
                PreEncodedTrack("audio", media["audio"], 50, 960, AUDIO_TIME_BASE),
            ],
            data_channel=False,
        )
    for side, other in ((sides[0], sides[1]), (sides[1], sides[0])):
        side.subscription = await side.client.subscribe(other.client.participant_id)
        _count(side, side.subscription)
        side.client.on("resubscribed", lambda m, side=side: _count(side, m["subscription"]))
    return Call(room, sides)


async def end_calls(calls: list[Call]) -> None:
    await asyncio.gather(*(s.client.close() for c in calls for s in c.sides), return_exceptions=True)


async def flowing(calls: list[Call], since: float, frames: int = 5, timeout: float = 30) -> None:
    try:
        await wait_until(lambda: all(s.frames_since(since) >= frames for c in calls for s in c.sides), timeout=timeout)
    except AssertionError:
        state = [
            (c.room, s.client.participant_id, s.frames_since(since), len(s.counters), s.client.migrations, s.client.reconnects, s.client.closed.is_set())
            for c in calls for s in c.sides
        ]
        raise AssertionError(f"media did not flow again: {state}") from None


def check_consistent(cluster: LocalCluster, calls: list[Call], live: set[str]) -> None:
    """Nothing orphaned: rooms on live nodes, exactly the callers listed, registry live."""
    assert cluster.live_nodes() == live
    rooms = cluster.rooms()
    for call in calls:
        assert rooms[call.room]["node_id"] in live
        listed = cluster.participants(call.room)
        assert sorted(p["participant_id"] for p in listed) == sorted(s.client.participant_id for s in call.sides)
        assert {p["node_id"] for p in listed} == {rooms[call.room]["node_id"]}


async def test_ten_calls_spread_and_survive_a_node_kill(cluster: LocalCluster, media: dict[str, list[bytes]]) -> None:
    urls = cluster.signal_urls
    calls = []
    for i in range(10):
        calls.append(await start_call(cluster, f"call-{i}", urls[i % 2:] + urls[: i % 2], media))
    try:
        await flowing(calls, 0)
        rooms = cluster.rooms()
        by_node = {n.node_id: [c for c in calls if rooms[c.room]["node_id"] == n.node_id] for n in cluster.nodes}
        assert all(by_node.values()), f"calls were not spread over both nodes: {by_node}"
        check_consistent(cluster, calls, {n.node_id for n in cluster.nodes})

        victim = cluster.nodes[0]
        survivor = cluster.nodes[1]
        moved = by_node[victim.node_id]
        killed_at = time.monotonic()
        victim.kill()
        await flowing(calls, killed_at, timeout=60)

        for call in calls:
            for side in call.sides:
                assert not side.client.closed.is_set(), side.client.close_reason
                assert side.client.migrations == (1 if call in moved else 0)
        await wait_until(lambda: cluster.live_nodes() == {survivor.node_id}, timeout=10)
        await wait_until(lambda: _consistent(cluster, calls, {survivor.node_id}), timeout=10)
        check_consistent(cluster, calls, {survivor.node_id})
    finally:
        await end_calls(calls)


def _consistent(cluster: LocalCluster, calls: list[Call], live: set[str]) -> bool:
    try:
        check_consistent(cluster, calls, live)
    except (AssertionError, KeyError):
        return False
    return True


async def test_signalling_process_kill_resumes_without_touching_media(cluster: LocalCluster, media: dict[str, list[bytes]]) -> None:
    first, second = cluster.signals
    calls = [await start_call(cluster, f"sig-{i}", [first.url, second.url], media) for i in range(3)]
    try:
        await flowing(calls, 0)
        pcs = {id(s.subscription.pc) for c in calls for s in c.sides if s.subscription}
        killed_at = time.monotonic()
        first.kill()
        await wait_until(lambda: all(s.client.reconnects == 1 for c in calls for s in c.sides), timeout=20)
        await flowing(calls, killed_at)
        for call in calls:
            for side in call.sides:
                assert side.client.url.startswith(second.url.replace("http", "ws"))
                assert side.client.migrations == 0
                assert len(side.counters) == 1  # the same subscription, never re-made
        assert {id(s.subscription.pc) for c in calls for s in c.sides if s.subscription} == pcs
        # Signalling still works through the resumed session: a data message round trip.
        got = asyncio.get_running_loop().create_future()
        calls[0].sides[1].client.on("data", lambda m: got.done() or got.set_result(m["payload"]))
        await calls[0].sides[0].client.send_data({"hello": "after failover"})
        assert await asyncio.wait_for(got, 10) == {"hello": "after failover"}
        check_consistent(cluster, calls, {n.node_id for n in cluster.nodes})
    finally:
        await end_calls(calls)


async def test_redis_restart(cluster: LocalCluster, media: dict[str, list[bytes]]) -> None:
    calls = [await start_call(cluster, f"redis-{i}", cluster.signal_urls, media) for i in range(2)]
    try:
        await flowing(calls, 0)
        cluster.redis.stop()
        down_at = time.monotonic()

        # New requests get a clear 503 with a machine code...
        status, body = cluster.rest("GET", "/v1/rooms")
        assert (status, body["error"]["code"]) == (503, "state_unavailable")
        status, body = cluster.rest("GET", "/healthz")
        assert status == 503 and body["state_store"] == "unreachable"
        assert cluster.rest("GET", "/livez")[0] == 200  # alive: nothing for a probe to restart
        late = RoomClient(cluster.signal_urls, cluster.token("redis-late", "late"), reconnect=False)
        with pytest.raises(ClientError) as refused:
            await late.connect()
        assert refused.value.code == "state_unavailable" and refused.value.status == 503
        await late.close()
        # ...while calls in progress keep their media and no process dies.
        await flowing(calls, down_at, frames=15)
        await asyncio.sleep(3)  # longer than the node TTL
        assert all(m.alive for m in cluster.signals + cluster.nodes)

        restarted_at = time.monotonic()
        cluster.redis.start()  # same port, no data: everything must be rebuilt
        live = {n.node_id for n in cluster.nodes}
        await wait_until(lambda: _consistent(cluster, calls, live), timeout=20)
        await flowing(calls, restarted_at)
        for call in calls:
            for side in call.sides:
                assert side.client.reconnects == 0
        joiner = RoomClient(cluster.signal_urls, cluster.token("redis-new", "new"))
        await joiner.connect()
        assert cluster.rooms()["redis-new"]["node_id"] in live
        await joiner.close()
        assert (await _status(cluster, "/healthz")) == 200
    finally:
        await end_calls(calls)


def _metric(url: str, name: str) -> float:
    """One sample's value from a process's /metrics, summed over its labels."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


async def _status(cluster: LocalCluster, path: str) -> int:
    status, _body = cluster.rest("GET", path)
    return status


async def test_drain_moves_rooms_then_exits(cluster: LocalCluster, media: dict[str, list[bytes]]) -> None:
    calls = [await start_call(cluster, f"drain-{i}", cluster.signal_urls, media) for i in range(4)]
    try:
        await flowing(calls, 0)
        rooms = cluster.rooms()
        draining = next(n for n in cluster.nodes if any(rooms[c.room]["node_id"] == n.node_id for c in calls))
        other = next(n for n in cluster.nodes if n is not draining)
        drained_at = time.monotonic()
        draining.terminate()
        assert await asyncio.to_thread(draining.process.wait, 30) == 0
        await flowing(calls, drained_at, timeout=30)
        assert all(not s.client.closed.is_set() for c in calls for s in c.sides)
        await wait_until(lambda: _consistent(cluster, calls, {other.node_id}), timeout=10)
    finally:
        await end_calls(calls)


async def test_frozen_node_is_declared_dead_after_its_ttl(cluster: LocalCluster, media: dict[str, list[bytes]]) -> None:
    """SIGSTOP: no connection is refused, nothing closes; only the heartbeat tells."""
    calls = [await start_call(cluster, f"frozen-{i}", cluster.signal_urls, media) for i in range(4)]
    try:
        await flowing(calls, 0)
        rooms = cluster.rooms()
        frozen = next(n for n in cluster.nodes if any(rooms[c.room]["node_id"] == n.node_id for c in calls))
        other = next(n for n in cluster.nodes if n is not frozen)
        frozen_at = time.monotonic()
        frozen.pause()
        await flowing(calls, frozen_at, timeout=60)
        assert all(not s.client.closed.is_set() for c in calls for s in c.sides)
        await wait_until(lambda: _consistent(cluster, calls, {other.node_id}), timeout=10)
    finally:
        await end_calls(calls)


async def test_rest_through_a_signalling_process(cluster: LocalCluster, media: dict[str, list[bytes]]) -> None:
    status, room = cluster.rest("POST", "/v1/rooms", body={"name": "api-room", "max_participants": 2, "metadata": {"branch": "A-17"}})
    assert status == 201 and room["node_id"] in cluster.live_nodes() and room["max_participants"] == 2
    assert cluster.rest("POST", "/v1/rooms", body={"name": "api-room"})[1]["error"]["code"] == "room_exists"
    assert cluster.rest("POST", "/v1/rooms", body={"name": "bad name!"})[1]["error"]["code"] == "invalid_room_name"
    # The other signalling process sees the same room: the state is shared, not local.
    status, same = cluster.rest("GET", "/v1/rooms/api-room", url=cluster.signal_urls[1])
    assert status == 200 and same["metadata"] == {"branch": "A-17"}

    call = await start_call(cluster, "api-room", cluster.signal_urls, media)
    try:
        third = RoomClient(cluster.signal_urls, cluster.token("api-room", "third"), reconnect=False)
        with pytest.raises(ClientError) as full:
            await third.connect()
        assert full.value.code == "room_full"
        await third.close()
        await flowing([call], 0)
        # Every process serves /metrics; the node carrying the call counts its media, and
        # the live quality of the session reaches any signalling process through the store.
        node = next(n for n in cluster.nodes if n.node_id == room["node_id"])
        await wait_until(lambda: _metric(node.url, "teller_media_packets_sent_total") > 0, timeout=15)
        assert _metric(node.url, "teller_participants") == 2
        assert _metric(cluster.signals[0].url, "teller_signal_relays") >= 1
        assert _metric(cluster.signals[1].url, "process_cpu_seconds_total") > 0
        await wait_until(lambda: cluster.rest("GET", "/v1/quality", url=cluster.signal_urls[1])[1]["rooms"], timeout=15)
        quality = cluster.rest("GET", "/v1/quality", url=cluster.signal_urls[1])[1]["rooms"][0]
        assert quality["room"] == "api-room" and quality["node_id"] == room["node_id"] and len(quality["participants"]) == 2
        victim = call.sides[1].client
        status, _ = cluster.rest("DELETE", f"/v1/rooms/api-room/participants/{victim.participant_id}")
        assert status == 200
        await asyncio.wait_for(victim.closed.wait(), 10)
        assert victim.close_reason == "removed_by_api"
        await wait_until(lambda: len(cluster.participants("api-room")) == 1, timeout=10)
        status, _ = cluster.rest("DELETE", "/v1/rooms/api-room")
        assert status == 200
        await asyncio.wait_for(call.sides[0].client.closed.wait(), 10)
        assert cluster.rest("GET", "/v1/rooms/api-room")[0] == 404
    finally:
        await end_calls([call])


async def test_the_session_timeline_follows_the_room_across_nodes(cluster: LocalCluster, media: dict[str, list[bytes]]) -> None:
    from teller.state import RedisStore

    call = await start_call(cluster, "timeline", cluster.signal_urls, media)
    store = RedisStore(cluster.redis.url, "teller", 1.0)
    try:
        await flowing([call], 0)
        before = cluster.rooms()["timeline"]
        victim = next(n for n in cluster.nodes if n.node_id == before["node_id"])
        killed_at = time.monotonic()
        victim.kill()
        await flowing([call], killed_at)
        after = cluster.rooms()["timeline"]
        assert after["sid"] == before["sid"] and after["node_id"] != before["node_id"]

        def kinds(events: list[dict[str, Any]], node: str) -> list[str]:
            return [e["type"] for e in events if e["node_id"] == node]

        events: list[dict[str, Any]] = []

        async def read() -> bool:
            events[:] = await store.read_events(before["sid"])
            return kinds(events, after["node_id"]).count("track_published") >= 4

        deadline = time.monotonic() + 10
        while not await read() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        first = kinds(events, before["node_id"])
        assert first[0] == "room_opened" and first.count("participant_joined") == 2 and first.count("track_published") == 4
        second = kinds(events, after["node_id"])
        assert second[0] == "room_opened" and second.count("participant_joined") == 2 and second.count("track_published") == 4
        assert next(e for e in events if e["node_id"] == after["node_id"])["moved"] is True
    finally:
        await store.close()
        await end_calls([call])


async def test_bad_input_through_a_signalling_process_harms_no_call(cluster: LocalCluster, media: dict[str, list[bytes]]) -> None:
    import json

    import aiohttp

    call = await start_call(cluster, "steady", cluster.signal_urls, media)
    try:
        await flowing([call], 0)
        rooms_before = cluster.rooms()
        started = time.monotonic()
        url = cluster.signal_urls[0].replace("http", "ws") + "/v1/rtc"
        cases = [
            ("not json", "invalid_json", 4008),
            (json.dumps({"type": "publish", "sdp": "x"}), "not_joined", 4008),
            (json.dumps({"type": "join", "protocol": 1, "token": "forged"}), "token_invalid", 4401),
            (json.dumps({"type": "join", "protocol": 1, "token": cluster.token("steady", "x"), "room": "other"}), "room_forbidden", 4403),
            (json.dumps({"type": "join", "protocol": 1, "resume": "forged"}), "token_invalid", 4401),
            (json.dumps({"type": "join", "protocol": 2, "token": cluster.token("steady", "x")}), "unsupported_protocol", 4008),
            (json.dumps({"type": "join", "protocol": 1, "token": cluster.token("bad name!", "x")}), "invalid_room_name", 4008),
        ]
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url) as ws:  # a ping is answered before joining, as on a node
                await ws.send_str(json.dumps({"type": "ping", "request_id": "p1"}))
                assert json.loads((await ws.receive(timeout=5)).data) == {"type": "pong", "request_id": "p1"}
            for text, code, close_code in cases:
                async with http.ws_connect(url) as ws:
                    await ws.send_str(text)
                    reply = json.loads((await ws.receive(timeout=5)).data)
                    assert reply["type"] == "error" and reply["code"] == code, (text, reply)
                    await ws.receive(timeout=5)
                    assert ws.close_code == close_code, (text, ws.close_code)
            status = (await http.post(cluster.signal_urls[0] + "/whip/steady", data="v=0 garbage", headers={
                "Content-Type": "application/sdp", "Authorization": f"Bearer {cluster.token('steady', 'cam', 'officer')}"})).status
            assert status == 400
            status = (await http.post(cluster.signal_urls[0] + "/whip/steady", data="v=0", headers={"Content-Type": "application/sdp"})).status
            assert status == 401
        assert cluster.rooms().keys() == rooms_before.keys()
        assert sorted(p["participant_id"] for p in cluster.participants("steady")) == sorted(s.client.participant_id for s in call.sides)
        await flowing([call], started, frames=15)
        assert all(s.client.reconnects == 0 for s in call.sides)
    finally:
        await end_calls([call])


async def test_a_room_made_by_the_api_that_nobody_joins_expires(cluster: LocalCluster) -> None:
    status, _ = cluster.rest("POST", "/v1/rooms", body={"name": "never-joined", "empty_timeout_s": 1})
    assert status == 201
    await wait_until(lambda: cluster.rest("GET", "/v1/rooms/never-joined")[0] == 404, timeout=15)
    status, kept = cluster.rest("POST", "/v1/rooms", body={"name": "kept", "empty_timeout_s": 600})
    assert status == 201
    await asyncio.sleep(2)
    assert cluster.rest("GET", "/v1/rooms/kept")[0] == 200


async def test_whip_and_whep_through_different_signalling_processes(cluster: LocalCluster) -> None:
    """A body-cam publishes by WHIP through one process, a reviewer plays by WHEP through another."""
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from teller.client import TestPatternTrack, ToneTrack

    from .media import receive
    from .test_whip_whep import _post_offer

    first, second = cluster.signal_urls
    publisher = RTCPeerConnection()
    publisher.addTransceiver(ToneTrack(), direction="sendonly")
    publisher.addTransceiver(TestPatternTrack(320, 240, 15), direction="sendonly")
    player = RTCPeerConnection()
    player.addTransceiver("audio", direction="recvonly")
    player.addTransceiver("video", direction="recvonly")
    cam = cluster.issuer.issue(room="field-7", role="officer", name="bodycam")
    viewer = cluster.issuer.issue(room="field-7", role="reviewer", name="reviewer")
    async with aiohttp.ClientSession() as http:
        try:
            response = await _post_offer(http, f"{first}/whip/field-7", cam, publisher)
            assert response.status == 201, await response.text()
            location = response.headers["Location"]
            assert location.startswith("/whip/field-7/") and response.headers["ETag"]
            await publisher.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))

            response = await _post_offer(http, f"{second}/whep/field-7", viewer, player)
            assert response.status == 201, await response.text()
            await player.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))
            video = next(t.receiver.track for t in player.getTransceivers() if t.kind == "video")
            got = await receive(video, 2.0, first_timeout=15)
            assert got.frames > 10 and got.sizes == {(320, 240)}
            await wait_until(lambda: sorted(p["kind"] for p in cluster.participants("field-7")) == ["whep", "whip"], timeout=5)

            # The session's resource is on the room's node, reached through either process.
            async with http.delete(f"{second}{location}", headers={"Authorization": f"Bearer {cam}"}) as r:
                assert r.status == 200
            await wait_until(lambda: "whip" not in [p["kind"] for p in cluster.participants("field-7")], timeout=10)
            async with http.delete(f"{first}/whip/nowhere/PA_x", headers={"Authorization": f"Bearer {cam}"}) as r:
                assert r.status == 403  # a token for another room learns nothing about this one
            other = cluster.issuer.issue(room="nowhere", role="officer")
            async with http.delete(f"{first}/whip/nowhere/PA_x", headers={"Authorization": f"Bearer {other}"}) as r:
                assert r.status == 404 and (await r.json())["error"]["code"] == "session_not_found"
            # Refused requests placed nothing.
            async with http.post(f"{first}/whip/unplaced", data="v=0", headers={"Content-Type": "application/sdp"}) as r:
                assert r.status == 401
            assert "unplaced" not in cluster.rooms() and "nowhere" not in cluster.rooms()
        finally:
            await publisher.close()
            await player.close()


async def test_the_contact_centre_spans_signalling_processes(cluster: LocalCluster) -> None:
    """A customer queues through one process, an agent answers through the other."""
    first, second = cluster.signal_urls
    customer = cluster.issuer.issue(room="cust-zhao", role="customer", subject="zhao")
    agent = cluster.issuer.issue(room="desk-ag1", role="agent", subject="ag1")
    supervisor = cluster.issuer.issue(room="*", role="supervisor", subject="sup")

    def rest(url: str, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        import json
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, queued = rest(first, "POST", "/v1/calls", customer, {"business": "transfer"})
    assert status == 201
    assert rest(second, "PUT", "/v1/agents/ag1", supervisor, {"skills": {"payments": 2}, "languages": ["zh"]})[0] == 200
    assert rest(second, "POST", "/v1/agents/me/state", agent, {"state": "available"})[0] == 200
    # The agent's accept reaches both processes at the same moment: exactly one wins.
    path = f"/v1/calls/{queued['call_id']}/accept"
    results = await asyncio.gather(*(asyncio.to_thread(rest, url, "POST", path, agent) for url in (first, second, first, second)))
    wins = [body for status, body in results if status == 200]
    assert len(wins) == 1 and wins[0]["agent_id"] == "ag1", results
    assert all(body["error"]["code"] == "call_not_offered" for status, body in results if status != 200)
    accepted = wins[0]
    client = RoomClient(cluster.signal_urls, accepted["token"])
    joined = await client.connect()
    assert joined["room"]["name"] == "cust-zhao"
    await client.close()
    status, queues = rest(second, "GET", "/v1/queues", supervisor)
    assert queues["queues"]["payments"]["answered"] == 1
