"""Bad input gets its documented error, changes nothing, and harms no call beside it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from teller.client import ClientError, RoomClient, TestPatternTrack, ToneTrack

from .conftest import SECRET, Server

pytestmark = pytest.mark.media

CALL_ROOM = "call-beside"
ROOM = "bad-room"


@dataclass
class Call:
    """A two-party call that keeps counting the frames it decodes."""

    agent: RoomClient
    customer: RoomClient
    frames: int = 0
    task: asyncio.Task[None] | None = None

    async def count(self, track: Any) -> None:
        try:
            while True:
                await track.recv()
                self.frames += 1
        except MediaStreamError:
            return

    async def assert_flowing(self) -> None:
        start = self.frames
        deadline = time.monotonic() + 3
        while self.frames < start + 10:
            assert time.monotonic() < deadline, "the call beside stopped delivering media"
            await asyncio.sleep(0.05)


@pytest.fixture
async def call(server: Server) -> AsyncIterator[Call]:
    agent = RoomClient(server.url, server.token(CALL_ROOM, "agent", "agent"))
    customer = RoomClient(server.url, server.token(CALL_ROOM, "customer", "customer"))
    await agent.connect()
    await customer.connect()
    await agent.publish([ToneTrack(), TestPatternTrack(320, 240, 30)])
    subscription = await customer.subscribe(agent.participant_id)
    result = Call(agent, customer)
    result.task = asyncio.create_task(result.count(subscription.track("video")))
    await result.assert_flowing()
    yield result
    result.task.cancel()
    await agent.leave()
    await customer.leave()


def room_state(server: Server) -> Any:
    return {
        name: (sorted(p.identity for p in room.participants.values()), sorted(room.publications))
        for name, room in server.node.rooms.items()
    }


async def ws_exchange(server: Server, messages: list[str], query: str = "") -> tuple[list[dict[str, Any]], int | None]:
    """Send raw text frames; collect what comes back until the server goes quiet or closes."""
    out: list[dict[str, Any]] = []
    closed_with = None
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{server.url.replace('http', 'ws')}/v1/rtc{query}", max_msg_size=0) as ws:
            for text in messages:
                await ws.send_str(text)
            while True:
                try:
                    msg = await ws.receive(timeout=1.0)
                except asyncio.TimeoutError:
                    break
                if msg.type == aiohttp.WSMsgType.TEXT:
                    out.append(json.loads(msg.data))
                else:
                    if msg.type == aiohttp.WSMsgType.CLOSE:
                        closed_with = msg.data
                    break
    return out, closed_with


def expired_token() -> str:
    now = int(time.time())
    claims = {"iss": "teller", "sub": "x", "role": "customer", "room": ROOM, "grants": {"publish": True}, "iat": now - 7200, "exp": now - 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def forged_token() -> str:
    now = int(time.time())
    claims = {"iss": "teller", "sub": "x", "role": "customer", "room": ROOM, "grants": {"publish": True}, "iat": now, "exp": now + 600}
    return jwt.encode(claims, "not-the-server-secret-at-all-123", algorithm="HS256")


JOIN = json.dumps({"type": "join", "protocol": 1})


@pytest.mark.parametrize(
    "case, token_of, status, code, close_code",
    [
        ("missing", lambda s: None, 401, "token_missing", 4401),
        ("expired", lambda s: expired_token(), 401, "token_expired", 4401),
        ("forged", lambda s: forged_token(), 401, "token_invalid", 4401),
        ("garbage", lambda s: "not.a.jwt", 401, "token_invalid", 4401),
        ("other room", lambda s: s.token("another-room", "customer"), 403, "room_forbidden", 4403),
    ],
)
async def test_websocket_tokens(server: Server, call: Call, case: str, token_of: Callable[[Server], str | None], status: int, code: str, close_code: int) -> None:
    before = room_state(server)
    token = token_of(server)
    join = {"type": "join", "protocol": 1, "room": ROOM}
    if token:
        join["token"] = token
    replies, closed_with = await ws_exchange(server, [json.dumps(join)])
    assert replies[0]["type"] == "error"
    assert (replies[0]["status"], replies[0]["code"]) == (status, code)
    assert closed_with == close_code
    assert room_state(server) == before
    await call.assert_flowing()


@pytest.mark.parametrize(
    "text, code, status",
    [
        ("{not json", "invalid_json", 400),
        ("[1, 2, 3]", "invalid_message", 400),
        (json.dumps({"type": "teleport"}), "unknown_type", 400),
        (json.dumps({"type": "publish"}), "invalid_message", 400),
        (json.dumps({"type": "subscribe", "sdp": 42}), "invalid_message", 400),
        (json.dumps({"type": "data", "payload": "x" * 70000}), "message_too_large", 413),
        (json.dumps({"type": "publish", "sdp": "v=0\r\nthis is not sdp"}), "invalid_sdp", 400),
        (json.dumps({"type": "publish", "sdp": "hello"}), "invalid_sdp", 400),
        (json.dumps({"type": "unpublish", "transport_id": "PC_nope"}), "transport_not_found", 400),
        (json.dumps({"type": "subscribe", "sdp": "v=0\r\n", "participant_id": "PA_nobody"}), "invalid_sdp", 400),
        (json.dumps({"type": "join", "protocol": 1}), "already_joined", 400),
    ],
)
async def test_bad_messages_after_join(server: Server, call: Call, text: str, code: str, status: int) -> None:
    token = server.token(ROOM, "customer", "probe")
    before = room_state(server)[CALL_ROOM]
    replies, closed_with = await ws_exchange(
        server, [JOIN, text, json.dumps({"type": "ping", "request_id": "after"})], f"?access_token={token}"
    )
    kinds = [r["type"] for r in replies]
    assert kinds[0] == "joined"
    errors = [r for r in replies if r["type"] == "error"]
    assert len(errors) == 1, replies
    assert (errors[0]["code"], errors[0]["status"]) == (code, status)
    assert {"type": "pong", "request_id": "after"} in replies, "the session must survive a bad message"
    assert closed_with is None
    assert room_state(server)[CALL_ROOM] == before
    await call.assert_flowing()


async def test_oversized_frame_closes_only_that_socket(server: Server, call: Call) -> None:
    token = server.token(ROOM, "customer", "flood")
    limit = server.config.signaling.max_message_bytes
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{server.url.replace('http', 'ws')}/v1/rtc?access_token={token}") as ws:
            await ws.send_str(JOIN)
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "joined"
            await ws.send_str("x" * (4 * limit + 1))
            msg = await ws.receive(timeout=5)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1009)
    await asyncio.sleep(0.2)
    assert "flood" not in [p.name for p in server.node.rooms[ROOM].participants.values()]
    await call.assert_flowing()


async def test_rate_limit(server: Server, call: Call) -> None:
    token = server.token(ROOM, "customer", "chatty")
    burst = server.config.signaling.message_burst
    pings = [json.dumps({"type": "ping"})] * (burst + 20)
    replies, _ = await ws_exchange(server, [JOIN, *pings], f"?access_token={token}")
    codes = [r.get("code") for r in replies if r["type"] == "error"]
    assert "rate_limited" in codes
    assert all(r["status"] == 429 for r in replies if r["type"] == "error")
    await call.assert_flowing()


async def test_unsupported_codec_and_wrong_direction(server: Server, call: Call) -> None:
    client = RoomClient(server.url, server.token(ROOM, "customer", "odd"))
    await client.connect()
    try:
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        vp9_only = "\r\n".join(
            line.replace("VP8/90000", "VP9/90000").replace("H264/90000", "AV1/90000")
            for line in sdp.split("\r\n")
        )
        with pytest.raises(ClientError) as info:
            await client.request({"type": "publish", "sdp": vp9_only})
        assert (info.value.code, info.value.status) == ("codec_unsupported", 422)
        recv = sdp.replace("a=sendonly", "a=recvonly")
        with pytest.raises(ClientError) as info:
            await client.request({"type": "publish", "sdp": recv})
        assert info.value.code == "invalid_direction"
        assert not server.node.rooms[ROOM].participants[client.participant_id].publishers
    finally:
        await client.leave()
    await call.assert_flowing()


async def _http(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, **kwargs) as response:
            body = await response.read()
            try:
                return response.status, json.loads(body)
            except json.JSONDecodeError:
                return response.status, body


async def _offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver(TestPatternTrack(160, 120, 5), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.mark.parametrize(
    "case, headers_of, body_of, status, code",
    [
        ("no token", lambda s: {"Content-Type": "application/sdp"}, "offer", 401, "token_missing"),
        ("expired", lambda s: {"Content-Type": "application/sdp", "Authorization": f"Bearer {expired_token()}"}, "offer", 401, "token_expired"),
        ("forged", lambda s: {"Content-Type": "application/sdp", "Authorization": f"Bearer {forged_token()}"}, "offer", 401, "token_invalid"),
        ("basic auth", lambda s: {"Content-Type": "application/sdp", "Authorization": "Basic dTpw"}, "offer", 401, "token_invalid"),
        ("other room", lambda s: {"Content-Type": "application/sdp", "Authorization": f"Bearer {s.token('elsewhere', 'officer')}"}, "offer", 403, "room_forbidden"),
        ("no publish grant", lambda s: {"Content-Type": "application/sdp", "Authorization": f"Bearer {s.token(ROOM, 'compliance')}"}, "offer", 403, "grant_missing"),
        ("wrong type", lambda s: {"Content-Type": "application/json", "Authorization": f"Bearer {s.token(ROOM, 'officer')}"}, "offer", 415, "unsupported_media_type"),
        ("invalid sdp", lambda s: {"Content-Type": "application/sdp", "Authorization": f"Bearer {s.token(ROOM, 'officer')}"}, "v=0\r\nm=video oops", 400, "invalid_sdp"),
        ("empty", lambda s: {"Content-Type": "application/sdp", "Authorization": f"Bearer {s.token(ROOM, 'officer')}"}, "", 400, "invalid_sdp"),
    ],
)
async def test_whip_errors(server: Server, call: Call, case: str, headers_of: Callable[[Server], dict[str, str]], body_of: str, status: int, code: str) -> None:
    before = room_state(server)
    body = await _offer() if body_of == "offer" else body_of
    got_status, got = await _http("POST", f"{server.url}/whip/{ROOM}", data=body, headers=headers_of(server))
    assert (got_status, got["error"]["code"]) == (status, code), got
    assert room_state(server) == before
    await call.assert_flowing()


async def test_rest_requires_admin(server: Server, call: Call) -> None:
    status, body = await _http("GET", f"{server.url}/v1/rooms")
    assert (status, body["error"]["code"]) == (401, "token_missing")
    headers = {"Authorization": f"Bearer {server.token(CALL_ROOM, 'customer')}"}
    status, body = await _http("DELETE", f"{server.url}/v1/rooms/{CALL_ROOM}", headers=headers)
    assert (status, body["error"]["code"]) == (403, "grant_missing")
    admin_elsewhere = {"Authorization": f"Bearer {server.admin_token('elsewhere')}"}
    status, body = await _http("DELETE", f"{server.url}/v1/rooms/{CALL_ROOM}", headers=admin_elsewhere)
    assert (status, body["error"]["code"]) == (403, "room_forbidden")
    status, body = await _http("POST", f"{server.url}/v1/rooms", data="{", headers={**admin_elsewhere, "Content-Type": "application/json"})
    assert (status, body["error"]["code"]) == (400, "invalid_json")
    assert CALL_ROOM in server.node.rooms
    await call.assert_flowing()


async def test_a_socket_that_never_joins_is_closed(tmp_path) -> None:
    from .conftest import start_in_process

    srv, runner = await start_in_process(tmp_path, signaling={"join_timeout_s": 0.5})
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"{srv.url.replace('http', 'ws')}/v1/rtc") as ws:
                await ws.send_str(json.dumps({"type": "data", "payload": 1}))
                first = json.loads((await ws.receive(timeout=5)).data)
                assert first["code"] == "not_joined"
                second = json.loads((await ws.receive(timeout=5)).data)
                assert (second["code"], second["status"]) == ("join_timeout", 400)
                closing = await ws.receive(timeout=5)
                assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 4008)
    finally:
        await runner.cleanup()
