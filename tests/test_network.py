"""ICE for real networks: port range, bind and announced addresses, STUN/TURN servers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from teller.client import RoomClient, TestPatternTrack, ToneTrack

from .conftest import start_in_process
from .media import receive
from .turn import coturn, force_configuration, free_udp_range, requires_coturn

pytestmark = pytest.mark.media


def candidates(sdp: str) -> list[tuple[str, int]]:
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            out.append((parts[4], int(parts[5])))
    return out


async def test_port_range_and_bind_address(tmp_path: Path, room_name: str) -> None:
    low = free_udp_range(20)
    local = socket.gethostbyname(socket.gethostname())
    srv, runner = await start_in_process(
        tmp_path, sfu={"udp_port_min": low, "udp_port_max": low + 19, "bind_addresses": [local]}
    )
    answers: list[str] = []
    host = RoomClient(srv.url, srv.token(room_name, "agent"))
    guest = RoomClient(srv.url, srv.token(room_name, "customer"))
    try:
        await host.connect()
        await guest.connect()
        for client in (host, guest):
            original = client.request

            async def spy(message, timeout=15.0, _original=original):  # type: ignore[no-untyped-def]
                reply = await _original(message, timeout)
                if reply.get("type") == "answer":
                    answers.append(reply["sdp"])
                return reply

            client.request = spy  # type: ignore[method-assign]
        await host.publish([ToneTrack(), TestPatternTrack(320, 240, 30)])
        subscription = await guest.subscribe(host.participant_id)
        video = await receive(subscription.track("video"), 1.0)
        assert video.frames > 10
        found = [c for sdp in answers for c in candidates(sdp)]
        assert found, "answers carry candidates"
        assert all(address == local and low <= port <= low + 19 for address, port in found), found
    finally:
        await host.leave()
        await guest.leave()
        await runner.cleanup()


async def test_announced_address_and_ice_servers_handed_out(tmp_path: Path, room_name: str) -> None:
    servers = [{"urls": ["stun:stun.example.org:3478"]}, {"urls": ["turn:turn.example.org:3478?transport=udp"], "username": "u", "credential": "p"}]
    srv, runner = await start_in_process(tmp_path, sfu={"announced_address": "203.0.113.7"}, ice={"servers": servers})
    client = RoomClient(srv.url, srv.token(room_name, "agent"), ice_servers=[])
    try:
        joined = await client.connect()
        assert joined["ice_servers"] == servers
        from aiortc import RTCPeerConnection

        pc = RTCPeerConnection()
        pc.addTransceiver(TestPatternTrack(160, 120, 5), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        reply = await client.request({"type": "publish", "sdp": pc.localDescription.sdp})
        await pc.close()
        assert {address for address, _ in candidates(reply["sdp"])} == {"203.0.113.7"}
        assert "c=IN IP4 203.0.113.7" in reply["sdp"]
    finally:
        await client.leave()
        await runner.cleanup()


@requires_coturn
async def test_media_through_a_turn_relay(tmp_path: Path, room_name: str) -> None:
    """Clients that may only use a TURN relay (coturn) still get media through the SFU."""
    async with coturn(tmp_path) as turn:
        srv, runner = await start_in_process(tmp_path, ice={"servers": turn.ice_servers()}, sfu={"bind_addresses": ["127.0.0.1"]})
        host = RoomClient(srv.url, srv.token(room_name, "officer"))
        guest = RoomClient(srv.url, srv.token(room_name, "reviewer"))
        try:
            await host.connect()
            await guest.connect()
            force_configuration((host, guest), turn.relay_only_configuration())
            publication = await host.publish([ToneTrack(), TestPatternTrack(320, 240, 30)])
            subscription = await guest.subscribe(host.participant_id)
            video = await receive(subscription.track("video"), 1.0, first_timeout=10)
            assert video.frames > 10
            for pc in (publication.pc, subscription.pc):
                local = pc.getTransceivers()[0].sender.transport.transport.iceGatherer.getLocalCandidates()
                assert local and all(c.type == "relay" for c in local)
        finally:
            await host.leave()
            await guest.leave()
            await runner.cleanup()
