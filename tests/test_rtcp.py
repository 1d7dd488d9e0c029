"""NACK retransmission on both legs, and sender reports that keep lip sync."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc.rtp import RtcpSrPacket, RtpPacket, is_rtcp

from teller.client import RoomClient, TestPatternTrack, ToneTrack

from .conftest import Server
from .media import delivery_ratio, receive

pytestmark = pytest.mark.media

NTP_SECOND = 1 << 32


def video_payload_type(pc: Any) -> int:
    for t in pc.getTransceivers():
        if t.kind == "video":
            return t._codecs[0].payloadType
    raise AssertionError("no video m-line")


async def test_nack_recovers_losses_on_both_legs(server: Server, room_name: str) -> None:
    host = RoomClient(server.url, server.token(room_name, "agent", "host"))
    guest = RoomClient(server.url, server.token(room_name, "customer", "guest"))
    await host.connect()
    await guest.connect()
    try:
        video = TestPatternTrack(640, 480, 30)
        publication = await host.publish([ToneTrack(), video])
        pt = video_payload_type(publication.pc)
        uplink = publication.pc.getTransceivers()[1].sender.transport
        send_original = uplink._send_rtp
        dropped_up: set[int] = set()
        counter = {"n": 0}

        async def lossy_send(data: bytes) -> None:
            # Drop one in 8 first transmissions of video; retransmissions (RTX) pass.
            if not is_rtcp(data) and data[1] & 0x7F == pt:
                seq = (data[2] << 8) | data[3]
                counter["n"] += 1
                if counter["n"] % 8 == 0 and seq not in dropped_up:
                    dropped_up.add(seq)
                    return
            await send_original(data)

        uplink._send_rtp = lossy_send

        subscription = await guest.subscribe(host.participant_id)
        downlink = subscription.pc.getTransceivers()[1].receiver.transport
        receive_original = downlink._handle_rtp_data
        dropped_down: set[int] = set()
        down_counter = {"n": 0}

        async def lossy_receive(data: bytes, arrival_time_ms: int) -> None:
            packet = RtpPacket.parse(data)
            if packet.payload_type == video_payload_type(subscription.pc):
                down_counter["n"] += 1
                if down_counter["n"] % 8 == 0 and packet.sequence_number not in dropped_down:
                    dropped_down.add(packet.sequence_number)
                    return
            await receive_original(data, arrival_time_ms)

        downlink._handle_rtp_data = lossy_receive

        result = await receive(subscription.track("video"), 4.0)
        assert len(dropped_up) > 10 and len(dropped_down) > 10, (len(dropped_up), len(dropped_down))
        room = server.node.rooms[room_name]
        pub = next(p for p in room.publications.values() if p.kind == "video")
        assert pub.nacks_sent > 0
        assert pub.retransmissions_received >= len(dropped_up) * 0.8
        downtrack = pub.downtracks[0]
        assert downtrack.retransmits >= len(dropped_down) * 0.8
        assert delivery_ratio(result, 3000) >= 0.95
    finally:
        await host.leave()
        await guest.leave()


async def test_sender_reports_carry_the_publishers_clock(server: Server, room_name: str) -> None:
    """Each forwarded SR maps RTP time to NTP exactly as the publisher's SRs do."""
    host = RoomClient(server.url, server.token(room_name, "agent", "host"))
    guest = RoomClient(server.url, server.token(room_name, "customer", "guest"))
    await host.connect()
    await guest.connect()
    try:
        publication = await host.publish([ToneTrack(), TestPatternTrack(320, 240, 30)])
        sent: dict[str, list[tuple[int, int]]] = {"audio": [], "video": []}
        for transceiver in publication.pc.getTransceivers():
            sender = transceiver.sender
            original = sender._send_rtcp

            async def record(packets: list[Any], _original: Any = original, _kind: str = transceiver.kind) -> None:
                for p in packets:
                    if isinstance(p, RtcpSrPacket):
                        sent[_kind].append((p.sender_info.ntp_timestamp, p.sender_info.rtp_timestamp))
                await _original(packets)

            sender._send_rtcp = record

        subscription = await guest.subscribe(host.participant_id)
        received: dict[str, list[tuple[int, int, int]]] = {"audio": [], "video": []}
        for transceiver in subscription.pc.getTransceivers():
            receiver = transceiver.receiver
            original = receiver._handle_rtcp_packet

            async def capture(packet: Any, _original: Any = original, _kind: str = transceiver.kind) -> None:
                if isinstance(packet, RtcpSrPacket):
                    received[_kind].append((packet.ssrc, packet.sender_info.ntp_timestamp, packet.sender_info.rtp_timestamp))
                await _original(packet)

            receiver._handle_rtcp_packet = capture

        drain = [asyncio.create_task(receive(t, 6.0)) for t in subscription.tracks.values()]
        await asyncio.gather(*drain)
        clock = {"audio": 48000, "video": 90000}
        for kind in ("audio", "video"):
            assert len(received[kind]) >= 2, f"no sender reports for {kind}"
            assert sent[kind], f"the publisher sent no {kind} SR"
            ssrcs = {ssrc for ssrc, _, _ in received[kind]}
            assert len(ssrcs) == 1
            ntp_p, rtp_p = sent[kind][0]
            for _, ntp_s, rtp_s in received[kind]:
                elapsed = (ntp_s - ntp_p) / NTP_SECOND
                expected = (rtp_p + round(elapsed * clock[kind])) & 0xFFFFFFFF
                error = min((rtp_s - expected) & 0xFFFFFFFF, (expected - rtp_s) & 0xFFFFFFFF)
                assert error / clock[kind] < 0.030, f"{kind} SR is {1000 * error / clock[kind]:.1f} ms off"
    finally:
        await host.leave()
        await guest.leave()
