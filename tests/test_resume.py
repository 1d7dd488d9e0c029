"""Resuming a session: a dropped WebSocket costs neither the participant nor its media."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from teller.client import RoomClient, TestPatternTrack, ToneTrack

from .conftest import Server, start_in_process, wait_until
from .media import receive

pytestmark = pytest.mark.media


async def _raw_join(server: Server, message: dict) -> tuple[dict, int | None]:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.url + "/v1/rtc") as ws:
            await ws.send_str(json.dumps({"type": "join", "protocol": 1, **message}))
            reply = json.loads((await ws.receive(timeout=5)).data)
            if reply["type"] == "error" and reply["status"] in (401, 403):
                await ws.receive(timeout=5)  # the server closes after a refused token
            return reply, ws.close_code


async def test_dropped_socket_resumes_with_the_same_peer_connections(server: Server, room_name: str) -> None:
    host = RoomClient(server.url, server.token(room_name, "agent", "host"))
    guest = RoomClient(server.url, server.token(room_name, "customer", "guest"))
    await host.connect()
    await guest.connect()
    try:
        left: list[dict] = []
        guest.on("participant_left", left.append)
        await host.publish([ToneTrack(), TestPatternTrack(160, 120, 15)])
        subscription = await guest.subscribe(host.participant_id)
        video = subscription.track("video")
        await asyncio.wait_for(video.recv(), 10)
        pc, pid = host.publications and next(iter(host.publications.values())).pc, host.participant_id
        resumed = asyncio.get_running_loop().create_future()
        host.on("resumed", lambda m: resumed.done() or resumed.set_result(m))

        assert host._ws is not None
        await host._ws.close()  # the network drops: no leave was sent
        await asyncio.wait_for(resumed, 10)

        assert host.participant_id == pid and host.reconnects == 1 and host.migrations == 0
        assert next(iter(host.publications.values())).pc is pc
        assert left == [] and pid in guest.participants
        assert list(server.node.rooms[room_name].participants) == [pid, guest.participant_id]
        got = await receive(video, 1.0)
        assert got.frames > 5  # media never stopped
        # Signalling works again on the resumed session.
        echo = asyncio.get_running_loop().create_future()
        guest.on("data", lambda m: echo.done() or echo.set_result(m["payload"]))
        await host.send_data({"after": "resume"})
        assert await asyncio.wait_for(echo, 5) == {"after": "resume"}
    finally:
        await host.close()
        await guest.close()


async def test_a_participant_that_does_not_come_back_is_removed(tmp_path: Path, room_name: str) -> None:
    server, runner = await start_in_process(tmp_path, signaling={"resume_window_s": 0.5})
    try:
        stays = RoomClient(server.url, server.token(room_name, "agent", "stays"))
        goes = RoomClient(server.url, server.token(room_name, "customer", "goes"), reconnect=False)
        await stays.connect()
        await goes.connect()
        left: list[dict] = []
        stays.on("participant_left", left.append)
        assert goes._ws is not None
        await goes._ws.close()
        room = server.node.rooms[room_name]
        await wait_until(lambda: goes.participant_id in room.participants and not room.participants[goes.participant_id].info()["connected"], timeout=5)
        await wait_until(lambda: left, timeout=5)
        assert [(m["participant_id"], m["reason"]) for m in left] == [(goes.participant_id, "disconnected")]
        assert list(room.participants) == [stays.participant_id]
        # Its resume token still names it: coming back late makes it a new member with its old id.
        reply, _ = await _raw_join(server, {"resume": goes._resume_token})
        assert reply["type"] == "joined" and reply["resumed"] is False
        assert reply["participant"]["participant_id"] == goes.participant_id
        await stays.close()
        await goes.close()
    finally:
        await runner.cleanup()


async def test_bad_resume_tokens_are_refused_and_harm_nobody(server: Server, room_name: str) -> None:
    member = RoomClient(server.url, server.token(room_name, "agent", "member"))
    await member.connect()
    try:
        resume = member._resume_token
        assert resume
        for message, code in [
            ({"resume": "not-a-token"}, "token_invalid"),
            ({"resume": server.token(room_name, "customer", "x")}, "token_invalid"),  # an access token is no resume token
            ({"token": resume}, "token_invalid"),  # and a resume token is no access token
            ({"resume": resume[:-4] + "AAAA"}, "token_invalid"),  # tampered
            ({"resume": 12}, "invalid_message"),
        ]:
            reply, close_code = await _raw_join(server, message)
            assert reply["type"] == "error" and reply["code"] == code, (message, reply)
            if code == "token_invalid":
                assert close_code == 4401
        # The resume token opens its own room only.
        reply, _ = await _raw_join(server, {"resume": resume, "room": "another-room"})
        assert reply["type"] == "joined" and reply["room"]["name"] == room_name
        # That join took the member's place (a resume), so the member is told it resumed
        # elsewhere and, being an SDK client, takes it back; nobody else was touched.
        await wait_until(lambda: member.reconnects >= 1, timeout=10)
        assert not member.closed.is_set()
        assert list(server.node.rooms[room_name].participants) == [member.participant_id]
    finally:
        await member.close()


async def test_the_embedded_server_keeps_a_session_timeline(server: Server, room_name: str) -> None:
    from teller.signaling.keys import STORE

    host = RoomClient(server.url, server.token(room_name, "agent", "host"))
    await host.connect()
    await host.publish([ToneTrack()], data_channel=False)
    sid = server.node.rooms[room_name].sid
    await host.leave()
    store = server.app[STORE]

    async def types() -> list[str]:
        return [e["type"] for e in await store.read_events(sid)]

    deadline = time.monotonic() + 5
    while "participant_left" not in await types() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await types() == ["room_opened", "participant_joined", "track_published", "track_unpublished", "participant_left"]
    assert (await store.read_events(sid))[1]["participant_id"] == host.participant_id
