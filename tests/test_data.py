"""Data messages relayed within a room, over data channels and over signalling."""

from __future__ import annotations

import asyncio
import json

import pytest

from teller.client import RoomClient

from .conftest import Server, wait_until

pytestmark = pytest.mark.media


async def test_data_channel_and_websocket_relay(server: Server, room_name: str) -> None:
    a = RoomClient(server.url, server.token(room_name, "agent", "agent"))
    b = RoomClient(server.url, server.token(room_name, "customer", "customer"))
    c = RoomClient(server.url, server.token(room_name, "supervisor", "supervisor"))
    inbox: dict[str, list[dict]] = {"a": [], "b": [], "c": []}
    for name, client in (("a", a), ("b", b), ("c", c)):
        await client.connect()
        client.on("data", inbox[name].append)
    try:
        # a and b open a data channel (a publish with no media); c stays on signalling only.
        pub_a = await a.publish([], data_channel=True)
        pub_b = await b.publish([], data_channel=True)
        await pub_a.wait_connected()
        await pub_b.wait_connected()
        await wait_until(lambda: pub_a.data_channel.readyState == "open" and pub_b.data_channel.readyState == "open")

        await a.send_data({"slide": 3}, topic="screen")
        await wait_until(lambda: inbox["b"] and inbox["c"])
        assert inbox["b"][0]["via"] == "datachannel"
        assert "via" not in inbox["c"][0]
        for message in (inbox["b"][0], inbox["c"][0]):
            assert message["payload"] == {"slide": 3}
            assert message["topic"] == "screen"
            assert message["from_participant_id"] == a.participant_id
        assert inbox["a"] == []

        # Addressed by participant id: only b gets it.
        await c.send_data("whisper", to=[b.participant_id])
        await wait_until(lambda: len(inbox["b"]) == 2)
        await asyncio.sleep(0.2)
        assert inbox["b"][1]["payload"] == "whisper" and len(inbox["c"]) == 1 and inbox["a"] == []

        # A bad message on the data channel is refused there and goes nowhere.
        errors: list[dict] = []
        a.on("error", errors.append)
        pub_a.data_channel.send("{broken")
        pub_a.data_channel.send(json.dumps({"no": "payload"}))
        await wait_until(lambda: len(errors) == 2)
        assert [e["code"] for e in errors] == ["invalid_json", "invalid_message"]
        await asyncio.sleep(0.2)
        assert len(inbox["b"]) == 2 and len(inbox["c"]) == 1
    finally:
        for client in (a, b, c):
            await client.leave()


async def test_data_needs_the_data_grant(server: Server, room_name: str) -> None:
    auditor = RoomClient(server.url, server.token(room_name, "compliance", "auditor"))
    agent = RoomClient(server.url, server.token(room_name, "agent", "agent"))
    await auditor.connect()
    await agent.connect()
    got: list[dict] = []
    auditor.on("data", got.append)
    try:
        reply = await agent.request({"type": "data", "payload": "hi"})
        assert reply == {"type": "ack", "request_id": reply["request_id"], "delivered": 0}
        from teller.client import ClientError

        with pytest.raises(ClientError) as info:
            await auditor.request({"type": "data", "payload": "hi"})
        assert (info.value.code, info.value.status) == ("grant_missing", 403)
        assert got == []
    finally:
        await auditor.leave()
        await agent.leave()
