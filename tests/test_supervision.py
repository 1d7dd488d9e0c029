"""A supervisor monitors unseen, whispers to the agent only, then barges in."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from teller.client import RoomClient, TestPatternTrack, ToneTrack
from teller.client.room import ClientError

from .conftest import Server, wait_until
from .media import receive

pytestmark = pytest.mark.media


def recorder(client: RoomClient, kind: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    client.on(kind, seen.append)
    return seen


async def test_monitor_whisper_barge(server: Server, room_name: str, clients: list[RoomClient]) -> None:
    customer = RoomClient(server.url, server.token(room_name, "customer", "customer"))
    agent = RoomClient(server.url, server.token(room_name, "agent", "agent"))
    sup = RoomClient(server.url, server.token(room_name, "supervisor", "supervisor"))
    clients += [customer, agent, sup]
    await customer.connect()
    await agent.connect()
    await customer.publish([ToneTrack(), TestPatternTrack(160, 120, 15)], data_channel=False)
    await agent.publish([ToneTrack(), TestPatternTrack(160, 120, 15)], data_channel=False)
    customer_joins = recorder(customer, "participant_joined")
    customer_tracks = recorder(customer, "track_published")
    agent_tracks = recorder(agent, "track_published")

    # Silent monitoring: the agent is told, the customer is not.
    joined = await sup.connect(hidden=True)
    assert {p["participant_id"] for p in joined["participants"]} == {customer.participant_id, agent.participant_id}
    await wait_until(lambda: sup.participant_id in agent.participants, timeout=5)
    assert agent.participants[sup.participant_id]["hidden"] is True
    for target in (customer, agent):
        watched = await sup.subscribe(target.participant_id)
        assert (await receive(watched.track("video"), 0.5)).frames > 0
    room = server.node.rooms[room_name]
    assert room.participants[sup.participant_id].hidden

    # Whisper: the supervisor's voice reaches the agent only.
    await sup.publish([ToneTrack()], data_channel=False)
    await wait_until(lambda: any(m["participant_id"] == sup.participant_id for m in agent_tracks), timeout=5)
    whisper = await agent.subscribe(sup.participant_id)
    assert (await receive(whisper.track("audio"), 0.5)).frames > 0
    await asyncio.sleep(0.3)
    assert customer_joins == [] and customer_tracks == []
    assert sup.participant_id not in customer.participants
    for attempt in (
        customer.subscribe(sup.participant_id),
        customer.subscribe(track_ids=[t["track_id"] for t in agent.participants[sup.participant_id]["tracks"]], kinds=["audio"]),
    ):
        with pytest.raises(ClientError) as refused:
            await attempt
        assert refused.value.code in ("participant_not_found", "track_not_found")
    # "Whoever published last" never picks the hidden supervisor for a customer.
    latest = await customer.subscribe()
    assert {t["participant_id"] for t in latest.info} == {agent.participant_id}

    # Barge-in: now everyone sees and hears the supervisor.
    await sup.reveal()
    await wait_until(lambda: sup.participant_id in customer.participants, timeout=5)
    await wait_until(lambda: any(m["participant_id"] == sup.participant_id for m in customer_tracks), timeout=5)
    heard = await customer.subscribe(sup.participant_id, kinds=["audio"])
    assert (await receive(heard.track("audio"), 0.5)).frames > 0
    assert not room.participants[sup.participant_id].hidden
    assert server.issuer.verify_resume(sup._resume_token).hidden is False


async def test_only_a_supervisor_may_join_unseen(server: Server, room_name: str, clients: list[RoomClient]) -> None:
    agent = RoomClient(server.url, server.token(room_name, "agent", "agent"), reconnect=False)
    clients.append(agent)
    with pytest.raises(ClientError) as refused:
        await agent.connect(hidden=True)
    assert refused.value.code == "grant_missing"
    sup = RoomClient(server.url, server.token(room_name, "supervisor", "sup"))
    clients.append(sup)
    await sup.connect(hidden=True)
    assert server.issuer.verify_resume(sup._resume_token).hidden is True
