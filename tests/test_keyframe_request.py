"""Keyframe requests that cannot go out yet are not lost and do not wait an interval."""

from __future__ import annotations

from types import SimpleNamespace

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from teller.sfu import rtcp
from teller.sfu.rtp import ExtensionMap
from teller.sfu.track import Publication


class Leg:
    def __init__(self) -> None:
        self.active = False
        self.sent: list[bytes] = []

    def send_rtcp(self, packet: bytes) -> None:
        assert self.active, "RTCP sent before SRTP is up is lost"
        self.sent.append(packet)


def publication(leg: Leg, ssrc: int | None = 1234) -> Publication:
    media = SimpleNamespace(
        kind="video",
        mid="0",
        codec=RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96),
        rtx_payload_type=None,
        extensions=ExtensionMap({}, "0"),
        remote_ssrcs=[ssrc] if ssrc else [],
        remote_rtx_ssrcs={},
        leg=leg,
        local_ssrc=1,
    )
    return Publication(
        participant_id="PA_x", media=media, source="camera", name="", history_packets=64,  # type: ignore[arg-type]
        keyframe_interval_s=60.0, max_bitrate=1_000_000,
    )


def plis(leg: Leg) -> int:
    return sum(1 for data in leg.sent for p in rtcp.parse(data) if type(p).__name__ == "RtcpPsfbPacket")


async def test_a_request_made_before_dtls_goes_out_when_the_leg_comes_up() -> None:
    leg = Leg()
    track = publication(leg)
    track.request_keyframe()  # a subscriber arrives while the publisher is still connecting
    assert plis(leg) == 0 and track.keyframe_requests == 0
    leg.active = True
    track.leg_ready()
    assert plis(leg) == 1 and track.keyframe_requests == 1
    track.leg_ready()  # nothing pending any more
    track.request_keyframe()  # and the interval (60 s here) holds again
    assert plis(leg) == 1


async def test_a_request_waits_for_an_ssrc_learned_from_the_first_packet() -> None:
    leg = Leg()
    leg.active = True
    track = publication(leg, ssrc=None)
    track.request_keyframe()
    assert plis(leg) == 0
    track.learn_ssrc(5678)
    assert plis(leg) == 1
    assert rtcp.parse(leg.sent[0])[0].media_ssrc == 5678


async def test_no_request_no_pli_when_the_leg_comes_up() -> None:
    leg = Leg()
    track = publication(leg)
    leg.active = True
    track.leg_ready()
    assert plis(leg) == 0


class Downtrack:
    """What a publication's fan-out calls; counts restarts."""

    def __init__(self) -> None:
        self.restarts = 0
        self.packets = 0
        self.remb_bitrate = 0
        self.remb_at = 0.0

    def write(self, pkt: bytes, seq: int, ts: int, keyframe: bool) -> None:
        self.packets += 1

    def restart_on_keyframe(self) -> None:
        self.restarts += 1


def pli_only(leg: Leg) -> int:
    """PLIs alone: receiver reports carry REMB, also payload-specific feedback."""
    return sum(1 for data in leg.sent for p in rtcp.parse(data) if type(p).__name__ == "RtcpPsfbPacket" and p.fmt == 1)


def _rtp(seq: int, ts: int) -> bytes:
    return bytes([0x80, 96, seq >> 8, seq & 0xFF]) + ts.to_bytes(4, "big") + (1234).to_bytes(4, "big") + b"\x00" * 20


async def test_a_loss_too_long_to_repair_restarts_subscribers_on_a_keyframe() -> None:
    """A dropped link whose peer connection survived: the publisher sent hundreds of
    packets into the void, and the frames after them cannot be decoded."""
    leg = Leg()
    leg.active = True
    track = publication(leg)
    track._keyframe_interval = 0.0  # every request goes out: this test counts them
    downtrack = Downtrack()
    track.attach(downtrack)  # type: ignore[arg-type]
    seq = 100
    for _ in range(20):
        track.on_rtp(_rtp(seq, 3000 * seq), 0.0)
        seq += 1
    track.on_rtp(_rtp(seq + 5, 3000 * (seq + 5)), 0.0)  # a few lost: NACKs repair that
    assert track.restarts == 0 and downtrack.restarts == 0 and pli_only(leg) == 0
    seq += 6
    track.on_rtp(_rtp(seq + 300, 3000 * (seq + 300)), 0.0)  # 300 lost: the link was down
    assert track.restarts == 1 and downtrack.restarts == 1 and pli_only(leg) == 1
    assert downtrack.packets == 22  # the packet that showed the hole went on to the downtrack
    track.on_rtp(_rtp(seq + 301, 3000 * (seq + 301)), 0.0)  # flowing again: nothing more
    assert track.restarts == 1 and downtrack.restarts == 1 and pli_only(leg) == 1
